"""`calltexts api serve`: the API wired to the ledger database and the Dagster deployment."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import boto3
import uvicorn
from dagster import DagsterInstance
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from calltexts_assets.api.app import create_app
from calltexts_assets.api.estimate import configured_model_notices, estimate_period
from calltexts_assets.api.launcher import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    DagsterLauncher,
    RunState,
)
from calltexts_assets.api.metrics_collector import ExportCollector
from calltexts_assets.api.tokens import TokenAgeCollector, TokenCheck
from calltexts_assets.clients.s3 import S3Storage
from calltexts_assets.clients.storage import LocalStorage, Storage
from calltexts_assets.files.storage_keys import deliverable_keys
from calltexts_assets.listing.periods import PeriodPolicy
from calltexts_assets.runlog.log import log_file_name
from calltexts_assets.settings import Settings, load_settings
from calltexts_assets.state.audit import AuditJournal
from calltexts_assets.state.idempotency import IdempotencyStore
from calltexts_assets.state.ledger import Ledger
from calltexts_assets.state.progress import snapshot


class Refused(RuntimeError):
    """The API will not start as asked; the message is one line naming the setting."""


@functools.cache
def _instance() -> DagsterInstance:
    # One instance per process: DagsterInstance.get() opens storage every time it is called.
    return DagsterInstance.get()


def _last_exportable_day() -> date:
    from calltexts_assets.assets.partitions import daily_partitions

    last = daily_partitions.get_last_partition_key()
    return date.fromisoformat(last) if last else date.min


def build_app(settings: Settings | None = None) -> FastAPI:
    # Imported here: they pull in the asset graph, which tests of create_app do not need.
    from calltexts_assets.assets.partitions import PARTITIONS_START

    settings = settings or load_settings()
    ledger = Ledger(settings.ledger_url())  # creates the ledger tables the metrics read
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        ExportCollector(
            ledger.engine,
            _instance,
            budget_usd=settings.budget_usd,
            timezone=settings.timezone,
            model_notices=partial(
                configured_model_notices, settings, summaries=settings.summaries_enabled
            ),
        )
    )
    tokens = settings.api_tokens
    if tokens:
        today = lambda: datetime.now(UTC).date()  # noqa: E731
        ages = TokenAgeCollector(tokens, settings.api_token_max_age_days, today)
        ages.warn_once_a_day()  # at start, and again on the first scrape of each day
        registry.register(ages)
    launcher = DagsterLauncher(
        settings.dagster_webserver_url,
        _instance,
        location_name=settings.dagster_code_location or None,
    )
    policy = PeriodPolicy(
        timezone=settings.timezone,
        last_exportable_day=_last_exportable_day,
        first_exportable_day=PARTITIONS_START,
    )
    return create_app(
        launcher,
        IdempotencyStore(ledger.engine),
        policy=policy,
        metrics_registry=registry,
        run_details=partial(run_details, ledger, _storage(settings), settings.log_dir),
        estimator=_estimator(settings) if settings.credentials_configured else None,
        tokens=TokenCheck(tokens) if tokens else None,
        journal=AuditJournal(ledger.engine, settings.log_dir),
    )


def _estimator(settings: Settings) -> Callable[[date, date], dict]:
    return lambda first, last: estimate_period(settings, first, last).as_dict()


def _storage(settings: Settings) -> Storage:
    """Where the files are, for their addresses in a run's status (no request is made)."""
    if settings.storage_backend == "s3":
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.aws_region or None,
        )
        return S3Storage(client, settings.s3_bucket, prefix=settings.s3_prefix)
    return LocalStorage(settings.home)


def run_details(ledger: Ledger, storage: Storage, log_dir: Path, state: RunState) -> dict:
    """The run's period as the ledger has it now (calls done, minutes, cost) and the
    addresses of its registry, report and run log, those that exist yet."""
    first, last = state.tags.get(RANGE_START_TAG), state.tags.get(RANGE_END_TAG)
    if not first or not last:
        return {}
    period_from, period_to = date.fromisoformat(first), date.fromisoformat(last)
    days = [
        (period_from + timedelta(days=n)).isoformat()
        for n in range((period_to - period_from).days + 1)
    ]
    keys = deliverable_keys(period_from, period_to)
    artifacts = {name: storage.uri(key) for name, key in keys.items() if storage.exists(key)}
    if state.created_at is not None:
        artifacts["run_log"] = str(log_dir / log_file_name(state.created_at))
    return {"progress": snapshot(ledger, days).as_dict(), "artifacts": artifacts}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the API until interrupted (configuration from the environment). Without tokens
    it serves loopback only: anyone who reaches it could launch paid runs."""
    settings = load_settings()
    if not settings.api_tokens and not is_loopback(host):
        raise Refused(
            f"CALLTEXTS_API_TOKENS (or CALLTEXTS_API_TOKENS_FILE) is not set: without tokens "
            f"the API serves loopback only, not --host {host}; create one with `calltexts api "
            "token create NAME --scopes export:run`"
        )
    uvicorn.run(build_app(settings), host=host, port=port, log_level="info")
