"""What the Dagster UI shows is so (issue #24): checked through Dagster's own instance."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from calltexts_assets.assets import all_assets, call_list, raw_audio
from calltexts_assets.report.data import run_time
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.sandboxed import materialize_range

DAY = "2026-11-01"


def test_raw_audio_of_a_day_never_listed_fails_saying_what_to_materialize(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    result = materialize_range([raw_audio], resources, instance, DAY, DAY, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert len(failures) == 1
    message = failures[0].step_failure_data.error.message
    assert "call_list was never materialized for 2026-11-01" in message
    assert "materialize call_list" in message
    # Nothing was downloaded, and raw_audio is not shown as materialized for the day.
    assert sandbox.portal.request_count("records") == 0
    assert not instance.get_materialized_partitions(dg.AssetKey("raw_audio"))

    # Once the day is listed, the same step downloads its recordings.
    assert materialize_range([call_list], resources, instance, DAY, DAY).success
    assert materialize_range([raw_audio], resources, instance, DAY, DAY).success
    assert instance.get_materialized_partitions(dg.AssetKey("raw_audio")) == {DAY}
    recorded = [r for r in sandbox.portal.rows if r["CALL_START_DATE"].startswith(DAY)]
    stored = resources["ledger"].get().records([DAY])
    assert sum(bool(r.audio_path) for r in stored) == sum(
        bool(r.get("RECORD_FILE_ID")) for r in recorded
    )


def _first_partition(env: dict[str, str]) -> str:
    """The first partition of the code location as the UI loads it, in a fresh process."""
    code = (
        "from calltexts_assets.definitions import defs\n"
        "job = defs.resolve_job_def('calls_export')\n"
        "print(job.partitions_def.get_first_partition_key())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_partitions_start_at_the_retention_by_default_or_at_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLTEXTS_", "BITRIX24_"))}
    env["CALLTEXTS_HOME"] = str(tmp_path)
    today = date.today()
    # 90 days of partitions, not every day since 2025: the fill is of the days that exist.
    assert _first_partition(env) == (today - timedelta(days=90)).isoformat()
    env["CALLTEXTS_PARTITIONS_START"] = "30"
    assert _first_partition(env) == (today - timedelta(days=30)).isoformat()
    env["CALLTEXTS_PARTITIONS_START"] = "2026-10-01"
    assert _first_partition(env) == "2026-10-01"


def test_the_report_times_the_runs_that_did_the_work_not_a_no_op_rerun(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    first = materialize_range(all_assets, resources, instance, DAY, DAY)
    again = materialize_range(all_assets, resources, instance, DAY, DAY)  # nothing new
    assert first.success and again.success
    record = instance.get_run_record_by_id(first.run_id)
    assert record is not None and record.end_time and record.start_time
    worked = run_time(record.end_time - record.start_time)
    report = (tmp_path / f"store/exports/{DAY}_{DAY}/reports/summary_{DAY}_{DAY}.md").read_text()
    assert f"| Время выполнения (запуски, сделавшие работу периода: 1) | {worked} |" in report
    assert "| Время этого запуска |" in report
