"""The audit journal: append-only rows and JSON lines, once per run, pruned after 365 days,
actors from run tags, nothing a phone number could hide in."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from calltexts_assets.state.audit import (
    AuditEvent,
    AuditJournal,
    audit_events,
    run_actor,
    run_started,
    since_start,
    table_lines,
)
from calltexts_assets.state.ledger import database_engine
from calltexts_tests.support.databases import postgres_schema

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
RANGE = {
    "dagster/asset_partition_range_start": "2026-11-01",
    "dagster/asset_partition_range_end": "2026-11-03",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """The ledger's database: the SQLite file, or a scratch schema of the real PostgreSQL."""
    if request.param == "sqlite":
        engine = database_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        yield engine
        engine.dispose()
        return
    try:
        with postgres_schema("audit") as url:
            engine = database_engine(url)
            yield engine
            engine.dispose()
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL unreachable: {str(exc.orig).strip().splitlines()[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob("*.jsonl")) for line in p.open()]


def test_an_event_is_a_row_and_a_json_line(engine: sa.Engine, tmp_path: Path) -> None:
    journal = AuditJournal(engine, tmp_path / "logs", clock=lambda: NOW)
    event = AuditEvent(
        "export", "crm", "api", "202", client="10.1.2.3", run_id="r1", period_from="2026-11-01",
        period_to="2026-11-03", summaries=True, idempotency_key="k1",
    )  # fmt: skip
    assert journal.record(event)
    (stored,) = journal.since(NOW - timedelta(days=1))
    assert stored == AuditEvent(**{**event.__dict__, "at": NOW, "detail": {}})
    (line,) = _lines(tmp_path / "logs" / "audit")
    assert line["actor"] == "crm" and line["client"] == "10.1.2.3" and line["summaries"] is True
    assert (tmp_path / "logs" / "audit" / "audit_2026-12.jsonl").exists()


def test_a_run_is_journalled_once_however_many_processes_see_it(
    engine: sa.Engine, tmp_path: Path
) -> None:
    journal = AuditJournal(engine, tmp_path)
    event = AuditEvent("run_started", "u", "ui", "started", run_id="r1")
    assert journal.record(event, once="run:r1")
    assert not journal.record(event, once="run:r1")
    assert len(journal.since(datetime(2000, 1, 1, tzinfo=UTC))) == 1
    assert len(_lines(tmp_path / "audit")) == 1


def test_free_text_is_scrubbed_of_phone_numbers(engine: sa.Engine, tmp_path: Path) -> None:
    journal = AuditJournal(engine, tmp_path)
    journal.record(
        AuditEvent("backup", "op +7 916 123-45-67", "cli", "refused 89161234567",
                   detail={"note": "call +79161234567", "phone": 79161234567})
    )  # fmt: skip
    with engine.connect() as conn:
        dumped = str(conn.execute(sa.select(audit_events)).all())
    written = "".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
    for text in (dumped, written):
        assert "1234567" not in text and "4567" in text  # masked, last four kept


def test_prune_deletes_what_is_older_than_365_days(engine: sa.Engine, tmp_path: Path) -> None:
    clock = [NOW - timedelta(days=400)]
    journal = AuditJournal(engine, tmp_path, clock=lambda: clock[0])
    journal.record(AuditEvent("backup", "u", "cli", "done"))
    clock[0] = NOW - timedelta(days=10)
    journal.record(AuditEvent("restore", "u", "cli", "done"))
    clock[0] = NOW
    assert journal.prune(dry_run=True) == 1
    assert len(journal.since(datetime(2000, 1, 1, tzinfo=UTC))) == 2
    assert journal.prune() == 1
    assert [e.event for e in journal.since(datetime(2000, 1, 1, tzinfo=UTC))] == ["restore"]
    assert [p.name for p in (tmp_path / "audit").glob("*.jsonl")] == ["audit_2026-11.jsonl"]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"actor": "calltexts run"}, ("cli", "alice")),
        ({"dagster/schedule_name": "daily_export"}, ("schedule", "daily_export")),
        ({"dagster/sensor_name": "s"}, ("sensor", "s")),
        ({"dagster/backfill": "abc"}, ("backfill", "alice")),
        ({}, ("ui", "alice")),
        ({"dagster/user": "bob@corp"}, ("ui", "bob@corp")),
    ],
)
def test_who_started_a_run(tags: dict[str, str], expected: tuple[str, str]) -> None:
    assert run_actor(tags, lambda: "alice") == expected


def test_runs_journalled_by_their_start() -> None:
    event = run_started("r1", {**RANGE, "actor": "calltexts run"}, lambda: "alice")
    assert event is not None
    assert (event.via, event.actor, event.period_from, event.period_to) == (
        "cli", "alice", "2026-11-01", "2026-11-03",
    )  # fmt: skip
    one_day = run_started("r2", {"dagster/partition": "2026-11-05"}, lambda: "a")
    assert one_day is not None and one_day.period_to == "2026-11-05"
    # the API journals its runs with the request; a run without a period exports nothing
    assert run_started("r3", {**RANGE, "calltexts/idempotency_key": "k"}) is None
    assert run_started("r4", {"actor": "calltexts retention"}) is None


def test_since_and_the_table() -> None:
    assert since_start("7d", NOW) == NOW - timedelta(days=7)
    assert since_start("12h", NOW) == NOW - timedelta(hours=12)
    assert since_start("2026-12-01", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="--since"):
        since_start("a week", NOW)
    event = AuditEvent(
        "export",
        "crm",
        "api",
        "202",
        run_id="0123456789abcdef",
        at=NOW,
        period_from="2026-11-01",
        period_to="2026-11-03",
        summaries=True,
    )
    bare = AuditEvent("restore", "u", "cli", "done", at=NOW, detail={"files": 3})
    header, row, other = table_lines([event, bare])
    assert other.index("done files=3") == row.rindex("202")  # the outcome column lines up
    assert header.split() == [
        "at",
        "event",
        "actor",
        "via",
        "client",
        "run",
        "period",
        "key",
        "outcome",
    ]
    assert "2026-12-07 06:00:00" in row and "01234567" in row
    assert "2026-11-01..2026-11-03 +summaries" in row and row.endswith("202")


def test_reading_creates_nothing(engine: sa.Engine) -> None:
    """`calltexts audit` on a database a backup is yet to be restored into leaves it empty."""
    assert AuditJournal(engine, None, create=False).since(NOW - timedelta(days=7)) == []
    assert not sa.inspect(engine).has_table("audit_events")
