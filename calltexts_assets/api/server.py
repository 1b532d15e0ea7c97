"""`calltexts api serve`: the API wired to the ledger database and the Dagster deployment."""

from __future__ import annotations

import functools
from datetime import date

import uvicorn
from dagster import DagsterInstance
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from calltexts_assets.api.app import create_app
from calltexts_assets.api.idempotency import IdempotencyStore
from calltexts_assets.api.launcher import DagsterLauncher
from calltexts_assets.api.metrics_collector import ExportCollector
from calltexts_assets.core.ledger import Ledger
from calltexts_assets.core.periods import PeriodPolicy
from calltexts_assets.settings import Settings, load_settings


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
        )
    )
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
        launcher, IdempotencyStore(ledger.engine), policy=policy, metrics_registry=registry
    )


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the API until interrupted (configuration from the environment)."""
    uvicorn.run(build_app(), host=host, port=port, log_level="info")
