"""What a period will cost before anything is spent: its calls as Bitrix24 lists them,
billed in the model's unit (per second, or per started minute), less what the ledger already
has transcribed. Minutes shown are the requirements' formula (rounded up per call)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from calltexts_assets.billing.cost import (
    MINUTE,
    billable_minutes,
    billed_seconds_of_request,
    format_rub,
    format_usd,
    seconds_cost_usd,
    to_rub,
)
from calltexts_assets.listing.tally import Listing


@dataclass(frozen=True)
class Estimate:
    period_from: date
    period_to: date
    calls: int
    with_recording: int
    billable_minutes: int
    cost_usd: Decimal
    done_calls: int  # already transcribed: not paid again
    done_minutes: int
    left_calls: int
    left_minutes: int
    left_cost_usd: Decimal
    usd_rub_rate: Decimal
    unit: str = MINUTE  # how the costs are billed; minutes are rounded up per call

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": {"from": self.period_from.isoformat(), "to": self.period_to.isoformat()},
            "calls": self.calls,
            "calls_with_recording": self.with_recording,
            "billable_minutes": self.billable_minutes,
            "cost_usd": format_usd(self.cost_usd),
            "cost_rub": format_rub(to_rub(self.cost_usd, self.usd_rub_rate)),
            "billing_unit": self.unit,
            "already_transcribed": {"calls": self.done_calls, "minutes": self.done_minutes},
            "left_to_pay": {
                "calls": self.left_calls,
                "minutes": self.left_minutes,
                "cost_usd": format_usd(self.left_cost_usd),
                "cost_rub": format_rub(to_rub(self.left_cost_usd, self.usd_rub_rate)),
            },
        }

    def lines(self) -> list[str]:
        rub = format_rub(to_rub(self.cost_usd, self.usd_rub_rate))
        left_rub = format_rub(to_rub(self.left_cost_usd, self.usd_rub_rate))
        return [
            f"Period {self.period_from} .. {self.period_to}: {self.calls} calls, "
            f"{self.with_recording} with a recording",
            f"Billable: ${format_usd(self.cost_usd)} ({rub} RUB, billed per {self.unit}); "
            f"{self.billable_minutes} min rounded up per call",
            f"Already transcribed: {self.done_calls} calls, {self.done_minutes} min",
            f"Left to pay: {self.left_calls} calls, {self.left_minutes} min = "
            f"${format_usd(self.left_cost_usd)} ({left_rub} RUB)",
        ]


def estimate(
    batches: Iterable[Iterable[dict[str, Any]]],
    transcribed: set[tuple[str, str]],
    *,
    period_from: date,
    period_to: date,
    price_per_minute: float | Decimal,
    usd_rub_rate: float | Decimal,
    unit: str = MINUTE,
) -> Estimate:
    """`batches`: the statistic rows as the client lists them; `transcribed`: (call id,
    record id) of the calls the ledger has transcribed."""
    listing = Listing()
    minutes = done_calls = done_minutes = left_calls = left_minutes = 0
    with_recording = seconds = left_seconds = 0
    for rows in batches:
        calls, _invalid = listing.add(rows)
        for call in calls:
            if not call.has_recording:
                continue
            with_recording += 1
            billed = billable_minutes(call.duration_sec)
            billed_sec = billed_seconds_of_request(call.duration_sec, unit)
            minutes, seconds = minutes + billed, seconds + billed_sec
            if (call.call_id, call.record_id) in transcribed:
                done_calls, done_minutes = done_calls + 1, done_minutes + billed
            else:
                left_calls, left_minutes = left_calls + 1, left_minutes + billed
                left_seconds += billed_sec
    return Estimate(
        period_from=period_from,
        period_to=period_to,
        calls=listing.calls,
        with_recording=with_recording,
        billable_minutes=minutes,
        cost_usd=seconds_cost_usd(seconds, price_per_minute),
        done_calls=done_calls,
        done_minutes=done_minutes,
        left_calls=left_calls,
        left_minutes=left_minutes,
        left_cost_usd=seconds_cost_usd(left_seconds, price_per_minute),
        usd_rub_rate=Decimal(str(usd_rub_rate)),
        unit=unit,
    )
