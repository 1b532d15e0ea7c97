"""The whole asset graph against the sandbox over loopback, through dagster's materialize."""

from __future__ import annotations

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
