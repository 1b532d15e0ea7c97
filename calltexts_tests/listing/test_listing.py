"""Listing: what call_list keeps of the statistic rows, batch by batch."""

from __future__ import annotations

from calltexts_assets.listing.tally import Listing
from calltexts_assets.reporting.cost import forecast


def _row(n: int, *, day: str = "2026-11-24", call_id: str | None = None, **changes: object):
    return {
        "ID": str(n),
        "CALL_ID": call_id or f"call.{n}",
        "CALL_TYPE": "2",
        "CALL_DURATION": str(30 * n),
        "CALL_START_DATE": f"{day}T10:00:{n:02d}+03:00",
        "PHONE_NUMBER": "+79991234567",
        "PORTAL_NUMBER": "+74950000000",
        "PORTAL_USER_ID": "5",
        "CALL_RECORD_URL": f"https://portal.example/rec/{n}.mp3",
        "RECORD_FILE_ID": str(1000 + n),
        **changes,
    }


def test_each_call_once_across_batches_first_occurrence_wins() -> None:
    listing = Listing()
    first, _ = listing.add([_row(1), _row(2)])
    again, _ = listing.add([_row(1, CALL_DURATION="999"), _row(3, day="2026-11-25")])
    assert [c.call_id for c in first] == ["call.1", "call.2"]
    assert [c.call_id for c in again] == ["call.3"]
    assert (listing.calls, listing.seconds) == (3, 30 + 60 + 90)


def test_invalid_rows_get_a_placeholder_and_a_reason() -> None:
    listing = Listing()
    calls, invalid = listing.add([_row(1, call_id="../../etc/passwd"), _row(2)])
    assert [c.call_id for c in calls] == ["call.2"]
    ((placeholder, reason),) = invalid
    assert placeholder.startswith("invalid-") and "/" not in placeholder
    assert reason
    assert (listing.calls, listing.rejected) == (1, 1)


def test_forecast_counts_calls_with_a_recording_only() -> None:
    listing = Listing()
    listing.add([_row(1), _row(2, CALL_RECORD_URL="", RECORD_FILE_ID="")])
    assert list(listing.recording_durations) == [30]
    assert forecast(listing.recording_durations).minutes == 1


def test_fingerprint_ignores_order_and_batching_but_not_content() -> None:
    rows = [_row(n) for n in range(1, 6)]
    one, two, changed = Listing(), Listing(), Listing()
    one.add(rows)
    two.add(rows[3:])
    two.add(list(reversed(rows[:3])))
    changed.add([*rows[:4], _row(5, CALL_DURATION="151")])
    assert one.fingerprint == two.fingerprint
    assert one.fingerprint != changed.fingerprint
    assert len(one.fingerprint) == 32
