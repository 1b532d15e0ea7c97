"""The order a stage takes up the calls (state/schedule.py): counts and order, no timing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

import pytest

from calltexts_assets.state.ledger import CallRecord
from calltexts_assets.state.schedule import (
    DAY_ORDER,
    LONGEST_FIRST,
    call_seconds,
    in_order,
    longest_first,
)


def record(
    call_id: str, duration: int, *, day: str = "2026-11-01", audio: float | None = None
) -> CallRecord:
    return CallRecord(
        run_id=day,
        call_id=call_id,
        record_id="",
        started_at=f"{day}T10:00:00+03:00",
        call_type=1,
        direction="in",
        phone_from="",
        phone_to="",
        portal_user_id="1",
        duration_sec=duration,
        recording_url=None,
        audio_path=None,
        audio_bytes=None,
        checksum=None,
        audio_duration_sec=audio,
        transcript_path=None,
        language=None,
        model=None,
        stt_duration_sec=None,
        cost=None,
        summary_path=None,
        tags=None,
        status="listed",
        error_code=None,
        error_message=None,
        attempts=0,
        dagster_run_id=None,
    )


# Two days in the ledger's order; a long call late on the second day, ties across days.
PERIOD = [
    record("a", 30, day="2026-11-01"),
    record("b", 300, day="2026-11-01"),
    record("c", 30, day="2026-11-01"),
    record("d", 5, day="2026-11-02"),
    record("e", 1200, day="2026-11-02"),
    record("f", 300, day="2026-11-02"),
]


def ids(records: Iterable[CallRecord]) -> list[str]:
    return [r.call_id for r in records]


def test_longest_first_sorts_by_duration_and_keeps_the_day_order_among_equals() -> None:
    assert ids(longest_first(PERIOD)) == ["e", "b", "f", "a", "c", "d"]


def test_every_call_comes_once_in_either_order() -> None:
    for order in (LONGEST_FIRST, DAY_ORDER):
        assert sorted(ids(in_order(PERIOD, order))) == sorted(ids(PERIOD))
    assert ids(in_order(PERIOD, DAY_ORDER)) == ids(PERIOD)


def test_the_stored_recordings_length_wins_over_the_listings() -> None:
    # The listing said 10 s, the recording holds 900 s (a call whose row was cut short).
    late = replace(record("g", 10), audio_duration_sec=900.0)
    assert call_seconds(late) == 900.0
    assert ids(longest_first([*PERIOD, late]))[:2] == ["e", "g"]


def test_nothing_is_read_before_the_first_call_is_asked_for() -> None:
    reads: list[str] = []

    def source() -> Iterator[CallRecord]:
        for r in PERIOD:
            reads.append(r.call_id)
            yield r

    ordered = in_order(source(), LONGEST_FIRST)
    assert reads == []  # a sweep chained after a stream reads the ledger when it gets there
    assert next(ordered).call_id == "e"
    assert len(reads) == len(PERIOD)  # sorting needs them all


def test_an_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError, match="call order"):
        list(in_order(PERIOD, "random"))


def test_the_settings_choices_are_the_schedules() -> None:
    from calltexts_assets import settings

    assert settings.CALL_ORDERS == (LONGEST_FIRST, DAY_ORDER)
