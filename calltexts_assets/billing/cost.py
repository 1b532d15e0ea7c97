"""Transcription tariff arithmetic: billable minutes, USD and RUB, the pre-run forecast.

Rounding rules (the registry, the report and the cost check all rely on them):
- What is billed is each STT request: per started minute, `ceil(seconds / 60)`, on the
  seconds the service reports (`usage.seconds`), else the audio sent; 0 s costs nothing. A
  call sent whole in one request (the common case) thus costs `ceil(its minutes) x tariff`;
  a call cut into pieces costs the sum over its pieces, and a call sent per channel both
  channels: the registry shows what the service bills, not an estimate. Durations
  are first rounded to whole milliseconds, so float noise from summed durations
  (33.319 + 19.382 + 67.299 = 120.00000000000001) does not add a minute.
- Money is `Decimal`, computed exactly: prices and rates given as floats are read through
  `str()` (0.006 stays 0.006, not its binary expansion). Nothing is rounded per call.
- Rounding happens once, for display: USD to 4 places (tariffs go down to $0.003/min),
  RUB to 2 places (kopecks), both ROUND_HALF_UP. Totals are sums of exact values, rounded
  at the end, so a report total equals the sum of the registry's rows to the displayed place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

PRICE_PER_MINUTE_USD = 0.006  # whisper-1
USD_RUB_RATE = 100.0
USD_PLACES = 4
RUB_PLACES = 2


def _dec(value: float | int | str | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def billable_minutes(duration_sec: float) -> int:
    """Started minutes of a call: ceil(duration / 60); 0 s -> 0."""
    if duration_sec < 0 or math.isnan(duration_sec):
        raise ValueError(f"duration must be >= 0 s, got {duration_sec!r}")
    millis = round(duration_sec * 1000)
    return -(-millis // 60_000)


def call_cost_usd(
    duration_sec: float, price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD
) -> Decimal:
    """Exact cost of one call: billable minutes x tariff."""
    return billable_minutes(duration_sec) * _dec(price_per_minute)


def minutes_cost_usd(
    minutes: int, price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD
) -> Decimal:
    """Exact cost of billable minutes already rounded up per call."""
    return minutes * _dec(price_per_minute)


def requests_billable_minutes(seconds: Iterable[float]) -> int:
    """Started minutes summed over requests, each request rounded up on its own."""
    return sum(billable_minutes(s) for s in seconds)


def requests_cost_usd(
    seconds: Iterable[float], price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD
) -> Decimal:
    """Exact cost of a call's STT requests (`seconds`: what each is billed on)."""
    return requests_billable_minutes(seconds) * _dec(price_per_minute)


def encode_request_seconds(seconds: Sequence[float]) -> str:
    """The ledger's `stt_request_sec`: a JSON list, to the millisecond."""
    return json.dumps([round(s, 3) for s in seconds])


def decode_request_seconds(text: str | None) -> list[float] | None:
    """The billed seconds of each request of a call, None when the ledger row predates them."""
    if not text:
        return None
    try:
        values = json.loads(text)
    except ValueError:
        return None
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        return None
    return [float(v) for v in values]


def to_rub(usd: Decimal | float, rate: float | Decimal = USD_RUB_RATE) -> Decimal:
    """Exact RUB amount at `rate` RUB per USD (round with `round_rub` for display)."""
    return _dec(usd) * _dec(rate)


def round_usd(value: Decimal | float) -> Decimal:
    return _dec(value).quantize(Decimal(1).scaleb(-USD_PLACES), rounding=ROUND_HALF_UP)


def round_rub(value: Decimal | float) -> Decimal:
    return _dec(value).quantize(Decimal(1).scaleb(-RUB_PLACES), rounding=ROUND_HALF_UP)


def format_usd(value: Decimal | float) -> str:
    """Fixed 4-place form ("0.0180") used in the registry CSV and the report."""
    return f"{round_usd(value):.{USD_PLACES}f}"


def format_rub(value: Decimal | float) -> str:
    return f"{round_rub(value):.{RUB_PLACES}f}"


class HasDurations(Protocol):
    """What `billed_seconds` and `record_billable_minutes` read of a ledger row
    (`CallRecord` fits)."""

    @property
    def duration_sec(self) -> int: ...
    @property
    def audio_duration_sec(self) -> float | None: ...
    @property
    def stt_duration_sec(self) -> float | None: ...
    @property
    def stt_request_sec(self) -> str | None: ...


def billed_seconds(record: HasDurations) -> float:
    """The duration a call is billed on: what the STT reported (the audio it was sent),
    else the measured audio, else Bitrix24's duration (a call not yet downloaded)."""
    for value in (record.stt_duration_sec, record.audio_duration_sec):
        if value is not None:
            return float(value)
    return float(record.duration_sec)


def record_billable_minutes(record: HasDurations) -> int:
    """Minutes the service bills for a call: per request when the ledger recorded its
    requests, else (a row from before) the call's duration rounded up."""
    requests = decode_request_seconds(record.stt_request_sec)
    if requests is not None:
        return requests_billable_minutes(requests)
    return billable_minutes(billed_seconds(record))


@dataclass(frozen=True)
class Forecast:
    calls: int
    minutes: int  # billable minutes, summed per call
    cost_usd: Decimal  # exact
    cost_rub: Decimal  # exact


def forecast(
    durations_sec: Iterable[float],
    *,
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
    usd_rub_rate: float | Decimal = USD_RUB_RATE,
) -> Forecast:
    """Pre-run estimate from Bitrix24 durations of the calls that have a recording.

    Minutes are rounded up per call, as they will be billed, not over the sum. The
    durations are read once, as they come (a generator over the ledger is fine)."""
    calls = minutes = 0
    for duration in durations_sec:
        calls += 1
        minutes += billable_minutes(duration)
    usd = minutes_cost_usd(minutes, price_per_minute)
    return Forecast(calls=calls, minutes=minutes, cost_usd=usd, cost_rub=to_rub(usd, usd_rub_rate))
