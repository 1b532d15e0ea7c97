"""What users see of a run in the Dagster UI and the files: no phone number in the event log,
each partition's own figures, an empty period said to be empty, and what `calltexts run`
prints at the end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from calltexts_assets.assets import all_assets
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.child_run import REPO_ROOT, ChildLayout
from calltexts_tests.support.sandboxed import materialize_range, sandbox_child_env

DAY1, DAY2 = "2026-11-01", "2026-11-02"
# "3/4 calls (75 %) | 1.2 audio min | $0.0120" in the CLI's line or Dagster's log line
PROGRESS_LINE = re.compile(r"\d+/\d+ calls \(\d+ %\) \| [\d.]+ audio min \| \$")
LABELS = {"Registry", "Registry (xlsx)", "Report", "Report (PDF)", "Run log"}


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def test_no_phone_number_reaches_the_event_log(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    result = materialize_range(all_assets, resources, instance, DAY1, DAY2)
    numbers = {
        _digits(row[field])
        for row in sandbox.portal.rows
        for field in ("PHONE_NUMBER", "PORTAL_NUMBER")
        if len(_digits(row.get(field) or "")) >= 7
    }
    assert numbers
    logged = [serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    assert len(logged) > 50  # materializations, checks, step events: the whole run
    text = "\n".join(logged)
    digits_only = re.sub(r"\D", "", text)  # "+7 916 123-45-67" in any spelling
    found = [n for n in numbers if n in digits_only]
    assert not found, f"unmasked numbers in the event log: {found[:3]}"


def test_each_partition_of_a_range_run_shows_its_own_figures(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    """A 3-day range of which the first day had no calls (the seed starts on 11-01)."""
    materialize_range(all_assets, resources, instance, "2026-10-31", DAY2)
    per_day = {
        day: sum(1 for r in sandbox.portal.rows if r["CALL_START_DATE"].startswith(day))
        for day in ("2026-10-31", DAY1, DAY2)
    }
    assert per_day["2026-10-31"] == 0 and per_day[DAY1] > 0

    def figures(asset: str, day: str) -> dict[str, Any]:
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day]), limit=1
        ).records
        metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
        return {k: getattr(v, "value", v) for k, v in metadata.items()}

    ledger = resources["ledger"].get()
    for day, calls in per_day.items():
        transcribed = sum(1 for r in ledger.records([day]) if r.status == "transcribed")
        assert figures("call_list", day)["calls"] == calls
        assert figures("transcripts", day)["transcribed_now"] == transcribed
        assert figures("cost_report", day)["calls"] == calls
        assert figures("registry_csv", day)["rows"] == calls
        # the range's totals are there too, under their own name, with the range
        totals = figures("call_list", day)["run_totals"]
        assert totals["period"] == "2026-10-31_2026-11-02"
        assert totals["calls"] == sum(per_day.values())


def test_the_report_reads_on_the_cost_report_page(
    resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    result = materialize_range(all_assets, resources, instance, DAY1, DAY2)
    [event] = [
        m for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("cost_report") and m.partition == DAY1
    ]  # fmt: skip
    metadata = event.materialization.metadata
    assert isinstance(metadata["report"], dg.MarkdownMetadataValue)
    assert metadata["report"].value.startswith("# ПЕСОЧНИЦА: Отчёт по выгрузке")
    assert "## По дням" in metadata["report"].value
    assert str(metadata["pdf"].value).endswith(f"summary_{DAY1}_{DAY2}.pdf")


def _progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if PROGRESS_LINE.search(line)]


def _logged_progress(run_id: str) -> list[str]:
    with dg.DagsterInstance.get() as instance:
        messages = [entry.user_message for entry in instance.all_logs(run_id)]
    return [m for m in messages if PROGRESS_LINE.search(m)]


def test_calltexts_run_says_what_was_new_what_was_skipped_and_where_the_files_are(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = ChildLayout.under(tmp_path)
    env = sandbox_child_env(
        sandbox,
        layout,
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rows = [row for row in sandbox.portal.rows if row["CALL_START_DATE"].startswith(DAY1)]
    calls = len(rows)
    recorded = sum(1 for row in rows if row.get("CALL_RECORD_URL") or row.get("RECORD_FILE_ID"))

    # The real CLI, twice: its stdout, and stderr where Dagster's console logger writes.
    command = [sys.executable, "-m", "calltexts_assets.ops.cli", "run"]
    command += ["--from", DAY1, "--to", DAY1]
    first, again = (
        subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        for _ in range(2)
    )

    assert first.returncode == 0, first.stderr[-4000:]
    lines = first.stdout.splitlines()
    assert any(f"{DAY1}_{DAY1}: {calls} calls listed" in line for line in lines), lines
    [new] = [line for line in lines if line.startswith("New: ")]
    assert new.startswith(f"New: {recorded} recordings downloaded, {recorded} calls transcribed")
    assert "skipped as already done: 0 recordings, 0 transcripts" in new
    paths = dict(line.split(": ", 1) for line in lines if line.split(": ", 1)[0] in LABELS)
    assert set(paths) == set(LABELS), lines
    for label, path in paths.items():
        assert Path(path.removeprefix("file://")).exists(), (label, path)
    assert paths["Registry (xlsx)"].endswith(f"calls_{DAY1}_{DAY1}.xlsx")

    assert again.returncode == 0, again.stderr[-4000:]
    repeated = again.stdout
    assert "Nothing new: every call of the period was already done" in repeated, repeated
    assert "New: " not in repeated

    # The progress line is printed once, in the CLI's format, labelled as the period's; the
    # asset's copy stays in the run's event log (for the UI) and off the terminal.
    [run_id] = re.findall(r"^Run (\S+): succeeded", first.stdout, re.M)
    figures = _progress_lines(first.stdout)
    assert figures and all(line.startswith("Period (all runs): ") for line in figures), figures
    assert _progress_lines(first.stderr) == [], first.stderr
    assert _logged_progress(run_id)  # the asset's line at the end of its step, at least
    # A re-run that changes nothing launches no run (#26), says so in one line and shows no
    # progress figures at all, anywhere.
    assert re.findall(r"^Run (\S+): ", repeated, re.M) == [], repeated
    assert len(re.findall(r"^No run launched: nothing changed", repeated, re.M)) == 1, repeated
    assert _progress_lines(repeated) == [] and _progress_lines(again.stderr) == []
