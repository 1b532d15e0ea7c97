"""The fault suite, part two: runs that must not hang, pay twice or report a failure as a
success (issue: faults and hostile input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from calltexts_assets.assets import all_assets
from calltexts_assets.core.ledger import Status
from calltexts_assets.sandbox.runtime import Sandbox
from calltexts_assets.testing.sandboxed import materialize_range

DAY1, DAY2 = "2026-11-01", "2026-11-02"
REPORT = f"exports/{DAY1}_{DAY2}/reports/summary_{DAY1}_{DAY2}.md"


def test_a_run_in_which_every_transcription_failed_is_a_failed_run(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    sandbox.stt.set_faults(server_error=10_000)  # every STT request answers 500
    result = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    ledger = resources["ledger"].get()
    statuses = {r.status for r in ledger.records([DAY1, DAY2])}
    assert Status.TRANSCRIBED not in statuses and Status.TRANSCRIPTION_ERROR in statuses
    # the report is still written, and says so; the days are not marked done
    report = (tmp_path / "store" / REPORT).read_text(encoding="utf-8")
    assert "coverage" in report
    assert {ledger.export(d)["status"] for d in (DAY1, DAY2)} == {"failed"}
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "cost_report"
    assert "coverage below the floor" in str(failure.step_failure_data.user_failure_data)
