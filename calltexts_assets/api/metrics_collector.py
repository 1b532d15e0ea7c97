"""`/metrics` of the API: the export's metrics computed at scrape time from shared state.

Runs are separate processes, so the API cannot hold their counters. It reads them instead:
- the ledger's `call_records`: calls per status, transcribed minutes, cost (monotonic: a
  transcribed call stays transcribed and keeps its cost);
- `run_metrics` (one row per run, written by `metrics.record_run`): transcript outcomes,
  retries, Bitrix24 rate limiting, the latest run's cost;
- the Dagster instance: runs per status, their durations, whether the latest one failed;
- the OpenAI-compatible service's `GET /v1/models`: days to each configured model's shutdown
  date (asked at most once an hour).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from calltexts_assets.clients.model_lifecycle import ModelNotice
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.state import ledger
from calltexts_assets.state import run_metrics as metrics
from calltexts_assets.state.ledger import create_tables
from calltexts_assets.state.run_metrics import MetricSpec

log = scrubbed_logger(__name__)

_FINISHED = {
    DagsterRunStatus.SUCCESS: metrics.RUN_SUCCESS,
    DagsterRunStatus.FAILURE: metrics.RUN_FAILURE,
    DagsterRunStatus.CANCELED: "canceled",
}
# Export runs: the job's (schedules, backfills, the API, `calltexts run`) and those the UI
# launches from the asset graph ("Materialize"), which Dagster names __ASSET_JOB.
EXPORT_JOB_NAMES = ("calls_export", "__ASSET_JOB")
_IN_PROGRESS = {
    DagsterRunStatus.QUEUED: "queued",
    DagsterRunStatus.NOT_STARTED: "queued",
    DagsterRunStatus.STARTING: "started",
    DagsterRunStatus.STARTED: "started",
    DagsterRunStatus.CANCELING: "started",
}


MODEL_LIST_EVERY_SEC = 3600.0  # shutdown dates are announced months ahead


def _counter(spec: MetricSpec) -> CounterMetricFamily:
    return CounterMetricFamily(spec.base, spec.doc, labels=spec.labels or None)


def _gauge(spec: MetricSpec) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.name, spec.doc, labels=spec.labels or None)


class ExportCollector(Collector):
    """A prometheus-client collector over the ledger database and the Dagster instance."""

    def __init__(
        self,
        engine: sa.Engine,
        instance: Callable[[], DagsterInstance] | None,
        *,
        job_names: tuple[str, ...] = EXPORT_JOB_NAMES,
        budget_usd: float = 0.0,
        timezone: str = "Europe/Moscow",
        clock: Callable[[], datetime] | None = None,
        model_notices: Callable[[], list[ModelNotice]] | None = None,
    ) -> None:
        self.engine = engine
        self.model_notices = model_notices
        self._notices: tuple[float, list[ModelNotice]] | None = None  # (asked at, notices)
        self.instance = instance
        self.job_names = job_names
        self.budget_usd = budget_usd
        self.zone = ZoneInfo(timezone)
        self.clock = clock or (lambda: datetime.now(self.zone))
        # The API may start before the first run has created anything.
        create_tables(ledger.metadata, engine)
        create_tables(metrics.metadata, engine)

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration time

    def collect(self) -> Iterator[Metric]:
        yield from self._ledger_metrics()
        yield from self._summary_metrics()
        budget = _gauge(metrics.BUDGET)
        budget.add_metric([], self.budget_usd)
        yield budget
        yield from self._model_metrics()
        if self.instance is not None:
            try:
                yield from self._run_metrics(self.instance())
            except Exception as exc:  # the ledger metrics are still worth serving
                log.warning("cannot read runs from the Dagster instance: %s", exc)

    def _model_metrics(self) -> Iterator[Metric]:
        if self.model_notices is None:
            return
        now = time.monotonic()
        if self._notices is None or now - self._notices[0] > MODEL_LIST_EVERY_SEC:
            self._notices = (now, self.model_notices())
        gauge = _gauge(metrics.MODEL_SHUTDOWN)
        for notice in self._notices[1]:
            if notice.days_left is not None:
                gauge.add_metric([notice.setting, notice.model], notice.days_left)
        yield gauge

    def _ledger_metrics(self) -> Iterator[Metric]:
        records = ledger.call_records.c
        month = self.clock().astimezone(self.zone).strftime("%Y-%m")
        with self.engine.connect() as conn:
            by_status = conn.execute(
                sa.select(records.status, sa.func.count()).group_by(records.status)
            ).all()
            seconds, cost = conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(records.stt_duration_sec), 0.0),
                    sa.func.coalesce(sa.func.sum(records.cost), 0.0),
                )
            ).one()
            # Ledger run ids are the calls' days, so the month is a prefix.
            month_cost = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(records.cost), 0.0)).where(
                    records.run_id.like(f"{month}-%")
                )
            ).scalar_one()
        calls = _gauge(metrics.CALLS)
        for status, count in sorted(by_status):
            calls.add_metric([status], count)
        minutes = _counter(metrics.MINUTES)
        minutes.add_metric([], float(seconds) / 60.0)
        total_cost = _counter(metrics.COST)
        total_cost.add_metric([], float(cost))
        month_gauge = _gauge(metrics.MONTH_COST)
        month_gauge.add_metric([], float(month_cost))
        yield from (calls, minutes, total_cost, month_gauge)

    def _summary_metrics(self) -> Iterator[Metric]:
        rows = metrics.run_metrics.c
        with self.engine.connect() as conn:
            ok, error, skipped, limited = conn.execute(
                sa.select(
                    *(
                        sa.func.coalesce(sa.func.sum(column), 0)
                        for column in (
                            rows.transcripts_ok,
                            rows.transcripts_error,
                            rows.transcripts_skipped,
                            rows.rate_limited,
                        )
                    )
                )
            ).one()
            retries_json = conn.execute(sa.select(rows.retries)).scalars().all()
            last_cost = conn.execute(
                sa.select(rows.cost_usd).order_by(rows.finished_at.desc()).limit(1)
            ).scalar()
        transcripts = _counter(metrics.TRANSCRIPTS)
        for status, count in zip(metrics.TRANSCRIPT_STATUSES, (ok, error, skipped), strict=True):
            transcripts.add_metric([status], int(count))
        retries: Counter[str] = Counter(dict.fromkeys(metrics.SERVICES, 0))
        for text in retries_json:
            retries.update(json.loads(text or "{}"))
        retry_family = _counter(metrics.RETRIES)
        for service, count in sorted(retries.items()):
            retry_family.add_metric([service], count)
        rate_limited = _counter(metrics.RATE_LIMITED)
        rate_limited.add_metric([], int(limited))
        last_run_cost = _gauge(metrics.LAST_RUN_COST)
        last_run_cost.add_metric([], float(last_cost or 0.0))
        yield from (transcripts, retry_family, rate_limited, last_run_cost)

    def _run_metrics(self, instance: DagsterInstance) -> Iterator[Metric]:
        records = [
            record
            for name in self.job_names
            for record in instance.get_run_records(RunsFilter(job_name=name))
        ]
        finished: Counter[str] = Counter({metrics.RUN_SUCCESS: 0, metrics.RUN_FAILURE: 0})
        in_progress: Counter[str] = Counter({"queued": 0, "started": 0})
        durations: list[float] = []
        last_end: tuple[float, str] | None = None
        last_success = 0.0
        for record in records:
            status = record.dagster_run.status
            if status in _IN_PROGRESS:
                in_progress[_IN_PROGRESS[status]] += 1
            if status not in _FINISHED:
                continue
            label = _FINISHED[status]
            finished[label] += 1
            if record.start_time and record.end_time:
                durations.append(record.end_time - record.start_time)
            if record.end_time:
                if last_end is None or record.end_time > last_end[0]:
                    last_end = (record.end_time, label)
                if label == metrics.RUN_SUCCESS:
                    last_success = max(last_success, record.end_time)

        runs = _counter(metrics.RUNS)
        for label, count in sorted(finished.items()):
            runs.add_metric([label], count)
        active = _gauge(metrics.RUNS_IN_PROGRESS)
        for label, count in sorted(in_progress.items()):
            active.add_metric([label], count)
        failed = _gauge(metrics.LAST_RUN_FAILED)
        failed.add_metric([], 1 if last_end and last_end[1] == metrics.RUN_FAILURE else 0)
        success = _gauge(metrics.LAST_SUCCESS)
        success.add_metric([], last_success)
        yield from (runs, active, failed, success, _histogram(durations))


def _histogram(durations: list[float]) -> HistogramMetricFamily:
    buckets = [
        (str(bound), sum(1 for d in durations if d <= bound)) for bound in metrics.DURATION_BUCKETS
    ]
    buckets.append(("+Inf", len(durations)))
    return HistogramMetricFamily(
        metrics.DURATION.name, metrics.DURATION.doc, buckets=buckets, sum_value=sum(durations)
    )
