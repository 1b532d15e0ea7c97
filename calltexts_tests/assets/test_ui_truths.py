"""What the Dagster UI shows is so (issue #24): checked through Dagster's own instance."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from calltexts_assets.assets import all_assets, call_list, raw_audio
from calltexts_assets.report.data import run_time
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.sandboxed import materialize_range, sandbox_resources

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


PARTITION_STATS = """
query PartitionStats($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    partitionStats { numMaterialized numFailed numMaterializing }
  }
}
"""


def _ui_partition_stats(instance: dg.DagsterInstance) -> dict[str, tuple[int, int, int]]:
    """Materialized, failed and in-progress partitions per asset, as the UI's asset pages
    ask Dagster's GraphQL API for them (the code location loaded in a code server)."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    from calltexts_assets import definitions

    keys = [{"path": [name]} for name in ("summaries", "registry_csv", "cost_report")]
    with define_out_of_process_context(definitions.__file__, "defs", instance) as context:
        result = execute_dagster_graphql(context, PARTITION_STATS, {"keys": keys})
    assert result.errors is None, result.errors
    return {
        node["assetKey"]["path"][-1]: tuple(
            node["partitionStats"][f] for f in ("numMaterialized", "numFailed", "numMaterializing")
        )
        for node in result.data["assetNodes"]
    }


def test_summaries_off_are_not_shown_materialized_and_the_report_still_runs(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    assert not resources["export_settings"].summaries_enabled
    result = materialize_range(all_assets, resources, instance, DAY, DAY)
    assert result.success
    skipped = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SKIPPED]
    assert not skipped
    # No summary written, and none claimed: the registry and the report downstream ran.
    assert not list(tmp_path.rglob("summary/*.md"))
    materialized = {
        name: instance.get_materialized_partitions(dg.AssetKey(name))
        for name in ("summaries", "registry_csv", "cost_report")
    }
    assert materialized == {"summaries": set(), "registry_csv": {DAY}, "cost_report": {DAY}}
    assert sandbox.stt.stats()["chat_completions"] == 0
    # What the UI shows: no summaries partition materialized (nor failed), the others one.
    assert _ui_partition_stats(instance) == {
        "summaries": (0, 0, 0),
        "registry_csv": (1, 0, 0),
        "cost_report": (1, 0, 0),
    }

    # Turned on for a run, the same step writes them and the asset is materialized.
    on = {"ops": {"summaries": {"config": {"generate_summary": True}}}}
    assert materialize_range(all_assets, resources, instance, DAY, DAY, run_config=on).success
    transcribed = [r for r in resources["ledger"].get().records([DAY]) if r.transcript_path]
    assert len(list(tmp_path.rglob("summary/*.md"))) == len(transcribed) > 0
    assert instance.get_materialized_partitions(dg.AssetKey("summaries")) == {DAY}
    registry = next(tmp_path.rglob(f"registry/calls_{DAY}_{DAY}.csv")).read_text("utf-8-sig")
    assert all(r.summary_path and r.summary_path in registry for r in transcribed)


def test_the_language_setting_reaches_the_report_and_the_transcripts(
    sandbox: Sandbox, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    resources = sandbox_resources(sandbox, tmp_path, language="en")
    assert materialize_range(all_assets, resources, instance, DAY, DAY).success
    report = (tmp_path / f"store/exports/{DAY}_{DAY}/reports/summary_{DAY}_{DAY}.md").read_text()
    assert report.startswith(f"# SANDBOX: Call export report for {DAY}\n")
    assert "\n## By direction\n" in report and "\n## Quality checks\n" in report
    records = resources["ledger"].get().records([DAY])
    directions = {r.direction for r in records} | {r.status for r in records}
    assert not {word for word in re.findall(r"[a-z_]+", report) if "_" in word} & directions
    texts = [
        (tmp_path / "store" / r.transcript_path).read_text() for r in records if r.transcript_path
    ]
    assert texts and all(t.startswith("Call: ") and "\nDirection: " in t for t in texts)
