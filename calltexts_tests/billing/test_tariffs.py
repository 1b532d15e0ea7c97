"""Money by the row (issue #23 review): each STT request is priced by the model the ledger row
names for it, not by today's WHISPER_MODEL / WHISPER_FALLBACK_MODEL; the registry, the report
and the cost check agree on what was billed, the second opinion's requests included."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from calltexts_assets.billing.budget import Budget, BudgetReached, within_budget
from calltexts_assets.billing.cost import MINUTE, SECOND
from calltexts_assets.billing.tariffs import Tariff, Tariffs
from calltexts_assets.quality.checks import cost_matches
from calltexts_assets.registry.rows import registry_values
from calltexts_assets.report.data import build_report_data
from calltexts_assets.state.ledger import CallRecord
from calltexts_assets.state.steps import StepOutcome
from calltexts_tests.support.records import transcribed_record

DAY = "2026-11-24"
LISTED = {"whisper-1": Tariff.of(0.006, SECOND), "gpt-transcribe": Tariff.of(0.0045, SECOND)}
# Today: gpt-transcribe first, a self-hosted large-v3 second at its set tariff, per minute.
TODAY = Tariffs(
    Tariff.of(0.0045, SECOND), "gpt-transcribe", Tariff.of(0.01, MINUTE), "large-v3", LISTED
)


def row(n: int, **changes: Any) -> CallRecord:
    values: dict[str, Any] = {"stt_requests": 1, "stt_sent_sec": 30.0, "stt_request_sec": "[30]"}
    values.update(changes)
    values.setdefault("call_id", f"c{n}")
    return transcribed_record(
        n, day=DAY, started_at=f"{DAY}T10:{n:02d}:00+03:00", seconds=30.0, **values
    )


def test_a_row_is_priced_by_its_own_models_not_by_todays() -> None:
    # whisper-1 first and large-v3 second: transcribed before the settings changed
    old = row(1, model="whisper-1", fallback_model="large-v3", fallback_request_sec="[30]")
    assert TODAY.of("whisper-1") == LISTED["whisper-1"]
    assert TODAY.of("large-v3", fallback=True) == Tariff.of(0.01, MINUTE)
    # 30 s at whisper-1's $0.006 per second + a started minute at large-v3's $0.01
    assert TODAY.billed_seconds(old) == (30, 60)
    assert TODAY.cost(old) == Decimal("0.003") + Decimal("0.01")
    # a model neither configured now nor listed has no tariff: never today's by default
    gone = row(2, model="whisper-1", fallback_model="medium", fallback_request_sec="[30]")
    assert TODAY.unpriced(gone) == ("medium",)
    assert TODAY.of(None) == TODAY.primary  # a row from before models were recorded


def test_one_model_on_two_servers_is_priced_as_each_role() -> None:
    both = Tariffs(Tariff.of(0.006, SECOND), "whisper-1", Tariff.of(0.001, MINUTE), "whisper-1")
    record = row(1, model="whisper-1", fallback_model="whisper-1", fallback_request_sec="[90]")
    assert both.billed_seconds(record) == (30, 120)
    assert both.cost(record) == Decimal("0.003") + Decimal("0.002")


def test_cost_check_registry_and_report_agree_on_a_second_opinion_per_minute() -> None:
    cost = float(Decimal("0.003") + Decimal("0.01"))  # as step.py records it
    sent = row(
        1, model="whisper-1", cost=cost, fallback_model="large-v3", fallback_request_sec="[30]",
        fallback_kept=True, doubts="repetition",
    )  # fmt: skip
    plain = row(2, model="gpt-transcribe", cost=float(Decimal("0.00225")))  # 30 s at $0.0045
    assert cost_matches([sent, plain], tariffs=TODAY).passed
    # today's tariff for yesterday's models is not the bill (what the check used to expect)
    flat = Tariffs(TODAY.primary, "gpt-transcribe", TODAY.fallback, "large-v3")
    assert cost_matches([sent, plain], tariffs=flat).offending_call_ids == ("c1",)
    # the registry bills the fallback's request a started minute, as the cost does
    values = registry_values(sent, tariffs=TODAY)
    assert values["stt_billed_sec"] == 30 + 60
    assert values["transcription_cost"] == Decimal("0.0130")
    data = build_report_data(
        [sent, plain], period_from=DAY, period_to=DAY, forecast=None, price_per_minute=0.0045,
        usd_rub_rate=100, budget_usd=None, run_seconds=1.0, billing_unit=SECOND, tariffs=TODAY,
    )  # fmt: skip
    assert data.billed_seconds == 30 + 60 + 30  # both models' requests
    assert data.cost_usd == Decimal("0.003") + Decimal("0.01") + Decimal("0.00225")
    (stt,) = [s for s in data.sections if s.title == "Распознавание (STT)"]
    assert dict(stt.rows)["Второе мнение к оплате (входит в счёт выше)"] == "запросов: 1, 1.0 мин"


def test_a_row_whose_model_has_no_tariff_fails_the_cost_check_naming_it() -> None:
    gone = row(1, model="whisper-1", fallback_model="medium", fallback_request_sec="[30]")
    outcome = cost_matches([gone], tariffs=TODAY)
    assert not outcome.passed and outcome.offending_call_ids == ("c1",)
    assert "no tariff known for medium" in outcome.summary
    assert registry_values(gone, tariffs=TODAY)["stt_billed_sec"] is None


def _work_with_fallback(fallback_cost: Decimal, asked: list[str]):
    """A call that costs $0.05 and asks a second opinion of `fallback_cost`, reserved first."""

    def work(record: CallRecord, reserve) -> StepOutcome:
        cost = Decimal("0.05")
        try:
            reserve(fallback_cost, f"the second opinion on call {record.call_id}")
            asked.append(record.call_id)
            cost += fallback_cost
        except BudgetReached:
            pass  # the first answer is kept, flagged (second_opinion.py)
        return StepOutcome("transcribed", {"cost": float(cost)})

    return work


def test_the_second_opinion_is_reserved_so_a_run_never_overspends_its_budget() -> None:
    budget = Budget(1.00)  # stop past $1.20
    asked: list[str] = []
    guarded = within_budget(
        budget, lambda record: Decimal("0.05"), _work_with_fallback(Decimal("0.05"), asked)
    )

    def one(n: int) -> bool:
        try:
            guarded(row(n % 60, call_id=f"c{n}"))
        except BudgetReached:
            return False
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        done = sum(pool.map(one, range(100)))
    # $0.10 a call with its second opinion: 12 calls reach $1.20; never more, whatever the
    # order the threads took their reservations in
    assert budget.spent <= Decimal("1.20")
    assert budget.spent == Decimal("0.05") * (done + len(asked))
    assert budget._reserved == 0 and done >= 12


def test_a_second_opinion_the_budget_cannot_cover_is_not_asked() -> None:
    budget = Budget(0.05)  # $0.06 at most: the call, not its second opinion
    asked: list[str] = []
    guarded = within_budget(
        budget, lambda record: Decimal("0.05"), _work_with_fallback(Decimal("0.05"), asked)
    )
    outcome = guarded(row(1))
    assert asked == [] and outcome.updates["cost"] == pytest.approx(0.05)
    assert budget.spent == Decimal("0.05") and budget._reserved == 0
