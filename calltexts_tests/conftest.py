"""Shared fixtures: the sandbox over loopback, resources pointed at it, a Dagster instance."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from calltexts_assets.sandbox.runtime import Sandbox
from calltexts_assets.testing.sandboxed import make_sandbox, sandbox_resources

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
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's real portal or OpenAI key."""
    for name in list(os.environ):
        if name.startswith(("BITRIX24_", "OPENAI_", "CHATGPT_", "CALLTEXTS_")):
            monkeypatch.delenv(name, raising=False)


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
