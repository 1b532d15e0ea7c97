"""Shared fixtures: the sandbox over loopback, resources pointed at it, a Dagster instance."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.child_run import TEST_PARTITIONS_START
from calltexts_tests.support.sandboxed import make_sandbox, sandbox_resources

# A real S3 endpoint on loopback (moto) for the tests of the S3 paths.
pytest_plugins = ("calltexts_tests.s3_server",)


@pytest.fixture(scope="session")
def audio_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered recordings are shared by every sandbox of the session (rendering costs CPU)."""
    return tmp_path_factory.mktemp("sandbox-audio")


@pytest.fixture
def sandbox(audio_cache_dir: Path) -> Iterator[Sandbox]:
    running = make_sandbox(audio_cache_dir)
    yield running
    running.stop()


@pytest.fixture
def resources(sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
    return sandbox_resources(sandbox, tmp_path)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never pick up a developer's real portal or OpenAI key, and whatever defaults
    to the home (ledger, logs, exports) lands in the test's own folder."""
    for name in list(os.environ):
        if name.startswith(("BITRIX24_", "OPENAI_", "CHATGPT_", "CALLTEXTS_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLTEXTS_HOME", str(tmp_path / "calltexts_home"))
    monkeypatch.setenv("CALLTEXTS_PARTITIONS_START", TEST_PARTITIONS_START)


REPO_VAR = Path(__file__).resolve().parents[1] / "var"


def _listing(root: Path) -> dict[str, int]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


# What a `make dev` running in the same checkout writes while the suite runs (the UI's and
# the daemon's instance). The suite cannot write there: its DAGSTER_HOME is its own.
DEV_INSTANCE = "dagster_home"


@pytest.fixture(autouse=True, scope="session")
def _tests_write_only_to_temporary_folders(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """The demo's var/ (ledger, exports, run logs) is the same after the suite as before.

    `make test` inherits the Makefile's DAGSTER_HOME and CALLTEXTS_HOME (both under var/):
    the session points them at its own folders, so whatever the tests could have written
    into var/ is looked at, and nothing that another process in this checkout writes."""
    saved = {name: os.environ.get(name) for name in ("DAGSTER_HOME", "CALLTEXTS_HOME")}
    os.environ["DAGSTER_HOME"] = str(tmp_path_factory.mktemp("dagster_home"))
    os.environ["CALLTEXTS_HOME"] = str(tmp_path_factory.mktemp("calltexts_home"))
    before = _listing(REPO_VAR)
    yield
    after = _listing(REPO_VAR)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    changed = sorted(
        k
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k) and Path(k).parts[0] != DEV_INSTANCE
    )
    assert not changed, f"the tests wrote into {REPO_VAR}: {changed[:10]}"


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


def _is_loopback(host: object) -> bool:
    if host is None:
        return True
    name = host.decode() if isinstance(host, bytes) else str(host)
    return name in _LOOPBACK_NAMES or name.startswith("127.")


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """No test may reach a non-loopback address: refuse the lookup itself."""
    import socket

    real_getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            raise OSError(f"test tried to reach non-loopback host {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = guarded  # type: ignore[assignment]
    yield
    socket.getaddrinfo = real_getaddrinfo  # type: ignore[assignment]
