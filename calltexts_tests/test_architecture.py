"""The layout's rules, read from the imports of every module (docs/architecture.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "calltexts_assets"
# The Dagster layer; the API and the test support drive Dagster's instance and runs too.
DAGSTER_LAYER = {"assets", "resources", "orchestration", "definitions"}
USES_DAGSTER = DAGSTER_LAYER | {"api", "testing"}
# What each stage package may import of the project (besides itself).
ALLOWED = {
    "core": {"core"},
    "clients": {"core", "clients"},
    "listing": {"core", "listing", "reporting"},
    "audio": {"core", "clients", "audio"},
    "transcripts": {"core", "clients", "audio", "reporting", "transcripts"},
    "summaries": {"core", "clients", "summaries"},
    "reporting": {"core", "reporting"},
    "settings": set(),
}
# Modules that may read the process environment: settings owns it; the sandbox and the
# child-run helper only write it for the processes they start.
ENV_READERS = {"settings.py", "sandbox/runtime.py", "testing/child_run.py"}


def _modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        top = relative.parts[0].removesuffix(".py")
        yield top, relative, ast.parse(path.read_text(encoding="utf-8"))


def _imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def _project_packages(tree: ast.Module) -> set[str]:
    return {
        name.split(".")[1]
        for name in _imports(tree)
        if name.startswith("calltexts_assets.") and len(name.split(".")) > 1
    }


MODULES = list(_modules())


def test_only_the_dagster_layer_imports_dagster() -> None:
    found = [
        f"{relative} imports {name}"
        for top, relative, tree in MODULES
        if top not in USES_DAGSTER
        for name in _imports(tree)
        if name.split(".")[0] in {"dagster", "dagster_aws", "dagster_postgres"}
    ]
    assert not found


def test_resources_are_used_by_the_dagster_layer_only() -> None:
    found = [
        f"{relative} imports a Dagster resource"
        for top, relative, tree in MODULES
        if "resources" in _project_packages(tree) and top not in DAGSTER_LAYER | {"testing"}
    ]
    assert not found


def test_stage_packages_import_only_what_is_below_them() -> None:
    found = [
        f"{relative} imports {sorted(stray)}"
        for top, relative, tree in MODULES
        if top in ALLOWED and (stray := _project_packages(tree) - ALLOWED[top] - {top})
    ]
    assert not found


def _env_reads(tree: ast.Module) -> Iterator[int]:
    for node in ast.walk(tree):
        reads = isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}
        if reads and isinstance(node.value, ast.Name) and node.value.id == "os":
            yield node.lineno


def test_only_settings_reads_the_environment() -> None:
    found = [
        f"{relative}:{line}"
        for _top, relative, tree in MODULES
        if relative.as_posix() not in ENV_READERS
        for line in _env_reads(tree)
    ]
    assert not found


def test_every_module_is_looked_at() -> None:
    names = {relative.as_posix() for _top, relative, _tree in MODULES}
    assert {"settings.py", "definitions.py", "core/ledger.py", "clients/s3.py"} <= names
