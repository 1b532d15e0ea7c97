"""Metrics: per-run recording, the Pushgateway push, and the API's scrape-time view."""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from calltexts_assets.api.app import create_app
from calltexts_assets.api.launcher import RunState
from calltexts_assets.api.metrics_collector import ExportCollector
from calltexts_assets.clients.model_lifecycle import notice
from calltexts_assets.listing.calls import call_from_row
from calltexts_assets.settings import load_settings
from calltexts_assets.state import run_metrics as metrics
from calltexts_assets.state.idempotency import IdempotencyStore
from calltexts_assets.state.ledger import Ledger, Status
from calltexts_assets.state.run_metrics import RunMetrics, RunSummary, record_run

MOSCOW = ZoneInfo("Europe/Moscow")
SUMMARY = RunSummary(
    run_id="run-1",
    status=metrics.RUN_SUCCESS,
    duration_sec=420.0,
    period_from="2026-11-01",
    period_to="2026-11-03",
    transcripts_ok=98,
    transcripts_error=2,
    transcripts_skipped=5,
    transcription_minutes=310.5,
    cost_usd=1.9,
    retries={"whisper": 3, "bitrix24": 1},
    rate_limited=4,
    budget_usd=50.0,
    finished_at=datetime(2026, 11, 4, 2, 0, tzinfo=UTC),
)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


SHUTDOWNS = {"whisper-1": date(2027, 2, 26)}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


# -- record_run in the run's process -----------------------------------------------------------


def test_record_run_fills_a_dedicated_registry(tmp_path: Path) -> None:
    run_metrics = RunMetrics()
    record_run(SUMMARY, metrics=run_metrics)
    text = generate_latest(run_metrics.registry).decode()
    assert value(text, "call_export_runs_total", status="success") == 1
    assert value(text, "call_export_runs_total", status="failure") == 0
    assert value(text, "call_transcripts_total", status="error") == 2
    assert value(text, "call_export_duration_seconds_count") == 1
    assert value(text, "call_transcription_minutes_total") == 310.5
    assert value(text, "call_export_cost_total") == 1.9
    assert value(text, "call_export_retry_total", service="whisper") == 3
    assert value(text, "bitrix24_rate_limited_total") == 4
    assert value(text, "call_export_budget_usd") == 50
    assert value(text, "call_export_last_run_cost_usd") == 1.9
    # nothing leaks into the global registry
    from prometheus_client import REGISTRY

    assert "call_export_runs_total" not in generate_latest(REGISTRY).decode()


def test_every_defined_name_is_exposed_by_the_runs_or_the_api() -> None:
    run_side = {s for spec in metrics.RUN_SPECS for s in spec.samples}
    assert run_side <= metrics.METRIC_NAMES
    text = generate_latest(RunMetrics().registry).decode()
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert run_side <= exposed


def test_a_rerun_of_the_last_step_does_not_count_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    record_run(SUMMARY, database_url=url, metrics=RunMetrics())
    record_run(SUMMARY, database_url=url, metrics=RunMetrics())
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(metrics.run_metrics)).all()
    engine.dispose()
    assert len(rows) == 1
    assert rows[0]._mapping["transcripts_ok"] == 98


# -- the Pushgateway ---------------------------------------------------------------------------


@dataclass
class Captured:
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def gateway() -> Iterator[tuple[str, Captured]]:
    """A loopback stand-in for the Pushgateway that keeps what it was sent."""
    captured = Captured()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            captured.requests.append((self.command, self.path, dict(self.headers), body))
            self.send_response(200)
            self.end_headers()

        do_POST = do_PUT

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", captured
    server.shutdown()
    server.server_close()


def test_push_puts_the_run_metrics(gateway: tuple[str, Captured]) -> None:
    url, captured = gateway
    run_metrics = RunMetrics()
    record_run(SUMMARY, pushgateway_url=url, metrics=run_metrics)
    [(method, path, _headers, body)] = captured.requests
    assert method == "PUT"
    assert path == "/metrics/job/call_export"
    text = body.decode()
    assert 'call_transcripts_total{status="error"} 2.0' in text
    assert "bitrix24_rate_limited_total 4.0" in text


def test_push_takes_the_gateway_from_the_settings_and_sends_basic_auth(
    gateway: tuple[str, Captured],
) -> None:
    url, captured = gateway
    env = {"PROMETHEUS_PUSHGATEWAY_URL": url.replace("http://", "http://ops:s3cret@")}
    record_run(SUMMARY, pushgateway_url=load_settings(env).pushgateway(), metrics=RunMetrics())
    [(_method, _path, headers, _body)] = captured.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"ops:s3cret").decode()


