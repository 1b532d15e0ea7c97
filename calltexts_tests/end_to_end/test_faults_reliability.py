"""The fault suite, part two: runs that must not hang, pay twice or report a failure as a
success (issue: faults and hostile input)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import serialize_value

from calltexts_assets.assets import all_assets
from calltexts_assets.assets.partitions import period_for_days
from calltexts_assets.limits.processes import owner_name
from calltexts_assets.ops.export_run import summary_lines
from calltexts_assets.orchestration.run_summary import run_totals_by_asset
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.state.ledger import Ledger, Status
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.child_run import ChildLayout, run_child, start_child
from calltexts_tests.support.databases import postgres_schema
from calltexts_tests.support.sandboxed import (
    materialize_range,
    sandbox_child_env,
    sandbox_resources,
)

REPO = Path(__file__).resolve().parents[2]
DAY1, DAY2 = "2026-11-01", "2026-11-02"
FIRST, LAST = date(2026, 11, 1), date(2026, 11, 2)
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
    assert "| Покрытие расшифровкой | ОШИБКА |" in report  # the coverage check, by its name
    assert {ledger.export(d)["status"] for d in (DAY1, DAY2)} == {"failed"}
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "cost_report"
    assert "coverage below the floor" in str(failure.step_failure_data.user_failure_data)


# -- kill -9, twice: the pool slots come back ------------------------------------------------


def _killed_mid_transcription(
    sandbox: Sandbox, layout: ChildLayout, env: dict[str, str], log: Path, after: int
) -> None:
    child = start_child(date(2026, 11, 1), date(2026, 11, 2), env, log_path=log)
    deadline = time.monotonic() + 90
    while sandbox.stt.stats()["transcriptions"] < after:
        assert child.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never reached the STT"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL


def test_two_killed_runs_do_not_keep_the_next_one_waiting_for_a_pool_slot(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    layout = ChildLayout.under(tmp_path)
    # The project's instance settings: the `stt` pool allows 2 steps at once.
    (layout.dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = sandbox_child_env(
        sandbox,
        layout,
        concurrency=1,
    )
    log = tmp_path / "child.log"
    sandbox.stt.latency_per_audio_min_sec = 2.0
    _killed_mid_transcription(sandbox, layout, env, log, after=1)
    _killed_mid_transcription(sandbox, layout, env, log, after=2)

    sandbox.stt.latency_per_audio_min_sec = 0.0
    code = run_child(date(2026, 11, 1), date(2026, 11, 2), env, log_path=log)
    output = log.read_text()
    assert code == 0, output[-3000:]
    # each killed run is reaped by the next one to start; the one that had claimed its pool
    # slot (at least the second: it held it when killed) has it freed
    assert output.count("is gone; marked failed") == 2
    assert "its pool slots freed" in output

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(layout.dagster_home))) as instance:
        statuses = sorted(r.status.value for r in instance.get_runs())
        assert statuses == ["FAILURE", "FAILURE", "SUCCESS"]
        assert not instance.event_log_storage.get_concurrency_run_ids()


# -- two runs over the same days at once -----------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None: the default SQLite ledger under the home; else a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    with postgres_schema("overlap") as url:
        yield url


def _sandboxed_env(sandbox: Sandbox, layout: ChildLayout, ledger_url: str | None) -> dict:
    return sandbox_child_env(
        sandbox,
        layout,
        concurrency=2,
        extra={"CALLTEXTS_DATABASE_URL": ledger_url} if ledger_url else None,
    )


def _first_error(log: Path) -> str:
    """The log from its first traceback on (a failure's cause, not what followed it)."""
    text = log.read_text()
    start = text.find("Traceback")
    return text[start : start + 4000] if start >= 0 else text[-2000:]


def test_two_runs_over_the_same_days_share_the_work(
    sandbox: Sandbox, tmp_path: Path, ledger_url: str | None
) -> None:
    first, last = date(2026, 11, 1), date(2026, 11, 2)
    # What one run alone sends: the yardstick of "each call once" for the two together.
    alone = ChildLayout.under(tmp_path / "alone")
    code = run_child(first, last, _sandboxed_env(sandbox, alone, None), log_path=tmp_path / "a")
    assert code == 0, (tmp_path / "a").read_text()[-2000:]
    downloads_alone = sandbox.portal.request_count("records")
    stt_alone = sandbox.stt.stats()["transcriptions"]
    sandbox.portal.reset_stats()
    sandbox.stt.reset()

    layout = ChildLayout.under(tmp_path / "overlap")
    env = _sandboxed_env(sandbox, layout, ledger_url)
    sandbox.stt.latency_per_audio_min_sec = 1.0  # both runs are in the STT stage together
    # The instance's SQLite schema made once: two processes creating it at the same moment
    # race on Dagster's alembic_version row (UNIQUE constraint failed), which is not the
    # race under test.
    dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(layout.dagster_home))).dispose()
    children = [start_child(first, last, env, log_path=tmp_path / f"{n}.log") for n in range(2)]
    codes = [child.wait(timeout=600) for child in children]
    assert codes == [0, 0], [_first_error(tmp_path / f"{n}.log") for n in range(2)]

    # every recording downloaded once, every call transcribed once, between the two runs
    logs = [(tmp_path / f"{n}.log").read_text()[-3000:] for n in range(2)]
    assert sandbox.portal.request_count("records") == downloads_alone > 0, logs
    assert sandbox.stt.stats()["transcriptions"] == stt_alone > 0, logs
    ledger = Ledger(ledger_url or layout.ledger_url)
    try:
        records = ledger.records([DAY1, DAY2])
        recorded = [r for r in records if r.audio_path]
        assert recorded and {r.status for r in recorded} == {Status.TRANSCRIBED}
        assert not ledger.claimants()
    finally:
        ledger.dispose()
    both = [(tmp_path / f"{n}.log").read_text() for n in range(2)]
    assert all("succeeded" in output for output in both)


