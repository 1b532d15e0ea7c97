"""A run's budget: concurrent calls cannot slip past it together; failed calls cost nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from calltexts_assets.billing.budget import Budget, BudgetReached


def test_concurrent_calls_never_take_the_spend_past_the_limit() -> None:
    budget = Budget(1.00)  # stop past $1.20
    cost = Decimal("0.05")

    def one(_: int) -> bool:
        try:
            budget.reserve(cost, "a call")
        except BudgetReached:
            return False
        budget.settle(cost, cost)
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        sent = sum(pool.map(one, range(100)))
    assert sent == 24 and budget.spent == Decimal("1.20")


def test_a_failed_call_gives_its_reservation_back() -> None:
    budget = Budget(0.01)  # $0.012 at most
    budget.reserve(Decimal("0.012"), "call 1")
    with pytest.raises(BudgetReached, match=r"call 2 \(~\$0.0060\) would cross it"):
        budget.reserve(Decimal("0.006"), "call 2")
    budget.settle(Decimal("0.012"), None)  # call 1 failed: nothing billed
    budget.reserve(Decimal("0.006"), "call 2")


def test_no_budget_means_no_limit() -> None:
    budget = Budget(0)
    for _ in range(1000):
        budget.reserve(Decimal(1), "a call")
