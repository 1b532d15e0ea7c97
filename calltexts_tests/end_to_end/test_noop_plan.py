"""`calltexts run` of a period that is done launches no Dagster run and writes no event; a
change in one day runs that day alone, with its checks, and makes the period's files again
(issue #26). Counted in the instance's runs and event log, never timed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from calltexts_assets.files.storage_keys import qa_sample_key, registry_key, report_key
from calltexts_assets.state.ledger import Ledger, Status
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.child_run import ChildLayout
from calltexts_tests.support.sandboxed import sandbox_child_env

DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)
ASSETS = ("call_list", "raw_audio", "transcripts", "registry_csv", "cost_report", "qa_sample")
REGISTRY = registry_key(DAY1, DAY2)


@pytest.fixture
def home(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    layout = ChildLayout.under(tmp_path)
    for name, value in sandbox_child_env(sandbox, layout).items():
        monkeypatch.setenv(name, value)
    yield layout.home


def _run(first: date = DAY1, last: date = DAY2) -> tuple[int, str]:
    from calltexts_assets.ops.export_run import run_export

    out = io.StringIO()
    code = run_export(first, last, out=out)
    return code, out.getvalue()


def _events() -> int:
    """Every event the instance holds, of every run."""
    with dg.DagsterInstance.get() as instance:
        return sum(len(instance.all_logs(run.run_id)) for run in instance.get_runs())


def _runs() -> list[dg.DagsterRun]:
    with dg.DagsterInstance.get() as instance:
        return list(instance.get_runs())  # newest first


def _materialized(run_id: str) -> dict[str, set[str]]:
    """Each asset's partitions a run materialized."""
    found: dict[str, set[str]] = {}
    with dg.DagsterInstance.get() as instance:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            event = entry.asset_materialization
            assert event is not None
            found.setdefault(event.asset_key.to_user_string(), set()).add(event.partition)
    return found


def _checks(run_id: str) -> dict[str, bool]:
    with dg.DagsterInstance.get() as instance:
        entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return {
        e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
        for e in entries
        if e.dagster_event is not None
    }


def test_a_rerun_of_a_done_period_launches_no_run_and_writes_no_event(
    sandbox: Sandbox, home: Path
) -> None:
    code, first = _run()
    assert code == 0, first
    runs, events = len(_runs()), _events()
    assert runs == 1 and events > 0
    stt = sandbox.stt.stats()["requests"]
    listings = sandbox.portal.request_count("batch")

    code, again = _run()
    assert code == 0, again
    # Bitrix24 was asked for the period's calls: a new call would have been found.
    assert sandbox.portal.request_count("batch") > listings
    assert sandbox.stt.stats()["requests"] == stt
    # No Dagster run, not one event: the partitions' materializations and checks stand.
    assert (len(_runs()), _events()) == (runs, events)
    said = again.splitlines()
    assert any(line.startswith("No run launched: nothing changed") for line in said), said
    assert any(line.startswith("Nothing new: every call of the period") for line in said)
    assert any(line.startswith("Registry: ") for line in said), said

    # A period of one day more or less is no different: nothing is written either way.
    code, one_day = _run(DAY2, DAY2)
    assert code == 0 and "No run launched" not in one_day  # its own files were never made
    runs, events = len(_runs()), _events()
    code, one_day = _run(DAY2, DAY2)
    assert code == 0 and "No run launched" in one_day, one_day
    assert (len(_runs()), _events()) == (runs, events)


def test_a_new_call_on_one_day_runs_that_day_alone_and_remakes_the_periods_files(
    sandbox: Sandbox, home: Path
) -> None:
    assert _run()[0] == 0
    registry = home / REGISTRY
    rows = sandbox.portal.rows
    seed = next(r for r in rows if r["CALL_START_DATE"].startswith(DAY2.isoformat()))
    new = {
        **seed,
        "ID": str(max(int(r["ID"]) for r in rows) + 1),
        "CALL_ID": "noop-plan-new-call",
        "CALL_RECORD_URL": None,
        "RECORD_FILE_ID": None,
    }
    sandbox.portal.set_rows([*rows, new])

    code, out = _run()
    assert code == 0, out
    assert f"{DAY2.isoformat()} (Bitrix24 lists other calls)" in out, out
    run = _runs()[0]
    assert run.tags["dagster/asset_partition_range_start"] == DAY2.isoformat()
    assert run.tags["dagster/asset_partition_range_end"] == DAY2.isoformat()
    materialized = _materialized(run.run_id)
    # Every asset of the changed day, and nothing of the day that did not change.
    assert {name: materialized.get(name) for name in ASSETS} == {
        name: {DAY2.isoformat()} for name in ASSETS
    }
    checks = _checks(run.run_id)
    assert {"coverage", "duplicate_transcripts", "registry_complete", "qa_sample"} <= set(checks)
    assert all(checks.values()), checks
    # The whole period's registry, made again: the new call is in it.
    assert "noop-plan-new-call" in registry.read_text(encoding="utf-8-sig")
    ledger = Ledger(f"sqlite:///{home / 'ledger.sqlite'}")
    for key in (REGISTRY, report_key(DAY1, DAY2, "md"), qa_sample_key(DAY1, DAY2)):
        kept = ledger.deliverable(key)
        assert kept is not None and kept["dagster_run_id"] == run.run_id, key
    assert f"{DAY1.isoformat()}_{DAY2.isoformat()}: " in out  # the period's figures
    # And then it is done again.
    runs = len(_runs())
    code, out = _run()
    assert code == 0 and "No run launched" in out and len(_runs()) == runs, out


def test_a_deleted_transcript_or_an_edited_registry_is_made_again(
    sandbox: Sandbox, home: Path
) -> None:
    assert _run()[0] == 0
    ledger = Ledger(f"sqlite:///{home / 'ledger.sqlite'}")
    [victim, *_] = [r for r in ledger.records([DAY1.isoformat()]) if r.status == Status.TRANSCRIBED]
    assert victim.transcript_path
    transcript = home / victim.transcript_path
    transcript.unlink()
    stt = sandbox.stt.stats()["requests"]

    code, out = _run()
    assert code == 0, out
    assert transcript.exists()  # from the stored answer: nothing sent again
    assert sandbox.stt.stats()["requests"] == stt
    run = _runs()[0]
    assert _materialized(run.run_id)["transcripts"] == {DAY1.isoformat()}
    assert _checks(run.run_id)["duplicate_transcripts"]
    assert ledger.deliverable(REGISTRY)["dagster_run_id"] == run.run_id  # type: ignore[index]

    registry = home / REGISTRY
    made = registry.read_bytes()
    registry.write_bytes(made.replace(b";", b",", 3))
    code, out = _run()
    assert code == 0 and "registry" in out.lower(), out
    assert registry.read_bytes() == made  # the same rows, made again
    run = _runs()[0]
    # Only the period's files were out of date: only they are made, on the last day.
    assert _materialized(run.run_id) == {
        name: {DAY2.isoformat()} for name in ("registry_csv", "cost_report", "qa_sample")
    }
    assert _checks(run.run_id)["registry_complete"]
