"""Shared fixtures: the sandbox over loopback, resources pointed at it, a Dagster instance."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from calltexts_assets.assets import all_assets
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import SummariserResource, WhisperResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.sandbox.runtime import SANDBOX_API_KEY, Sandbox, start_sandbox

# Retry waits are real waits times this factor: the policy is exercised, the suite stays fast.
TEST_RETRY_SCALE = 0.001
SANDBOX_START = date(2026, 11, 1)


@pytest.fixture(scope="session")
def audio_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered recordings are shared by every sandbox of the session (rendering costs CPU)."""
    return tmp_path_factory.mktemp("sandbox-audio")


def make_sandbox(cache_dir: Path, *, days: int = 2, calls_per_day: int = 6, **kw: Any) -> Sandbox:
    return start_sandbox(
        seed=11,
        start=SANDBOX_START,
        days=days,
        calls_per_day=calls_per_day,
        cache_dir=cache_dir,
        portal_config={"rate_per_sec": 0, **kw.pop("portal_config", {})},
        **kw,
    )


@pytest.fixture
def sandbox(audio_cache_dir: Path) -> Iterator[Sandbox]:
    running = make_sandbox(audio_cache_dir)
    yield running
    running.stop()


def sandbox_resources(
    sandbox: Sandbox, root: Path, *, database_url: str | None = None, **settings: Any
) -> dict[str, Any]:
    openai = {
        "api_key": SANDBOX_API_KEY,
        "base_url": f"{sandbox.stt_url}/v1",
        "retry_wait_scale": TEST_RETRY_SCALE,
    }
    return {
        "bitrix24": Bitrix24Resource(
            webhook_url=sandbox.webhook_url,
            requests_per_second=50,
            retry_wait_scale=TEST_RETRY_SCALE,
        ),
        "whisper": WhisperResource(**openai),
        "summariser": SummariserResource(**openai),
        "storage": StorageResource(backend="local", local_root=str(root / "store")),
        "ledger": LedgerResource(database_url=database_url or f"sqlite:///{root / 'ledger.db'}"),
        "export_settings": ExportSettings(
            is_sandbox=True,
            max_concurrency=4,
            log_dir=str(root / "logs"),
            work_dir=str(root / "tmp"),
            **settings,
        ),
    }


@pytest.fixture
def resources(sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
    return sandbox_resources(sandbox, tmp_path)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def materialize_range(
    assets: list[Any],
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    first: str,
    last: str,
    *,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """One run over [first, last], as a single-run backfill launches it, of `assets` (asset
    definitions, or specs: raw_audio or transcripts alone is a subset of their shared step,
    run out of the whole graph)."""
    selection = None
    if not all(isinstance(asset, dg.AssetsDefinition) for asset in assets):
        selection = [
            key
            for asset in assets
            for key in (asset.keys if isinstance(asset, dg.AssetsDefinition) else [asset.key])
        ]
        assets = all_assets
    return dg.materialize(
        assets,
        selection=selection,
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        run_config=run_config or {},
        raise_on_error=raise_on_error,
    )


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
