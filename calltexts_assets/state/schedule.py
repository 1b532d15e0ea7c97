"""The order in which a stage takes up the period's calls.

The STT's time per call grows with its audio, and the run lasts until the last request
answers: calls sent in day order may leave a long call started last, running alone while
the other slots sit idle. Longest first (LPT scheduling) ends the run on the short calls,
which keep every slot busy to the end; its makespan is within 4/3 of the optimum, and in
practice (many short calls after a few long ones) at the bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from calltexts_assets.state.ledger import CallRecord

LONGEST_FIRST = "longest_first"
DAY_ORDER = "day"
CALL_ORDERS = (LONGEST_FIRST, DAY_ORDER)


def call_seconds(record: CallRecord) -> float:
    """The call's audio length: the stored recording's when known, else the listing's."""
    if record.audio_duration_sec:
        return float(record.audio_duration_sec)
    return float(record.duration_sec or 0)


def longest_first(records: Iterable[CallRecord]) -> list[CallRecord]:
    """`records` by audio length, longest first; calls of equal length keep their order
    (day, then start time)."""
    return sorted(records, key=call_seconds, reverse=True)


def in_order(records: Iterable[CallRecord], order: str) -> Iterator[CallRecord]:
    """`records` in `order` (one of `CALL_ORDERS`). Lazy: nothing is read until the first
    call is asked for, so a sweep chained after a stream reads the ledger when it gets
    there; longest first then reads the whole period at once (to sort it), day order a day
    at a time."""
    if order not in CALL_ORDERS:
        raise ValueError(f"call order must be one of {CALL_ORDERS}, got {order!r}")
    yield from longest_first(records) if order == LONGEST_FIRST else records
