"""The whole asset graph against the sandbox over loopback, through dagster's materialize."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from calltexts_assets.assets import all_assets
from calltexts_assets.ledger import Status
from calltexts_assets.sandbox.runtime import Sandbox
from calltexts_tests.conftest import materialize_range


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
    from calltexts_assets.sandbox.runtime import SANDBOX_API_KEY

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
