"""The sandbox wired into the project's resources, and runs of the asset graph over a range
of days: what tests and benchmarks share."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg

from calltexts_assets.assets import all_assets
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import SummariserResource, WhisperResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_sandbox.runtime import SANDBOX_API_KEY, STORAGE_HOST, Sandbox, start_sandbox
from calltexts_sandbox.stt.answers import SHUTDOWN_DATES
from calltexts_tests.support.child_run import ChildLayout, child_env

# Retry waits are real waits times this factor: the policy is exercised, runs stay fast.
TEST_RETRY_SCALE = 0.001
SANDBOX_START = date(2026, 11, 1)
# The tests' model: whisper-1 with word times, the one-pass energy path the tone calls are
# checked on (exact words, roles, costs), not the embedded default (`Sandbox.model_defaults`);
# sent whole, as the tones hold no speech for the voice activity detector (STT_SEND=speech).
TEST_MODELS = {"WHISPER_MODEL": "whisper-1", "STT_SEND": "all"}
# ...with the tests' emulator listing models as OpenAI did before its deprecation notice of
# 2026-08-26 (no `shutdown_date`): the clock of these tests is pinned before whisper-1 was
# due to go, so they neither warn from 2026-12-28 nor fail from 2027-02-26. The lifecycle
# itself is tested on the emulator's real list (test_model_lifecycle.py, test_stt_emulator.py,
# test_default_models_lifecycle.py).
PINNED_SHUTDOWNS = {"whisper-1": None}


def make_sandbox(cache_dir: Path, *, days: int = 2, calls_per_day: int = 6, **kw: Any) -> Sandbox:
    return start_sandbox(
        seed=11,
        start=SANDBOX_START,
        days=days,
        calls_per_day=calls_per_day,
        cache_dir=cache_dir,
        portal_config={"rate_per_sec": 0, **kw.pop("portal_config", {})},
        stt_options={"shutdowns": pinned_shutdowns(), **kw.pop("stt_options", {})},
        **kw,
    )


def pinned_shutdowns() -> dict[str, str | None]:
    """The emulator's model list with whisper-1 as before its shutdown was announced."""
    return SHUTDOWN_DATES | PINNED_SHUTDOWNS


def sandbox_child_env(
    sandbox: Sandbox,
    layout: ChildLayout,
    *,
    concurrency: int = 10,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """`child_env` of a test's `calltexts run` against `sandbox`: its portal and STT server,
    a client rate that never waits on the unlimited test portal, retry waits scaled down."""
    return child_env(
        layout,
        webhook_url=sandbox.webhook_url,
        stt_base_url=f"{sandbox.stt_url}/v1",
        api_key=SANDBOX_API_KEY,
        concurrency=concurrency,
        requests_per_second=50,
        retry_scale=TEST_RETRY_SCALE,
        extra=TEST_MODELS | (extra or {}),
    )


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
            recording_hosts=[STORAGE_HOST],
            allow_private_addresses=True,  # the sandbox is on loopback
        ),
        "whisper": WhisperResource(**openai, model=TEST_MODELS["WHISPER_MODEL"]),
        "summariser": SummariserResource(**openai),
        "storage": StorageResource(backend="local", local_root=str(root / "store")),
        "ledger": LedgerResource(database_url=database_url or f"sqlite:///{root / 'ledger.db'}"),
        "export_settings": ExportSettings(
            **{
                "is_sandbox": True,
                "max_concurrency": 4,
                "log_dir": str(root / "logs"),
                "work_dir": str(root / "tmp"),
                "stt_send": TEST_MODELS["STT_SEND"],
                **settings,
            }
        ),
    }


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
    as registry_csv or summaries of theirs). Only the steps that hold them are loaded, so
    only their resources are needed."""
    selection = None
    if not all(isinstance(asset, dg.AssetsDefinition) for asset in assets):
        selection = [
            key
            for asset in assets
            for key in (asset.keys if isinstance(asset, dg.AssetsDefinition) else [asset.key])
        ]
        assets = [a for a in all_assets if set(a.keys) & set(selection)]
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
