"""The layout's rules, read from the imports of every module (docs/architecture.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT, SANDBOX = "calltexts_assets", "calltexts_sandbox"
# The Dagster layer; the API, the CLI and the test support drive Dagster's instance too.
DAGSTER_LAYER = {"assets", "resources", "orchestration", "definitions"}
USES_DAGSTER = DAGSTER_LAYER | {"api", "ops"}
# What each package below the Dagster layer may import of the product (besides itself),
# bottom to top; docs/architecture.md has the same table.
BELOW = {
    "settings": set(),
    "runlog": set(),
    "limits": {"runlog"},
    "files": {"runlog"},
    "state": {"limits", "runlog"},
    "clients": {"files", "limits", "runlog", "state"},
    "billing": {"limits", "state"},
    "listing": {"billing", "clients", "files", "limits", "runlog", "state"},
    "audio": {"clients", "files", "limits", "runlog", "state"},
    "transcripts": {"audio", "billing", "clients", "files", "limits", "runlog", "state"},
    "summaries": {"clients", "files", "limits", "runlog", "state"},
    "registry": {"billing", "files", "runlog", "state"},
    "quality": {"billing", "files", "registry", "runlog", "state"},
    "report": {"billing", "clients", "files", "quality", "registry", "runlog", "state"},
    "resources": {"clients", "files", "limits", "runlog", "settings", "state"},
}
STAGES = set(BELOW) - {"settings", "resources"}
# Above them, each layer may import what stands below it, never what stands above.
ABOVE = {
    "assets": STAGES | {"resources", "settings"},
    "orchestration": STAGES | {"resources", "settings", "assets"},
    "definitions": STAGES | {"resources", "settings", "assets", "orchestration"},
    "api": STAGES | {"resources", "settings", "assets", "orchestration"},
    "ops": STAGES | {"resources", "settings", "assets", "orchestration", "definitions", "api"},
}
ALLOWED = BELOW | ABOVE
# The product reaches the sandbox through one entry point, from the CLI only.
SANDBOX_ENTRY = "calltexts_sandbox.runtime"
SANDBOX_CALLERS = {"ops/cli.py", "ops/dev.py"}
# Modules that may read the process environment: settings owns it; the sandbox only writes
# it for the processes it serves.
ENV_READERS = {"calltexts_assets/settings.py", "calltexts_sandbox/runtime.py"}
MAX_MODULES = 10


def _modules(package: str) -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT / package)
        top = relative.parts[0].removesuffix(".py")
        yield top, relative, ast.parse(path.read_text(encoding="utf-8"))


def _imports(tree: ast.Module) -> Iterator[str]:
    """Every module named by an import, lazy ones inside functions included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            # `from package import module` names the module too
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _product_packages(tree: ast.Module) -> set[str]:
    return {
        name.split(".")[1]
        for name in _imports(tree)
        if name.startswith(f"{PRODUCT}.") and _is_module(name)
    }


def _module_name(package: str, relative: Path) -> str:
    parts = [package, *relative.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = list(_modules(PRODUCT))
SANDBOX_MODULES = list(_modules(SANDBOX))
KNOWN = {_module_name(PRODUCT, r) for _t, r, _m in MODULES} | {
    _module_name(SANDBOX, r) for _t, r, _m in SANDBOX_MODULES
}


def _is_module(name: str) -> bool:
    return name in KNOWN


def test_only_the_dagster_layer_imports_dagster() -> None:
    found = [
        f"{relative} imports {name}"
        for top, relative, tree in MODULES
        if top not in USES_DAGSTER
        for name in _imports(tree)
        if name.split(".")[0] in {"dagster", "dagster_aws", "dagster_postgres"}
    ]
    assert not found


def test_every_package_imports_only_what_stands_below_it() -> None:
    found = [
        f"{relative} imports {sorted(stray)}"
        for top, relative, tree in MODULES
        if (stray := _product_packages(tree) - ALLOWED.get(top, set()) - {top})
    ]
    assert not found
    assert {top for top, _r, _t in MODULES} - {"__init__"} <= set(ALLOWED), "a package not ruled"


def test_the_product_reaches_the_sandbox_through_its_entry_point_only() -> None:
    found = [
        f"{relative} imports {name}"
        for _top, relative, tree in MODULES
        for name in _imports(tree)
        if name.split(".")[0] == SANDBOX
        and (name != SANDBOX_ENTRY or relative.as_posix() not in SANDBOX_CALLERS)
        and _is_module(name)
    ]
    stray_tests = [
        f"{relative} imports {name}"
        for _top, relative, tree in MODULES + SANDBOX_MODULES
        for name in _imports(tree)
        if name.split(".")[0] == "calltexts_tests"
    ]
    assert not found
    assert not stray_tests


def test_no_import_circles() -> None:
    """Between modules, lazy imports included: a circle means two modules that cannot be
    read (or loaded) one without the other."""
    graph = {
        _module_name(package, relative): {name for name in _imports(tree) if _is_module(name)}
        for package, modules in ((PRODUCT, MODULES), (SANDBOX, SANDBOX_MODULES))
        for _top, relative, tree in modules
    }
    # A package's __init__ re-exporting its modules is not a circle of theirs.
    for name, targets in graph.items():
        targets.discard(name)
        graph[name] = {t for t in targets if not name.startswith(f"{t}.")}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles


def test_every_package_can_be_read_in_one_sitting() -> None:
    crowded = {}
    for package in (PRODUCT, SANDBOX):
        for folder in [ROOT / package, *(ROOT / package).rglob("*/")]:
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            if len(modules) > MAX_MODULES:
                crowded[str(folder.relative_to(ROOT))] = len(modules)
    assert not crowded


def _env_reads(tree: ast.Module) -> Iterator[int]:
    for node in ast.walk(tree):
        reads = isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}
        if reads and isinstance(node.value, ast.Name) and node.value.id == "os":
            yield node.lineno


def test_only_settings_reads_the_environment() -> None:
    found = [
        f"{package}/{relative}:{line}"
        for package, modules in ((PRODUCT, MODULES), (SANDBOX, SANDBOX_MODULES))
        for _top, relative, tree in modules
        if f"{package}/{relative.as_posix()}" not in ENV_READERS
        for line in _env_reads(tree)
    ]
    assert not found


def test_every_module_is_looked_at() -> None:
    names = {relative.as_posix() for _top, relative, _tree in MODULES}
    assert {"settings.py", "definitions.py", "state/ledger.py", "clients/s3.py"} <= names
    assert {"runtime.py", "portal/app.py", "stt/app.py"} <= {
        relative.as_posix() for _top, relative, _tree in SANDBOX_MODULES
    }
