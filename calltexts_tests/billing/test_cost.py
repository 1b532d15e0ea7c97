from collections.abc import Iterator
from decimal import Decimal

import pytest

from calltexts_assets.billing.cost import (
    MINUTE,
    SECOND,
    Forecast,
    billable_minutes,
    billed_seconds,
    billed_seconds_of_request,
    call_cost_usd,
    forecast,
    format_rub,
    format_usd,
    record_billed_seconds,
    record_formula_minutes,
    requests_cost_usd,
    round_rub,
    round_usd,
    to_rub,
)


@pytest.mark.parametrize(
    ("seconds", "minutes"),
    [(0, 0), (1, 1), (59, 1), (60, 1), (61, 2), (120, 2), (121, 3), (0.4, 1), (3600, 60)],
)
def test_billable_minutes_rounds_up_per_started_minute(seconds: float, minutes: int) -> None:
    assert billable_minutes(seconds) == minutes


def test_billable_minutes_ignores_float_noise_of_summed_chunks() -> None:
    total = 33.319 + 19.382 + 67.299  # three chunks of exactly 120 s
    assert total > 120  # float addition lands just above two minutes
    assert billable_minutes(total) == 2


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_billable_minutes_rejects_impossible_durations(bad: float) -> None:
    with pytest.raises(ValueError):
        billable_minutes(bad)


def test_call_cost_is_exact_decimal_of_the_tariff() -> None:
    assert call_cost_usd(61, unit=MINUTE) == Decimal("0.012")
    assert call_cost_usd(0, unit=MINUTE) == Decimal(0)
    # a float tariff is read as written, not as its binary expansion
    assert call_cost_usd(181, price_per_minute=0.003, unit=MINUTE) == Decimal("0.012")
    assert call_cost_usd(60, Decimal("0.006"), MINUTE) == Decimal("0.006")


@pytest.mark.parametrize(
    ("seconds", "per_second", "per_minute"),
    [(0, 0, 0), (0.4, 1, 60), (59, 59, 60), (60, 60, 60), (60.0004, 60, 60), (60.2, 61, 120)],
)
def test_a_request_is_billed_in_its_unit(seconds, per_second, per_minute) -> None:
    assert billed_seconds_of_request(seconds, SECOND) == per_second
    assert billed_seconds_of_request(seconds, MINUTE) == per_minute
    with pytest.raises(ValueError, match="billing unit"):
        billed_seconds_of_request(seconds, "token")


def test_openai_bills_seconds_the_requirements_formula_minutes() -> None:
    # The demo's complaint: 92 started minutes for 60.7 minutes of audio. Billed per second
    # (whisper-1, gpt-transcribe: docs/specs/stt_wire.md §3.4) a 61 s call costs 61 s.
    assert call_cost_usd(61, unit=SECOND) == Decimal("0.0061")  # whisper-1, $0.006 a minute
    assert call_cost_usd(61, 0.0045, SECOND) == Decimal("0.004575")  # gpt-transcribe
    assert call_cost_usd(61) == Decimal("0.012")  # the requirements' formula (the default)
    # A call cut in three pieces of 40 s: 120 s by the second, 3 started minutes by the minute.
    assert requests_cost_usd([40, 40, 40], unit=SECOND) == Decimal("0.012")
    assert requests_cost_usd([40, 40, 40]) == Decimal("0.018")


def test_rub_and_display_rounding() -> None:
    assert to_rub(Decimal("0.018")) == Decimal("1.8")
    assert to_rub(Decimal("0.018"), rate=92.55) == Decimal("1.66590")
    assert round_rub(Decimal("1.66590")) == Decimal("1.67")
    assert round_usd(Decimal("0.00005")) == Decimal("0.0001")  # half up
    assert format_usd(Decimal("0.018")) == "0.0180"
    assert format_usd(0.1 + 0.2) == "0.3000"
    assert format_rub(Decimal("1.8")) == "1.80"


def test_forecast_sums_minutes_rounded_per_call() -> None:
    plan = forecast([30, 30, 61, 0], price_per_minute=0.006, usd_rub_rate=100.0, unit=MINUTE)
    # per call: 1 + 1 + 2 + 0 (not ceil(121 s / 60) = 3 over the sum)
    assert plan == Forecast(
        calls=4, minutes=4, cost_usd=Decimal("0.024"), cost_rub=Decimal("2.400"),
        billed_seconds=240, unit=MINUTE,
    )  # fmt: skip
    assert format_usd(plan.cost_usd) == "0.0240"
    assert format_rub(plan.cost_rub) == "2.40"


def test_forecast_in_seconds_keeps_the_formula_beside_it() -> None:
    plan = forecast([30, 30, 61.2, 0], price_per_minute=0.006, usd_rub_rate=100.0, unit=SECOND)
    assert (plan.minutes, plan.billed_seconds, plan.unit) == (4, 122, SECOND)
    assert plan.cost_usd == Decimal("0.0122") and plan.billed_minutes == Decimal(122) / 60


def test_forecast_reads_a_generator_once() -> None:
    durations: list[float] = [30, 30, 61, 0, 1200, 59.9996]
    calls: list[float] = []

    def listed() -> Iterator[float]:  # as the report feeds it from the ledger, row by row
        for duration in durations:
            calls.append(duration)
            yield duration

    plan = forecast(listed(), price_per_minute=0.006, usd_rub_rate=100.0)
    assert calls == durations  # read once
    assert plan == forecast(durations, price_per_minute=0.006, usd_rub_rate=100.0)
    assert (plan.calls, plan.minutes) == (6, 1 + 1 + 2 + 0 + 20 + 1)


def test_forecast_of_nothing_is_zero() -> None:
    plan = forecast([])
    assert (plan.calls, plan.minutes, plan.cost_usd, plan.cost_rub) == (0, 0, 0, 0)


class _Durations:
    def __init__(self, bitrix: int, audio: float | None, stt: float | None) -> None:
        self.duration_sec = bitrix
        self.audio_duration_sec = audio
        self.stt_duration_sec = stt


def test_billed_seconds_prefers_stt_then_audio_then_bitrix24() -> None:
    assert billed_seconds(_Durations(60, 61.5, 62.0)) == 62.0
    assert billed_seconds(_Durations(60, 61.5, None)) == 61.5
    assert billed_seconds(_Durations(60, None, None)) == 60.0


class _Row(_Durations):
    def __init__(self, stt: float, requests: str | None) -> None:
        super().__init__(0, None, stt)
        self.stt_request_sec = requests


def test_a_ledger_row_is_billed_per_request_and_the_formula_per_call() -> None:
    cut = _Row(120.0, "[40.0, 40.0, 40.0]")
    assert record_billed_seconds(cut, SECOND) == 120
    assert record_billed_seconds(cut, MINUTE) == 180  # a started minute per piece
    assert record_formula_minutes(cut) == 2  # the call's 2 minutes, rounded up once
    old = _Row(61.5, None)  # a row from before requests were recorded
    assert (record_billed_seconds(old, SECOND), record_formula_minutes(old)) == (62, 2)
    # A call that sent nothing (a second of audio, no speech) is billed nothing, not its length.
    unsent = _Row(1.0, "[]")
    assert (record_billed_seconds(unsent, SECOND), record_billed_seconds(unsent, MINUTE)) == (0, 0)
