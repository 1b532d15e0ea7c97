"""The fault suite, part two: runs that must not hang, pay twice or report a failure as a
success (issue: faults and hostile input)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import serialize_value

from calltexts_assets.assets import all_assets
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.state.ledger import Ledger, Status
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.child_run import ChildLayout, run_child, start_child
from calltexts_tests.support.databases import postgres_schema
from calltexts_tests.support.sandboxed import materialize_range, sandbox_child_env

REPO = Path(__file__).resolve().parents[2]
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
    assert child.wait(timeout=10) == -signal.SIGKILL


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
    code = run_child(date(2026, 11, 1), date(2026, 11, 2), env, log_path=log, timeout=120)
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
    codes = [child.wait(timeout=180) for child in children]
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