# -- a budget that stops the run, and a run that resumes when it is raised -------------------


def _with_budget(resources: dict[str, Any], budget_usd: float) -> dict[str, Any]:
    current = resources["export_settings"]
    return {
        **resources,
        "export_settings": ExportSettings(
            is_sandbox=True,
            max_concurrency=2,
            budget_usd=budget_usd,
            log_dir=current.log_dir,
            work_dir=current.work_dir,
        ),
    }


def test_a_budget_stops_before_the_call_that_crosses_it_and_a_raised_one_resumes(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    ledger = resources["ledger"].get()
    budget = 0.03  # stop past +20 %: $0.036, a handful of the seeded calls
    first = materialize_range(
        all_assets, _with_budget(resources, budget), instance, DAY1, DAY2, raise_on_error=False
    )
    assert not first.success
    failure = " ".join(
        str(e.step_failure_data.user_failure_data) for e in first.all_events if e.is_step_failure
    )
    assert "budget reached" in failure and "Raise CALLTEXTS_BUDGET_USD" in failure
    records = ledger.records([DAY1, DAY2])
    done = [r for r in records if r.status == Status.TRANSCRIBED]
    spent = sum(r.cost or 0 for r in done)
    assert 0 < len(done) < len([r for r in records if r.audio_path])
    assert spent <= budget * 1.2 + 1e-9
    # the calls not sent are left where they were: stored, no error, no attempt counted
    waiting = [r for r in records if r.status == Status.DOWNLOADED]
    assert waiting and all(r.attempts == 0 and r.error_code is None for r in waiting)

    sandbox.portal.reset_stats()
    second = materialize_range(all_assets, _with_budget(resources, 100.0), instance, DAY1, DAY2)
    assert second.success
    assert sandbox.portal.request_count("records") == 0  # nothing downloaded again
    [event] = [
        m for m in second.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("transcripts") and m.partition == DAY1
    ]  # fmt: skip
    assert event.materialization.metadata["run_totals"].value["transcribed_now"] == len(waiting)
    assert all(r.status != Status.DOWNLOADED for r in ledger.records([DAY1, DAY2]))


# -- one odd field is one rejected row, on SQLite and PostgreSQL -----------------------------


def test_an_odd_field_rejects_one_row_and_the_period_proceeds(
    sandbox: Sandbox,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    tmp_path: Path,
    ledger_url: str | None,
) -> None:
    if ledger_url:
        resources = {**resources, "ledger": LedgerResource(database_url=ledger_url)}
    rows = sandbox.portal.rows
    odd = {
        rows[0]["CALL_ID"]: {"PHONE_NUMBER": "+7" + "9" * 120},
        rows[1]["CALL_ID"]: {"CALL_DURATION": "1e11"},
        rows[2]["CALL_ID"]: {"PORTAL_NUMBER": "+74950000000\r\nForged: header"},
    }
    sandbox.portal.set_rows([{**row, **odd.get(row["CALL_ID"], {})} for row in rows])

    result = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    ledger = resources["ledger"].get()
    records = {r.call_id: r for r in ledger.records([DAY1, DAY2])}
    assert len(records) == len(rows)  # every row is in the ledger, the odd ones too
    codes = {call_id: records[call_id].error_code for call_id in odd}
    assert codes == {
        rows[0]["CALL_ID"]: "invalid_phone_number",
        rows[1]["CALL_ID"]: "invalid_call_duration",
        rows[2]["CALL_ID"]: "invalid_portal_number",
    }
    assert all(records[c].status == Status.INVALID for c in odd)
    others = [r for c, r in records.items() if c not in odd and r.audio_path]
    assert others and all(r.status == Status.TRANSCRIBED for r in others)
    text = "\n".join(serialize_value(e) for e in instance.all_logs(result.run_id))
    assert "9999999999" not in text and "Forged" not in text


# -- what killed runs leave behind is removed by the next run, never a live run's -------------


def _crash_leftovers(home: Path) -> dict[str, list[Path]]:
    """Spool files, piece folders and partial storage writes under a home."""
    tmp = home / "tmp"
    return {
        "spool files": sorted(tmp.rglob("spool-*.part")),
        "piece folders": sorted(p for p in tmp.rglob("calltexts-pieces-*") if p.is_dir()),
        "partial writes": sorted((home / "exports").rglob(".*.tmp")),
    }


def test_a_run_removes_what_killed_runs_left_and_counts_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    layout = ChildLayout.under(tmp_path)
    env = sandbox_child_env(sandbox, layout, concurrency=3)
    log = tmp_path / "child.log"
    # Downloads and transcriptions in flight when each run is killed.
    sandbox.portal.add_fault(kind="latency", target="records", delay_sec=0.5, times=None)
    sandbox.stt.latency_per_audio_min_sec = 3.0
    _killed_mid_transcription(sandbox, layout, env, log, after=1)
    [first] = (layout.home / "tmp").glob("run-*")
    # The second run is killed at its own first transcription (once the server has answered
    # what the first one left in flight).
    while sandbox.stt.stats()["in_flight"]:
        time.sleep(0.05)
    sandbox.stt.reset()
    _killed_mid_transcription(sandbox, layout, env, log, after=1)
    # The second run removed what the first left before it was killed in turn.
    dead = list((layout.home / "tmp").glob("run-*"))
    assert not first.exists() and len(dead) == 1, dead
    # A write the first killed run had begun (a kill inside a write is a matter of timing).
    day_dir = layout.home / "exports/2026-11/raw/2026/11/01"
    day_dir.mkdir(parents=True, exist_ok=True)
    owner = dead[0].name.removeprefix("run-")
    (day_dir / f".call_cut.mp3.{owner}.k2j3h4.tmp").write_bytes(b"half a recording")
    left = _crash_leftovers(layout.home)
    assert left["piece folders"], "the kills must land among the transcriptions"
    # A live run's files (this test's process stands for it) are never touched.
    live = layout.home / "tmp" / f"run-{owner_name()}"
    live.mkdir()
    (live / "spool-live.part").write_bytes(b"downloading")
    live_write = day_dir / f".call_live.mp3.{owner_name()}.abcdef.tmp"
    live_write.write_bytes(b"writing")

    sandbox.portal.clear_faults()
    sandbox.stt.latency_per_audio_min_sec = 0.0
    code = run_child(date(2026, 11, 1), date(2026, 11, 2), env, log_path=log)
    output = log.read_text()
    assert code == 0, output[-3000:]

    assert not any(path.exists() for paths in left.values() for path in paths)
    assert not any(path.exists() for path in dead)
    assert (live / "spool-live.part").exists() and live_write.exists()
    counted = ", ".join(f"{len(paths)} {what}" for what, paths in left.items() if paths)
    assert f"Leftovers of runs that are over, removed: {counted}." in output


# -- one line instead of a traceback --------------------------------------------------------


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "calltexts_assets.ops.cli", *argv]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    return done.stderr


