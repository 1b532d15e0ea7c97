"""The cost of a period before anything is spent, less what is already transcribed."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from calltexts_assets.listing.estimate import estimate


def _row(n: int, seconds: int, recorded: bool = True) -> dict[str, object]:
    return {
        "ID": str(n),
        "CALL_ID": f"c{n}",
        "CALL_TYPE": "2",
        "CALL_DURATION": str(seconds),
        "CALL_START_DATE": "2026-11-02T10:00:00+03:00",
        "CALL_RECORD_URL": f"https://rec.example/{n}.mp3" if recorded else "",
        "RECORD_FILE_ID": str(100 + n) if recorded else None,
    }


def test_minutes_are_billed_per_call_and_done_calls_are_not_paid_again() -> None:
    batches = [[_row(1, 61), _row(2, 60), _row(3, 1)], [_row(4, 0, recorded=False), _row(5, 130)]]
    result = estimate(
        batches,
        {("c2", "102")},  # already transcribed
        period_from=date(2026, 11, 2),
        period_to=date(2026, 11, 2),
        price_per_minute=0.006,
        usd_rub_rate=100,
    )
    assert (result.calls, result.with_recording) == (5, 4)
    assert result.billable_minutes == 2 + 1 + 1 + 3  # ceil per call, not of the sum
    assert (result.done_calls, result.done_minutes) == (1, 1)
    assert (result.left_calls, result.left_minutes) == (3, 6)
    assert result.left_cost_usd == Decimal("0.036")
    shown = result.as_dict()
    assert shown["cost_usd"] == "0.0420" and shown["cost_rub"] == "4.20"
    assert shown["left_to_pay"] == {
        "calls": 3, "minutes": 6, "cost_usd": "0.0360", "cost_rub": "3.60"
    }  # fmt: skip
