"""Prometheus metrics of the export: names, the per-run recording, and the Pushgateway push.

Runs are separate processes, so process-local counters die with them. Each run therefore
(1) persists its summary as one row of `run_metrics` in the ledger database, which the API
sums at scrape time (`calltexts_assets.api.metrics_collector`), and (2) optionally pushes
its own values to a Pushgateway (`PROMETHEUS_PUSHGATEWAY_URL`): "last run" semantics,
since every push replaces the one group of the job (no series pile up per run). Alert
rules aggregate `by (job)`, so the two sources never add up to double counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import basic_auth_handler, default_handler, push_to_gateway
from sqlalchemy.dialects import postgresql, sqlite

from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.state.ledger import create_tables

log = scrubbed_logger(__name__)

PUSH_JOB = "call_export"

RUN_SUCCESS = "success"
RUN_FAILURE = "failure"
TRANSCRIPT_OK = "ok"
TRANSCRIPT_ERROR = "error"
TRANSCRIPT_SKIPPED = "skipped"  # already transcribed by an earlier run
TRANSCRIPT_STATUSES = (TRANSCRIPT_OK, TRANSCRIPT_ERROR, TRANSCRIPT_SKIPPED)
SERVICES = ("bitrix24", "whisper", "summariser")  # `service` label of retries

# Whole runs take minutes to hours (a 60-day backfill is one run).
DURATION_BUCKETS = (30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed, counters with their `_total` suffix
    kind: str  # "counter" | "gauge" | "histogram"
    doc: str
    labels: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        """The name prometheus-client wants (it appends `_total` to counters itself)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def samples(self) -> tuple[str, ...]:
        if self.kind == "histogram":
            return tuple(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count"))
        return (self.name,)


RUNS = MetricSpec("call_export_runs_total", "counter", "Finished export runs.", ("status",))
TRANSCRIPTS = MetricSpec(
    "call_transcripts_total", "counter", "Transcription outcomes per call.", ("status",)
)
DURATION = MetricSpec("call_export_duration_seconds", "histogram", "Wall time of export runs.")
MINUTES = MetricSpec(
    "call_transcription_minutes_total", "counter", "Audio minutes sent to speech-to-text."
)
COST = MetricSpec("call_export_cost_total", "counter", "Speech-to-text cost in USD.")
RETRIES = MetricSpec(
    "call_export_retry_total", "counter", "Retried requests per remote service.", ("service",)
)
RATE_LIMITED = MetricSpec(
    "bitrix24_rate_limited_total",
    "counter",
    "Bitrix24 answers that said 'slow down' (HTTP 429 or 503 QUERY_LIMIT_EXCEEDED).",
)
BUDGET = MetricSpec(
    "call_export_budget_usd", "gauge", "Speech-to-text budget of one run in USD (0: none)."
)
LAST_RUN_COST = MetricSpec(
    "call_export_last_run_cost_usd", "gauge", "Speech-to-text cost of the latest run (USD)."
)
LAST_RUN_FAILED = MetricSpec(
    "call_export_last_run_failed", "gauge", "1 while the latest finished export run failed."
)
LAST_SUCCESS = MetricSpec(
    "call_export_last_success_timestamp_seconds", "gauge", "End time of the last good run."
)
# Exposed only by the API (they describe shared state, not one run).
CALLS = MetricSpec("call_export_calls", "gauge", "Ledger calls per status.", ("status",))
MONTH_COST = MetricSpec(
    "call_export_cost_month_usd", "gauge", "Speech-to-text cost of the current month (USD)."
)
RUNS_IN_PROGRESS = MetricSpec(
    "call_export_runs_in_progress", "gauge", "Export runs queued or running.", ("status",)
)

# What every run exposes (and pushes); the API exposes these and API_SPECS.
RUN_SPECS: tuple[MetricSpec, ...] = (
    RUNS,
    TRANSCRIPTS,
    DURATION,
    MINUTES,
    COST,
    RETRIES,
    RATE_LIMITED,
    BUDGET,
    LAST_RUN_COST,
    LAST_RUN_FAILED,
    LAST_SUCCESS,
)
MODEL_SHUTDOWN = MetricSpec(
    "call_export_model_shutdown_days",
    "gauge",
    "Days until a configured model's shutdown date (GET /v1/models); absent when none is "
    "announced; 0 or less: past it, runs are refused.",
    ("setting", "model"),
)
API_SPECS: tuple[MetricSpec, ...] = (CALLS, MONTH_COST, RUNS_IN_PROGRESS, MODEL_SHUTDOWN)
SPECS = RUN_SPECS + API_SPECS
# Every sample name either the runs or the API expose (alert rules may use only these).
METRIC_NAMES: frozenset[str] = frozenset(s for spec in SPECS for s in spec.samples)


@dataclass(frozen=True)
class RunSummary:
    """What one export run did, as the last asset of the run reports it."""

    run_id: str  # the Dagster run id
    status: str  # RUN_SUCCESS | RUN_FAILURE
    duration_sec: float
    period_from: str = ""
    period_to: str = ""
    transcripts_ok: int = 0
    transcripts_error: int = 0
    transcripts_skipped: int = 0
    transcription_minutes: float = 0.0
    cost_usd: float = 0.0
    retries: Mapping[str, int] = field(default_factory=dict)  # service -> retried requests
    rate_limited: int = 0
    budget_usd: float = 0.0
    finished_at: datetime | None = None

    @property
    def transcripts(self) -> dict[str, int]:
        return {
            TRANSCRIPT_OK: self.transcripts_ok,
            TRANSCRIPT_ERROR: self.transcripts_error,
            TRANSCRIPT_SKIPPED: self.transcripts_skipped,
        }


class RunMetrics:
    """The metrics of one process in their own registry (never the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(RUNS.base, RUNS.doc, RUNS.labels, registry=r)
        self.transcripts = Counter(
            TRANSCRIPTS.base, TRANSCRIPTS.doc, TRANSCRIPTS.labels, registry=r
        )
        self.duration = Histogram(DURATION.base, DURATION.doc, buckets=DURATION_BUCKETS, registry=r)
        self.minutes = Counter(MINUTES.base, MINUTES.doc, registry=r)
        self.cost = Counter(COST.base, COST.doc, registry=r)
        self.retries = Counter(RETRIES.base, RETRIES.doc, RETRIES.labels, registry=r)
        self.rate_limited = Counter(RATE_LIMITED.base, RATE_LIMITED.doc, registry=r)
        self.budget = Gauge(BUDGET.base, BUDGET.doc, registry=r)
        self.last_run_cost = Gauge(LAST_RUN_COST.base, LAST_RUN_COST.doc, registry=r)
        self.last_run_failed = Gauge(LAST_RUN_FAILED.base, LAST_RUN_FAILED.doc, registry=r)
        self.last_success = Gauge(LAST_SUCCESS.base, LAST_SUCCESS.doc, registry=r)
        # Label sets exist from the start, so dashboards show 0 rather than "no data".
        for status in (RUN_SUCCESS, RUN_FAILURE):
            self.runs.labels(status=status)
        for status in TRANSCRIPT_STATUSES:
            self.transcripts.labels(status=status)
        for service in SERVICES:
            self.retries.labels(service=service)

    def observe(self, summary: RunSummary) -> None:
        finished = summary.finished_at or datetime.now(UTC)
        self.runs.labels(status=summary.status).inc()
        for status, count in summary.transcripts.items():
            self.transcripts.labels(status=status).inc(count)
        self.duration.observe(summary.duration_sec)
        self.minutes.inc(summary.transcription_minutes)
        self.cost.inc(summary.cost_usd)
        for service, count in summary.retries.items():
            self.retries.labels(service=service).inc(count)
        self.rate_limited.inc(summary.rate_limited)
        self.budget.set(summary.budget_usd)
        self.last_run_cost.set(summary.cost_usd)
        self.last_run_failed.set(1 if summary.status == RUN_FAILURE else 0)
        if summary.status == RUN_SUCCESS:
            self.last_success.set(finished.timestamp())


PROCESS_METRICS = RunMetrics()

# -- persistence for the API (same SQLAlchemy Core style as the ledger) -----------------------

metadata = sa.MetaData()

run_metrics = sa.Table(
    "run_metrics",
    metadata,
    # One row per Dagster run: a retried last step rewrites its row instead of counting twice.
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("period_from", sa.String(10), nullable=False),
    sa.Column("period_to", sa.String(10), nullable=False),
    sa.Column("duration_sec", sa.Float, nullable=False),
    sa.Column("transcripts_ok", sa.Integer, nullable=False),
    sa.Column("transcripts_error", sa.Integer, nullable=False),
    sa.Column("transcripts_skipped", sa.Integer, nullable=False),
    sa.Column("transcription_minutes", sa.Float, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("retries", sa.Text, nullable=False),  # JSON {service: count}
    sa.Column("rate_limited", sa.Integer, nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
)


def summary_row(summary: RunSummary) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "status": summary.status,
        "period_from": summary.period_from,
        "period_to": summary.period_to,
        "duration_sec": summary.duration_sec,
        "transcripts_ok": summary.transcripts_ok,
        "transcripts_error": summary.transcripts_error,
        "transcripts_skipped": summary.transcripts_skipped,
        "transcription_minutes": summary.transcription_minutes,
        "cost_usd": summary.cost_usd,
        "retries": json.dumps(dict(summary.retries), sort_keys=True),
        "rate_limited": summary.rate_limited,
        "finished_at": summary.finished_at or datetime.now(UTC),
    }


def store_summary(engine: sa.Engine, summary: RunSummary) -> None:
    create_tables(metadata, engine)
    row = summary_row(summary)
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    stmt = dialect.insert(run_metrics).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id"], set_={k: v for k, v in row.items() if k != "run_id"}
    )
    with engine.begin() as conn:
        conn.execute(stmt)


# -- entry points for the assets ---------------------------------------------------------------


def record_run(
    summary: RunSummary,
    *,
    database_url: str | None = None,
    engine: sa.Engine | None = None,
    pushgateway_url: str | None = None,
    metrics: RunMetrics = PROCESS_METRICS,
) -> None:
    """Record a finished run: process metrics, the `run_metrics` row, and the Pushgateway.

    Pass the ledger's `database_url` (or its `engine`) so the API can see the run, and the
    Pushgateway's URL to push there. Monitoring must never fail an export, so a failed push
    is logged, not raised.
    """
    metrics.observe(summary)
    if engine is not None:
        store_summary(engine, summary)
    elif database_url:
        own = sa.create_engine(database_url, hide_parameters=True)
        try:
            store_summary(own, summary)
        finally:
            own.dispose()
    gateway = pushgateway_url
    if gateway:
        try:
            push(gateway, registry=metrics.registry)
        except Exception as exc:  # see the docstring
            log.warning("pushing metrics to %s failed: %s", _strip_userinfo(gateway), exc)


def push(
    gateway_url: str,
    *,
    registry: CollectorRegistry | None = None,
    job: str = PUSH_JOB,
    grouping_key: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> None:
    """PUT the registry to a Pushgateway; `user:password@` in the URL becomes basic auth."""
    parts = urlsplit(gateway_url)
    handler: Any = default_handler
    if parts.username is not None:
        user, password = parts.username, parts.password or ""

        def handler(url: str, method: str, timeout: Any, headers: Any, data: bytes) -> Any:
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    push_to_gateway(
        _strip_userinfo(gateway_url),
        job=job,
        registry=registry or PROCESS_METRICS.registry,
        grouping_key=dict(grouping_key or {}),
        timeout=timeout,
        handler=handler,
    )


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
