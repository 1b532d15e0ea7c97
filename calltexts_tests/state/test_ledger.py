"""The ledger on SQLite and on the real PostgreSQL: idempotent listing, progress kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from calltexts_assets.listing.calls import call_from_row
from calltexts_assets.state.ledger import Ledger, Status, create_tables, metadata
from calltexts_tests.support.databases import postgres_schema

DAY = "2026-11-24"


def _row(n: int, **changes: object) -> dict[str, object]:
    return {
        "ID": str(n),
        "CALL_ID": f"call.{n}",
        "CALL_TYPE": "2",
        "CALL_DURATION": "61",
        "CALL_START_DATE": f"{DAY}T10:00:{n:02d}+03:00",
        "PHONE_NUMBER": "+79991234567",
        "PORTAL_NUMBER": "+74950000000",
        "PORTAL_USER_ID": "5",
        "CALL_RECORD_URL": f"https://portal.example/rec/{n}.mp3",
        "RECORD_FILE_ID": str(1000 + n),
        **changes,
    }


@contextmanager
def fresh_url(backend: str, sqlite_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{sqlite_path}"
    else:
        with postgres_schema("race") as url:
            yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        db = Ledger(f"sqlite:///{tmp_path / 'nested' / 'ledger.db'}")
        yield db
        db.dispose()
        return
    with postgres_schema("ledger") as url:
        db = Ledger(url)
        yield db
        db.dispose()


def test_relisting_adds_no_rows_and_keeps_progress(ledger: Ledger) -> None:
    calls = [call_from_row(_row(n)) for n in range(1, 4)]
    assert ledger.upsert_listed(DAY, calls) == 3
    key = (DAY, "call.1", "1001")
    ledger.update(key, status=Status.TRANSCRIBED, transcript_path="t.txt", attempts=2)
    changed = [call_from_row(_row(1, CALL_DURATION="62")), *calls[1:]]
    ledger.upsert_listed(DAY, changed)
    assert ledger.count_rows() == 3
    record = ledger.record(key)
    assert record is not None
    assert (record.status, record.transcript_path, record.attempts) == ("transcribed", "t.txt", 2)
    assert record.duration_sec == 62  # Bitrix24's view is refreshed


def test_call_without_recording_is_listed_as_such(ledger: Ledger) -> None:
    call = call_from_row(_row(1, CALL_RECORD_URL="", RECORD_FILE_ID=""))
    ledger.upsert_listed(DAY, [call])
    [record] = ledger.records([DAY])
    assert (record.status, record.record_id) == (Status.NO_RECORDING, "")


def test_unique_key_is_enforced_by_the_database(ledger: Ledger) -> None:
    from calltexts_assets.state.ledger import call_records

    ledger.upsert_listed(DAY, [call_from_row(_row(1))])
    row = {
        "run_id": DAY, "call_id": "call.1", "record_id": "1001", "started_at": "",
        "call_type": 2, "direction": "", "phone_from": "", "phone_to": "",
        "portal_user_id": "", "duration_sec": 0, "status": "listed", "attempts": 0,
    }  # fmt: skip
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
        conn.execute(sa.insert(call_records).values(**row))


def test_update_rejects_unknown_fields_and_unknown_rows(ledger: Ledger) -> None:
    ledger.upsert_listed(DAY, [call_from_row(_row(1))])
    with pytest.raises(ValueError, match="unknown ledger fields"):
        ledger.update((DAY, "call.1", "1001"), colour="red")
    with pytest.raises(KeyError):
        ledger.update((DAY, "nope", ""), status=Status.TRANSCRIBED)


def test_exports_are_one_row_per_day(ledger: Ledger) -> None:
    ledger.start_export(DAY, DAY, DAY, actor="a", dagster_run_id="r1")
    ledger.start_export(DAY, DAY, DAY, actor="b", dagster_run_id="r2")
    ledger.finish_export(DAY, "success")
    export = ledger.export(DAY)
    assert export is not None
    assert (export["actor"], export["dagster_run_id"], export["status"]) == ("b", "r2", "success")


def test_days_are_read_one_at_a_time_and_see_updates(ledger: Ledger) -> None:
    other = "2026-11-25"
    ledger.upsert_listed(DAY, [call_from_row(_row(n)) for n in (3, 1, 2)])
    ledger.upsert_listed(other, [call_from_row(_row(n, CALL_ID=f"late.{n}")) for n in (5, 4)])
    days = ledger.days([DAY, other])
    first = next(days)
    assert [r.call_id for r in first] == ["call.1", "call.2", "call.3"]
    ledger.update((other, "late.4", "1004"), status=Status.DOWNLOADED)
    (second,) = list(days)
    assert [(r.call_id, r.status) for r in second] == [
        ("late.4", Status.DOWNLOADED),
        ("late.5", Status.LISTED),
    ]
    assert [r.call_id for r in ledger.iter_records([other, DAY])] == [
        "late.4", "late.5", "call.1", "call.2", "call.3",
    ]  # fmt: skip


def test_totals_are_counted_by_the_database(ledger: Ledger) -> None:
    ledger.upsert_listed(DAY, [call_from_row(_row(n)) for n in range(1, 5)])
    ledger.upsert_listed("2026-11-01", [call_from_row(_row(9))])  # another day: not counted
    done = {"status": Status.TRANSCRIBED, "audio_path": "a.mp3"}
    ledger.update((DAY, "call.1", "1001"), **done, stt_duration_sec=61.5, cost=0.012, language="ru")
    ledger.update((DAY, "call.2", "1002"), **done, stt_duration_sec=30.0, cost=0.006, language="en")
    ledger.update((DAY, "call.3", "1003"), status=Status.TRANSCRIPTION_ERROR, audio_path="b.mp3")
    totals = ledger.totals([DAY])
    assert totals.statuses == {Status.TRANSCRIBED: 2, Status.TRANSCRIPTION_ERROR: 1, "listed": 1}
    assert totals.count(Status.MISSING_AUDIO) == 0
    assert totals.with_audio == 3
    assert totals.transcribed_seconds == pytest.approx(91.5)
    assert totals.transcribed_cost == pytest.approx(0.018)
    assert totals.languages == ["en", "ru"]


def test_a_failed_statement_never_quotes_row_values(tmp_path: Path) -> None:
    """Its error text reaches logs and the event log: no caller's number in it."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.upsert_listed(DAY, [call_from_row(_row(1))])
    with pytest.raises(sa.exc.IntegrityError) as info:
        ledger.update((DAY, "call.1", "1001"), status=None, phone_from="+79991234567")
    assert "+79991234567" not in str(info.value)
    assert "hide_parameters" in str(info.value)


