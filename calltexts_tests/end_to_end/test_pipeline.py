"""The whole asset graph against the sandbox over loopback, through dagster's materialize."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from calltexts_assets.assets import all_assets
from calltexts_assets.state.ledger import Status
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.sandboxed import materialize_range


def test_two_days_export_every_artifact(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    result = materialize_range(all_assets, resources, instance, "2026-11-01", "2026-11-02")
    assert result.success
    ledger = resources["ledger"].get()
    records = ledger.records(["2026-11-01", "2026-11-02"])
    seeded = sandbox.portal.rows
    assert sorted(r.call_id for r in records) == sorted(row["CALL_ID"] for row in seeded)
    store = tmp_path / "store"
    for record in records:
        if record.status == Status.TRANSCRIBED:
            assert (store / record.transcript_path).read_text(encoding="utf-8")
    assert (
        store / "exports/2026-11-01_2026-11-02/registry/calls_2026-11-01_2026-11-02.csv"
    ).exists()
    for evaluation in result.get_asset_check_evaluations():
        assert evaluation.passed, evaluation
    assert not list((tmp_path / "tmp").iterdir())  # no spooled audio or chunks left behind
    # One STT pass per call: the STT heard each recording once, and the registry's cost is
    # what the service would bill for it.
    stt = sandbox.stt.stats()
    transcribed = [r for r in records if r.status == Status.TRANSCRIBED]
    assert stt["transcriptions"] == sum(1 for r in transcribed if r.stt_requests)
    assert stt["audio_seconds"] == pytest.approx(sum(r.stt_sent_sec for r in transcribed), abs=1)
    price = resources["export_settings"].price_per_minute_usd
    # whisper-1 is billed per second (docs/specs/stt_wire.md §3.4)
    assert sum(r.cost or 0 for r in records) == pytest.approx(stt["billed_seconds"] * price / 60)
    assert all(r.language == "ru" for r in transcribed if r.stt_requests)

    # A second run over the same days downloads and transcribes nothing.
    sandbox.portal.reset_stats()
    sandbox.stt.reset()
    again = materialize_range(all_assets, resources, instance, "2026-11-01", "2026-11-02")
    assert again.success
    assert sandbox.portal.request_count("records") == 0
    assert sandbox.stt.stats()["requests"] == 0
    assert ledger.count_rows() == len(records)


def test_run_log_masks_phones_and_never_holds_secrets(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    from calltexts_sandbox.runtime import SANDBOX_API_KEY

    sandbox.stt.set_faults(server_error=1)  # an error path writes its message to the log too
    result = materialize_range(all_assets, resources, instance, "2026-11-01", "2026-11-01")
    assert result.success
    logs = list((tmp_path / "logs").glob("call_export_*.jsonl"))
    assert len(logs) == 1  # every step of the run appends to one file
    text = logs[0].read_text(encoding="utf-8")
    events = [json.loads(line) for line in text.splitlines()]
    assert {e["correlation_id"] for e in events} == {result.run_id}
    assert {e["stage"] for e in events if e["event"] == "call_step"} == {
        "raw_audio",
        "transcripts",
    }
    secrets = [sandbox.config.webhook_code, SANDBOX_API_KEY]
    phones = {row["PHONE_NUMBER"] for row in sandbox.portal.rows}
    for needle in [*secrets, *phones]:
        assert needle not in text


def test_run_sensors_close_the_days_and_record_the_run(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    import sqlalchemy as sa

    from calltexts_assets.orchestration.sensors import record_export_failure, record_export_success

    sandbox.portal.add_fault(kind="expired_token", target="*", times=None)
    failed = materialize_range(
        all_assets, resources, instance, "2026-11-01", "2026-11-01", raise_on_error=False
    )
    assert not failed.success
    sandbox.portal.clear_faults()
    ok = materialize_range(all_assets, resources, instance, "2026-11-02", "2026-11-02")
    for sensor, result, status in (
        (record_export_failure, failed, dg.DagsterEventType.RUN_FAILURE),
        (record_export_success, ok, dg.DagsterEventType.RUN_SUCCESS),
    ):
        run = instance.get_run_by_id(result.run_id)
        event = next(iter(instance.all_logs(result.run_id, of_type=status)))
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=event.dagster_event,
            dagster_instance=instance,
            dagster_run=run,
            resources={k: resources[k] for k in ("ledger", "export_settings")},
        )
        if sensor is record_export_failure:
            context = context.for_run_failure()
        sensor(context)
    ledger = resources["ledger"].get()
    assert ledger.export("2026-11-02")["status"] == "success"
    with ledger.engine.connect() as conn:
        rows = {r.run_id: r for r in conn.execute(sa.text("SELECT * FROM run_metrics"))}
    assert rows[failed.run_id].status == "failure"
    assert rows[ok.run_id].status == "success"
    assert rows[ok.run_id].transcripts_ok == sum(
        r.status == "transcribed" for r in ledger.records(["2026-11-02"])
    )


def test_calls_go_to_the_stt_while_the_downloads_go_on(
    sandbox: Sandbox,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The third recording asked for is held back until two transcripts are in the run log
    # (for at most 60 s): were the stages apart, no transcript could come before it.
    serve = sandbox.portal.recording
    asked: list[str] = []

    def transcripts_logged() -> int:
        count = 0
        for log in (tmp_path / "logs").glob("call_export_*.jsonl"):
            for line in log.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:  # the line being written
                    continue
                count += event["event"] == "call_step" and event["stage"] == "transcripts"
        return count

    def held_back(record_id: str) -> Any:
        asked.append(record_id)
        if len(asked) == 3:
            deadline = time.monotonic() + 60
            while transcripts_logged() < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        return serve(record_id)

    monkeypatch.setattr(sandbox.portal, "recording", held_back)
    result = materialize_range(all_assets, resources, instance, "2026-11-01", "2026-11-01")
    assert result.success
    (log,) = (tmp_path / "logs").glob("call_export_*.jsonl")
    steps = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "call_step"]
    downloaded = sorted(e["ts"] for e in steps if e["stage"] == "raw_audio")
    transcribed = sorted(e["ts"] for e in steps if e["stage"] == "transcripts")
    assert len(downloaded) == len(transcribed) >= 5
    assert sum(ts < downloaded[-1] for ts in transcribed) >= 2
