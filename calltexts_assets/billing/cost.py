"""Transcription tariff arithmetic: what the service bills, USD and RUB, the forecast.

Rounding rules (the registry, the report and the cost check all rely on them):
- What is billed is each STT request, on the seconds the service reports (`usage.seconds`),
  else the audio sent; 0 s costs nothing. The unit is the model's (`clients/stt_models.py`,
  docs/specs/stt_wire.md §3.4): OpenAI's per-minute tariffs are metered in whole seconds
  (`SECOND`: the request's seconds rounded up x tariff / 60); a compatible server may bill
  per started minute (`MINUTE`: ceil(seconds / 60) x tariff, the requirements' formula),
  `STT_BILLING_UNIT`. A call cut into pieces costs the sum over its pieces, a call sent per
  channel both channels: the registry shows what the service bills, not an estimate.
  Durations are first rounded to whole milliseconds, so float noise from summed durations
  (33.319 + 19.382 + 67.299 = 120.00000000000001) does not add a second or a minute.
- The requirements' formula (minutes rounded up per call x tariff, `formula_*`) is kept
  beside the bill: the report shows both, labelled.
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
# How a request is billed: per second (OpenAI's transcription models, §3.4), per started
# minute (the requirements' formula; a compatible server's bill may be so).
SECOND, MINUTE = "second", "minute"
BILLING_UNITS = (SECOND, MINUTE)
USD_RUB_RATE = 100.0
USD_PLACES = 4
RUB_PLACES = 2


def _dec(value: float | int | str | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _millis(duration_sec: float) -> int:
    if duration_sec < 0 or math.isnan(duration_sec):
        raise ValueError(f"duration must be >= 0 s, got {duration_sec!r}")
    return round(duration_sec * 1000)


def billable_minutes(duration_sec: float) -> int:
    """Started minutes of a call: ceil(duration / 60); 0 s -> 0."""
    return -(-_millis(duration_sec) // 60_000)


def billed_seconds_of_request(duration_sec: float, unit: str = MINUTE) -> int:
    """The seconds one request is billed for: started seconds, or started minutes x 60."""
    if unit == MINUTE:
        return billable_minutes(duration_sec) * 60
    if unit != SECOND:
        raise ValueError(f"billing unit must be one of {BILLING_UNITS}, got {unit!r}")
    return -(-_millis(duration_sec) // 1000)


def seconds_cost_usd(
    seconds: int, price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD
) -> Decimal:
    """Exact cost of billed seconds at a per-minute tariff."""
    return seconds * _dec(price_per_minute) / 60


def call_cost_usd(
    duration_sec: float,
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
    unit: str = MINUTE,
) -> Decimal:
    """Exact cost of one call sent in one request, in the billing unit."""
    return seconds_cost_usd(billed_seconds_of_request(duration_sec, unit), price_per_minute)


def minutes_cost_usd(
    minutes: int, price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD
) -> Decimal:
    """Exact cost of billable minutes already rounded up per call."""
    return minutes * _dec(price_per_minute)


def requests_billed_seconds(seconds: Iterable[float], unit: str = MINUTE) -> int:
    """Billed seconds summed over requests, each request rounded up on its own."""
    return sum(billed_seconds_of_request(s, unit) for s in seconds)


def requests_cost_usd(
    seconds: Iterable[float],
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
    unit: str = MINUTE,
) -> Decimal:
    """Exact cost of a call's STT requests (`seconds`: what each is billed on)."""
    return seconds_cost_usd(requests_billed_seconds(seconds, unit), price_per_minute)


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
    """What `billed_seconds` and `record_billed_seconds` read of a ledger row
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


def record_billed_seconds(record: HasDurations, unit: str = MINUTE) -> int:
    """Seconds the service bills for a call, in `unit`: per request when the ledger recorded
    its requests, else (a row from before) the call's duration."""
    requests = decode_request_seconds(record.stt_request_sec)
    # [] is a call that sent nothing (no speech, a second of audio): billed nothing.
    return requests_billed_seconds([billed_seconds(record)] if requests is None else requests, unit)


def record_formula_minutes(record: HasDurations) -> int:
    """The requirements' formula: the call's minutes rounded up (per call, not per request)."""
    return billable_minutes(billed_seconds(record))


@dataclass(frozen=True)
class Forecast:
    calls: int
    minutes: int  # the requirements' formula: minutes rounded up per call
    cost_usd: Decimal  # exact, in the billing unit
    cost_rub: Decimal  # exact
    billed_seconds: int = 0  # in the billing unit, summed per call
    unit: str = MINUTE

    @property
    def billed_minutes(self) -> Decimal:
        return Decimal(self.billed_seconds) / 60


def forecast(
    durations_sec: Iterable[float],
    *,
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
    usd_rub_rate: float | Decimal = USD_RUB_RATE,
    unit: str = MINUTE,
) -> Forecast:
    """Pre-run estimate from Bitrix24 durations of the calls that have a recording, in the
    billing unit, each call rounded on its own as it will be billed. The durations are read
    once, as they come (a generator over the ledger is fine)."""
    calls = minutes = seconds = 0
    for duration in durations_sec:
        calls += 1
        minutes += billable_minutes(duration)
        seconds += billed_seconds_of_request(duration, unit)
    usd = seconds_cost_usd(seconds, price_per_minute)
    return Forecast(calls, minutes, usd, to_rub(usd, usd_rub_rate), seconds, unit)