def test_a_missing_dagster_home_is_one_line_naming_what_to_do(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    layout = ChildLayout.under(tmp_path)
    env = sandbox_child_env(sandbox, layout)
    period = ("run", "--from", DAY1, "--to", DAY1)
    unset = _one_line(_cli({k: v for k, v in env.items() if k != "DAGSTER_HOME"}, *period))
    assert "DAGSTER_HOME is not set" in unset and "export DAGSTER_HOME=" in unset
    gone = tmp_path / "no-such-instance"
    missing = _one_line(_cli({**env, "DAGSTER_HOME": str(gone)}, *period))
    assert f"DAGSTER_HOME={gone}: no such folder" in missing and f"mkdir -p {gone}" in missing
    assert not (layout.home / "ledger.sqlite").exists()  # nothing was done


def test_a_ledger_that_is_not_a_database_is_one_line_naming_it_and_the_restore(
    sandbox: Sandbox, tmp_path: Path, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    layout = ChildLayout.under(tmp_path)
    env = sandbox_child_env(sandbox, layout)
    ledger_file = layout.home / "ledger.sqlite"
    ledger_file.write_bytes(b"not a database, but a page someone saved over it\n" * 200)

    said = _one_line(_cli(env, "run", "--from", DAY1, "--to", DAY1))
    assert f"the ledger {ledger_file} is not a readable database" in said
    assert "calltexts restore" in said
    # Inside a Dagster run (the UI, the daemon) the run fails with the same line (raised as
    # a dg.Failure when the ledger resource is set up).
    broken = {**resources, "ledger": LedgerResource(database_url=f"sqlite:///{ledger_file}")}
    result = materialize_range(all_assets, broken, instance, DAY1, DAY1, raise_on_error=False)
    assert not result.success
    logged = "\n".join(serialize_value(e) for e in instance.all_logs(result.run_id))
    assert f"the ledger {ledger_file} is not a readable database" in logged
    assert "calltexts restore" in logged and "file is not a database" in logged


# -- a transcript or summary deleted or edited by hand is re-made at no cost ------------------

SUMMARIES_ON = {"ops": {"summaries": {"config": {"generate_summary": True}}}}


def test_a_transcript_or_summary_deleted_or_edited_by_hand_is_remade_from_the_stored_answer(
    sandbox: Sandbox,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    tmp_path: Path,
    ledger_url: str | None,
) -> None:
    if ledger_url:
        resources = {**resources, "ledger": LedgerResource(database_url=ledger_url)}
    days = (DAY1, DAY2)
    assert materialize_range(all_assets, resources, instance, *days, run_config=SUMMARIES_ON)
    store = tmp_path / "store"
    transcripts = sorted(store.glob("exports/*/transcripts/call_*.txt"))
    summaries = sorted(store.glob("exports/*/summary/call_*.md"))
    assert len(transcripts) >= 2 and len(summaries) >= 2
    delivered = {path: path.read_bytes() for path in [*transcripts, *summaries]}
    before = {r.key: r for r in resources["ledger"].get().records(list(days))}
    # The answers are kept beside the recordings, compressed.
    assert len(list(store.glob("exports/*/raw/*/*/*/call_*.stt.json.gz"))) == len(transcripts)

    transcripts[0].unlink()
    transcripts[1].write_text("[00:01] Оператор: совсем другой разговор\n", encoding="utf-8")
    summaries[0].unlink()
    summaries[1].write_bytes(summaries[1].read_bytes().replace(b"# ", b"# (edited) ", 1))
    sandbox.portal.reset_stats()
    sandbox.stt.reset()

    again = materialize_range(all_assets, resources, instance, *days, run_config=SUMMARIES_ON)

    assert again.success
    assert sandbox.stt.stats()["requests"] == 0  # neither the STT nor the chat model asked
    assert sandbox.portal.request_count("records") == 0
    assert {path: path.read_bytes() for path in delivered} == delivered
    totals = run_totals_by_asset(instance, again.run_id)
    assert totals["transcripts"]["transcripts_remade"] == 2
    assert totals["transcripts"]["transcribed_now"] == 0
    assert totals["transcripts"]["cost_usd_now"] == 0
    assert totals["summaries"]["summaries_remade"] == 2
    lines = summary_lines(again.run_id, True, period_for_days(FIRST, LAST), totals, {})
    assert (
        "Re-made from the stored answers at no cost (missing or changed since written): "
        "2 transcripts, 2 summaries." in lines
    )
    after = {r.key: r for r in resources["ledger"].get().records(list(days))}
    assert [(r.status, r.cost) for r in after.values()] == [
        (r.status, r.cost) for r in before.values()
    ]
    # A third run finds everything as written: nothing to re-make.
    third = materialize_range(all_assets, resources, instance, *days, run_config=SUMMARIES_ON)
    assert run_totals_by_asset(instance, third.run_id)["transcripts"]["transcripts_remade"] == 0


# -- a lost ledger does not pay twice ----------------------------------------------------------


def test_a_lost_ledger_adopts_what_storage_holds_and_pays_nothing_for_it(
    sandbox: Sandbox, tmp_path: Path, ledger_url: str | None
) -> None:
    layout = ChildLayout.under(tmp_path)
    env = _sandboxed_env(sandbox, layout, ledger_url)
    log = tmp_path / "child.log"
    assert run_child(FIRST, LAST, env, log_path=log) == 0, log.read_text()[-3000:]
    url = ledger_url or layout.ledger_url
    ledger = Ledger(url)
    try:
        first = {r.call_id: r for r in ledger.records([DAY1, DAY2]) if r.audio_path}
    finally:
        ledger.dispose()
    transcripts = {p: p.read_bytes() for p in layout.home.glob("exports/*/transcripts/*.txt")}
    assert len(first) == len(transcripts) >= 4

    # Two stored answers that must not be trusted: one damaged, one of another recording.
    answers = sorted(layout.home.glob("exports/*/raw/*/*/*/call_*.stt.json.gz"))
    answers[0].write_bytes(answers[0].read_bytes()[:40])
    foreign = json.loads(gzip.decompress(answers[1].read_bytes()))
    foreign["recording"]["sha256"] = "0" * 64
    answers[1].write_bytes(gzip.compress(json.dumps(foreign).encode()))
    # The ledger is lost.
    if ledger_url:
        engine = sa.create_engine(ledger_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE call_records"))
            conn.execute(sa.text("DROP TABLE call_exports"))
        engine.dispose()
    else:
        for path in layout.home.glob("ledger.sqlite*"):
            path.unlink()
    sandbox.portal.reset_stats()
    sandbox.stt.reset()

    assert run_child(FIRST, LAST, env, log_path=log) == 0, log.read_text()[-3000:]

    output = log.read_text()
    assert sandbox.portal.request_count("records") == 0  # no recording downloaded again
    assert sandbox.stt.stats()["transcriptions"] == 2  # only the two untrusted answers
    adopted = len(first)
    assert (
        "Adopted from storage, nothing paid (the ledger had no record of them): "
        f"{adopted} recordings, {adopted - 2} STT answers, 0 summaries." in output
    )
    ledger = Ledger(url)
    try:
        again = {r.call_id: r for r in ledger.records([DAY1, DAY2]) if r.audio_path}
    finally:
        ledger.dispose()
    assert {c: (r.status, r.checksum, r.cost) for c, r in again.items()} == {
        c: (r.status, r.checksum, r.cost) for c, r in first.items()
    }
    # where each copy came from is known when the call offers one source, else left empty
    assert {c: r.recording_source for c, r in again.items()} == {
        c: None if r.recording_url and r.record_id else r.recording_source for c, r in first.items()
    }
    assert {r.recording_source for r in again.values()} >= {None, "drive"}
    assert {p: p.read_bytes() for p in transcripts} == transcripts


# -- restore: verified first, the ledger replaced whole, all at once --------------------------


def _home_files(home: Path) -> dict[str, bytes]:
    return {
        p.relative_to(home).as_posix(): p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.startswith("ledger.sqlite")
    }


def _exported_home(
    sandbox: Sandbox, root: Path, instance: dg.DagsterInstance, ledger_url: str | None
) -> tuple[Path, dict[str, str]]:
    """A home with a day exported into it, and the CLI's environment for it."""
    home = root / "home"
    url = ledger_url or f"sqlite:///{home / 'ledger.sqlite'}"
    resources = sandbox_resources(sandbox, root / "run")
    resources["storage"] = StorageResource(backend="local", local_root=str(home))
    resources["ledger"] = LedgerResource(database_url=url)
    assert materialize_range(all_assets, resources, instance, DAY1, DAY1).success
    env = sandbox_child_env(sandbox, ChildLayout.under(root / "cli"))
    return home, {**env, "CALLTEXTS_HOME": str(home), "CALLTEXTS_DATABASE_URL": url}


def _ledger_rows(url: str) -> int:
    ledger = Ledger(url)
    try:
        return ledger.count_rows()
    finally:
        ledger.dispose()


def test_restore_refuses_a_damaged_backup_naming_what_is_wrong_and_touches_nothing(
    sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance, ledger_url: str | None
) -> None:
    home, env = _exported_home(sandbox, tmp_path, instance, ledger_url)
    made = _cli(env, "backup", str(tmp_path / "backups"))
    assert made.returncode == 0, made.stderr
    [backup_folder] = (tmp_path / "backups").iterdir()
    files = sorted(p for p in (backup_folder / "storage").rglob("*") if p.is_file())
    assert len(files) >= 5
    for gone in files[:3]:
        gone.unlink()
    files[3].write_bytes(files[3].read_bytes()[:10])
    before, rows = _home_files(home), _ledger_rows(env["CALLTEXTS_DATABASE_URL"])

    said = _one_line(_cli(env, "restore", str(backup_folder), "--force"))

    assert "does not match its manifest, nothing was restored" in said
    assert "3 files missing" in said and "1 of another size" in said
    assert files[3].relative_to(backup_folder).as_posix() in said
    assert _home_files(home) == before
    assert _ledger_rows(env["CALLTEXTS_DATABASE_URL"]) == rows


def _wal_rows_then_killed(ledger_file: Path, rows: int) -> None:
    """`rows` more calls committed into the ledger's WAL by a process killed before any
    checkpoint: the -wal file stays beside the ledger, as after a crash."""
    script = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
        "row = conn.execute('SELECT * FROM call_records LIMIT 1').fetchone()\n"
        "names = [d[0] for d in conn.execute('SELECT * FROM call_records LIMIT 1').description]\n"
        f"for n in range({rows}):\n"
        "    values = dict(zip(names, row), id=None, call_id=f'stale-{os.getpid()}-{n}')\n"
        "    marks = ','.join('?' * len(values))\n"
        "    conn.execute(f'INSERT INTO call_records ({\",\".join(values)}) VALUES ({marks})',"
        " list(values.values()))\n"
        "conn.commit()\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(ledger_file)], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert ledger_file.with_name("ledger.sqlite-wal").stat().st_size > 0


def test_restore_force_replaces_the_ledger_and_leaves_no_row_of_the_old_wal(
    sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    home, env = _exported_home(sandbox, tmp_path, instance, None)
    assert _cli(env, "backup", str(tmp_path / "backups")).returncode == 0
    [backup_folder] = (tmp_path / "backups").iterdir()
    backed_up = _ledger_rows(env["CALLTEXTS_DATABASE_URL"])
    _wal_rows_then_killed(home / "ledger.sqlite", 50)
    assert _ledger_rows(env["CALLTEXTS_DATABASE_URL"]) == backed_up + 50
    _wal_rows_then_killed(home / "ledger.sqlite", 50)  # the WAL holds rows again

    done = _cli(env, "restore", str(backup_folder), "--force")

    assert done.returncode == 0, done.stderr
    assert _ledger_rows(env["CALLTEXTS_DATABASE_URL"]) == backed_up


def test_a_restore_killed_half_way_leaves_the_old_home_intact(
    sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    home, env = _exported_home(sandbox, tmp_path, instance, None)
    filler = home / "exports" / "filler"  # enough bytes for the restore to take a while
    filler.mkdir()
    for n in range(400):
        (filler / f"part_{n:03}.bin").write_bytes(os.urandom(256 * 1024))
    assert _cli(env, "backup", str(tmp_path / "backups")).returncode == 0
    [backup_folder] = (tmp_path / "backups").iterdir()
    shutil.rmtree(filler)
    (home / "exports" / "written-after-the-backup.txt").write_text("newer")
    before, rows = _home_files(home), _ledger_rows(env["CALLTEXTS_DATABASE_URL"])

    command = [sys.executable, "-m", "calltexts_assets.ops.cli", "restore", str(backup_folder)]
    child = subprocess.Popen([*command, "--force"], env=env, cwd=REPO)

    def restored_files() -> int:
        places = [*tmp_path.glob(".home.restoring-*"), filler]
        return sum(1 for place in places for p in place.rglob("*.bin"))

    deadline = time.monotonic() + 120
    while restored_files() < 20:
        assert child.poll() is None, "the restore ended before the kill point"
        assert time.monotonic() < deadline, "the restore never started copying"
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL

    assert _home_files(home) == before
    assert _ledger_rows(env["CALLTEXTS_DATABASE_URL"]) == rows
    # Restored again to its end: the backup's home, the half-made one gone.
    done = _cli(env, "restore", str(backup_folder), "--force")
    assert done.returncode == 0, done.stderr
    assert len(list(filler.glob("*.bin"))) == 400
    assert not (home / "exports" / "written-after-the-backup.txt").exists()
    assert not list(tmp_path.glob(".home.restoring-*"))