def test_one_claim_wins_among_racing_runs(ledger: Ledger) -> None:
    """Ten runs claim the same calls at once (separate engines: separate connections, as
    separate processes have): each call has exactly one winner."""
    ledger.upsert_listed(DAY, [call_from_row(_row(n)) for n in range(1, 6)])
    keys = [(DAY, f"call.{n}", str(1000 + n)) for n in range(1, 6)]
    until = datetime.now(UTC) + timedelta(minutes=5)
    rivals = [Ledger(ledger.url) for _ in range(10)]
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            wins = list(
                pool.map(lambda n: [rivals[n].claim(k, f"run-{n}", until) for k in keys], range(10))
            )
    finally:
        for rival in rivals:
            rival.dispose()
    assert [sum(won[i] for won in wins) for i in range(len(keys))] == [1] * len(keys)
    assert len(ledger.claimants()) <= len(keys)
    winner = next(n for n in range(10) if wins[n][0])
    assert not ledger.claim(keys[0], "late-run", until)
    ledger.release(keys[0], f"run-{winner}")
    assert ledger.claim(keys[0], "late-run", until)


def test_an_update_may_end_its_own_claim_in_the_same_commit(ledger: Ledger) -> None:
    """A step's outcome and the end of its claim are one statement; anyone else's claim
    (taken over after this one expired) stays."""
    ledger.upsert_listed(DAY, [call_from_row(_row(n)) for n in (1, 2)])
    mine, theirs = (DAY, "call.1", "1001"), (DAY, "call.2", "1002")
    until = datetime.now(UTC) + timedelta(minutes=5)
    assert ledger.claim(mine, "run-a", until) and ledger.claim(theirs, "run-b", until)
    ledger.update(mine, release_claim_of="run-a", error_code="x")
    ledger.update(theirs, release_claim_of="run-a", error_code="y")
    assert ledger.claimants() == {"run-b"}
    first, second = ledger.record(mine), ledger.record(theirs)
    assert first is not None and first.error_code == "x"
    assert second is not None and second.error_code == "y"
    assert not ledger.claim(theirs, "run-c", until) and ledger.claim(mine, "run-c", until)


def test_a_recording_attached_after_the_listing_replaces_the_no_recording_row(
    ledger: Ledger,
) -> None:
    ledger.upsert_listed(DAY, [call_from_row(_row(1, CALL_RECORD_URL=None, RECORD_FILE_ID=None))])
    [before] = ledger.records([DAY])
    assert (before.status, before.record_id) == (Status.NO_RECORDING, "")
    # attachRecord ran later: the next listing has a Drive file id and no link.
    ledger.upsert_listed(DAY, [call_from_row(_row(1, CALL_RECORD_URL=None, RECORD_FILE_ID=9079))])
    [after] = ledger.records([DAY])
    assert (after.status, after.record_id, after.recording_url) == (Status.LISTED, "9079", None)
    assert after.stat_id == 1


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_processes_starting_together_all_find_the_tables(tmp_path: Path, backend: str) -> None:
    """Two runs and the API start at once on a fresh ledger: each may lose the race for a
    different table; none may fail (found by the two-runs fault test under load; the old
    single retry failed about one race in ten here)."""

    def create(engine: sa.Engine, start: threading.Barrier) -> None:
        start.wait()
        create_tables(metadata, engine)

    for attempt in range(10):
        with fresh_url(backend, tmp_path / f"race{attempt}.sqlite") as url:
            engines = [sa.create_engine(url) for _ in range(6)]
            start = threading.Barrier(len(engines))
            with ThreadPoolExecutor(len(engines)) as pool:
                list(pool.map(create, engines, [start] * len(engines)))
            assert set(metadata.tables) <= set(sa.inspect(engines[0]).get_table_names())
            for engine in engines:
                engine.dispose()