def test_a_failed_push_does_not_fail_the_run(caplog: pytest.LogCaptureFixture) -> None:
    from calltexts_sandbox.server import free_port

    dead = f"http://ops:s3cret@127.0.0.1:{free_port()}"
    record_run(SUMMARY, pushgateway_url=dead, metrics=RunMetrics())
    assert "pushing metrics" in caplog.text
    assert "s3cret" not in caplog.text


# -- the API's view: ledger rows + run summaries + the Dagster instance ------------------------


def _call(call_id: str, day: str, phone: str = "+79161234567") -> object:
    return call_from_row(
        {
            "ID": abs(hash(call_id)) % 10_000,
            "CALL_ID": call_id,
            "CALL_TYPE": 2,
            "CALL_DURATION": 120,
            "CALL_START_DATE": f"{day}T10:00:00+03:00",
            "PHONE_NUMBER": phone,
            "PORTAL_NUMBER": "+74950000000",
            "PORTAL_USER_ID": "1",
            "CALL_RECORD_URL": f"https://portal.example/rec/{call_id}.mp3",
            "RECORD_FILE_ID": "1",
        }
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    yield ledger
    ledger.dispose()


def _fill_ledger(ledger: Ledger) -> None:
    """Rows as the assets leave them, written directly."""
    ledger.upsert_listed("2026-10-31", [_call("old-1", "2026-10-31")])
    ledger.update(("2026-10-31", "old-1", "1"), status=Status.TRANSCRIBED, stt_duration_sec=60.0)
    ledger.update(("2026-10-31", "old-1", "1"), cost=0.006)
    ledger.upsert_listed("2026-11-02", [_call(f"c{i}", "2026-11-02") for i in range(4)])
    for i in range(3):
        ledger.update(
            ("2026-11-02", f"c{i}", "1"),
            status=Status.TRANSCRIBED,
            stt_duration_sec=90.0,
            cost=0.012,
        )
    ledger.update(("2026-11-02", "c3", "1"), status=Status.TRANSCRIPTION_ERROR)


def _dagster_runs(instance: dg.DagsterInstance) -> None:
    """One good and then one failed run of a job named like the export's."""

    @dg.op
    # unannotated: dagster rejects a string annotation (from __future__) of a local op
    def work(context) -> None:  # type: ignore[no-untyped-def]
        if context.run.tags.get("fail") == "yes":
            raise RuntimeError("boom")

    @dg.job(name="calls_export")
    def calls_export() -> None:
        work()

    calls_export.execute_in_process(instance=instance)
    calls_export.execute_in_process(instance=instance, tags={"fail": "yes"}, raise_on_error=False)


class _NoLaunches:
    def launch(self, request: object) -> str:
        raise AssertionError("no launches here")

    def status(self, run_id: str) -> RunState | None:
        return None


def test_api_metrics_from_ledger_rows_and_dagster_runs(ledger: Ledger) -> None:
    _fill_ledger(ledger)
    metrics.store_summary(ledger.engine, SUMMARY)
    metrics.store_summary(
        ledger.engine,
        RunSummary(
            run_id="run-2",
            status=metrics.RUN_FAILURE,
            duration_sec=60,
            transcripts_error=1,
            retries={"whisper": 2},
            rate_limited=11,
            cost_usd=0.5,
            finished_at=datetime(2026, 11, 5, 2, 0, tzinfo=UTC),
        ),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        _dagster_runs(instance)
        collector = ExportCollector(
            ledger.engine,
            lambda: instance,
            budget_usd=50.0,
            timezone="Europe/Moscow",
            clock=lambda: datetime(2026, 11, 25, 12, 0, tzinfo=MOSCOW),
            model_notices=lambda: [
                notice("WHISPER_MODEL", "whisper-1", SHUTDOWNS, date(2026, 11, 25))
            ],
        )
        registry = metrics.CollectorRegistry(auto_describe=False)
        registry.register(collector)
        app = create_app(_NoLaunches(), IdempotencyStore(ledger.engine), metrics_registry=registry)
        response = TestClient(app).get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    # ledger state
    assert value(text, "call_export_calls", status="transcribed") == 4
    assert value(text, "call_export_calls", status="transcription_error") == 1
    assert value(text, "call_transcription_minutes_total") == pytest.approx(5.5)
    assert value(text, "call_export_cost_total") == pytest.approx(0.042)
    assert value(text, "call_export_cost_month_usd") == pytest.approx(0.036)  # November only
    assert value(text, "call_export_budget_usd") == 50
    # run summaries
    assert value(text, "call_transcripts_total", status="ok") == 98
    assert value(text, "call_transcripts_total", status="error") == 3
    assert value(text, "call_export_retry_total", service="whisper") == 5
    assert value(text, "call_export_retry_total", service="bitrix24") == 1
    assert value(text, "bitrix24_rate_limited_total") == 15
    assert value(text, "call_export_last_run_cost_usd") == 0.5  # run-2 finished last
    # Dagster runs
    assert value(text, "call_export_runs_total", status="success") == 1
    assert value(text, "call_export_runs_total", status="failure") == 1
    assert value(text, "call_export_last_run_failed") == 1
    assert value(text, "call_export_duration_seconds_count") == 2
    assert value(text, "call_export_runs_in_progress", status="queued") == 0
    assert value(text, "call_export_last_success_timestamp_seconds") > 0
    # every sample the API serves is a defined name (the alert rules rely on these)
    exposed = {name for name, _ in samples(text)}
    assert exposed <= metrics.METRIC_NAMES
    assert exposed == metrics.METRIC_NAMES


def test_api_metrics_on_a_fresh_database_without_dagster(ledger: Ledger) -> None:
    def broken() -> dg.DagsterInstance:
        raise RuntimeError("DAGSTER_HOME is not set")

    registry = metrics.CollectorRegistry(auto_describe=False)
    registry.register(ExportCollector(ledger.engine, broken))
    app = create_app(_NoLaunches(), IdempotencyStore(ledger.engine), metrics_registry=registry)
    text = TestClient(app).get("/metrics").text
    assert value(text, "call_transcripts_total", status="error") == 0
    assert value(text, "call_export_cost_total") == 0
    assert "call_export_runs_total" not in text  # unknown, rather than a false zero


def test_collector_reads_a_run_recorded_by_record_run(ledger: Ledger) -> None:
    run_id = str(uuid.uuid4())
    summary = RunSummary(run_id, metrics.RUN_SUCCESS, 5.0, transcripts_ok=7)
    record_run(summary, database_url=ledger.url, metrics=RunMetrics())
    registry = metrics.CollectorRegistry(auto_describe=False)
    registry.register(ExportCollector(ledger.engine, None, clock=lambda: datetime.now(UTC)))
    text = generate_latest(registry).decode()
    assert value(text, "call_transcripts_total", status="ok") == 7


def test_runs_in_progress_count_the_runs_the_ui_starts_too(ledger: Ledger) -> None:
    """A run launched from the asset graph ("Materialize") is Dagster's __ASSET_JOB, not
    calls_export: it is an export in progress all the same (issue #24, item 10)."""
    with dg.DagsterInstance.ephemeral() as instance:
        for job_name, status in (
            ("__ASSET_JOB", dg.DagsterRunStatus.STARTED),
            ("calls_export", dg.DagsterRunStatus.NOT_STARTED),
            ("retention", dg.DagsterRunStatus.STARTED),  # not an export
        ):
            instance.add_run(
                dg.DagsterRun(job_name=job_name, run_id=str(uuid.uuid4()), status=status)
            )
        registry = metrics.CollectorRegistry(auto_describe=False)
        registry.register(ExportCollector(ledger.engine, lambda: instance))
        text = generate_latest(registry).decode()
    assert value(text, "call_export_runs_in_progress", status="started") == 1
    assert value(text, "call_export_runs_in_progress", status="queued") == 1


def test_api_metrics_say_how_many_days_each_model_has_left(ledger: Ledger) -> None:
    # GET /v1/models' shutdown dates (openai_models.md §1), asked at most once an hour.
    asked = []

    def notices() -> list:
        asked.append(1)
        dates = {"whisper-1": date(2027, 2, 26), "gpt-6-luna": None}
        today = date(2026, 12, 28)
        return [
            notice("WHISPER_MODEL", "whisper-1", dates, today),
            notice("SUMMARY_MODEL", "gpt-6-luna", dates, today),
        ]

    registry = metrics.CollectorRegistry(auto_describe=False)
    registry.register(ExportCollector(ledger.engine, None, model_notices=notices))
    text = generate_latest(registry).decode()
    days = value(
        text, "call_export_model_shutdown_days", setting="WHISPER_MODEL", model="whisper-1"
    )
    assert days == 60
    assert 'model="gpt-6-luna"' not in text  # no date announced: no sample
    generate_latest(registry)
    assert len(asked) == 1
