"""A run's speech-to-text budget: the call that would take the spend past it is not sent."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

from calltexts_assets.limits.run_errors import RunWideError
from calltexts_assets.state.ledger import CallRecord
from calltexts_assets.state.steps import StepOutcome

# The seed's tolerance: a run may go this far over its budget before it stops.
OVERRUN = Decimal("0.20")


class BudgetReached(RunWideError):
    """The next call would take the run past its budget (plus the tolerance)."""

    code = "budget_reached"


class Budget:
    """Thread-safe: each call reserves its expected cost before it is sent, so concurrent
    calls cannot all slip under the limit together; the reservation becomes the cost the
    call was billed, or is given back when it failed."""

    def __init__(self, budget_usd: float | Decimal) -> None:
        self.budget = Decimal(str(budget_usd))
        self.limit = self.budget * (1 + OVERRUN)
        self.spent = Decimal(0)
        self._reserved = Decimal(0)
        self._lock = threading.Lock()

    def reserve(self, cost: Decimal, what: str) -> None:
        with self._lock:
            if self.budget > 0 and self.spent + self._reserved + cost > self.limit:
                raise BudgetReached(
                    f"budget reached: this run spent ${self.spent:.4f} of its "
                    f"${self.budget:.4f} budget (stop past +{OVERRUN:.0%}: ${self.limit:.4f}); "
                    f"{what} (~${cost:.4f}) would cross it. Raise CALLTEXTS_BUDGET_USD and "
                    "re-run the period: it goes on with the calls not transcribed yet"
                )
            self._reserved += cost

    def settle(self, reserved: Decimal, billed: Decimal | None) -> None:
        """The call's reservation ends: `billed` is what it cost (None: it failed)."""
        with self._lock:
            self._reserved -= reserved
            self.spent += billed or Decimal(0)


# A call's further request (the second opinion): reserve its expected cost too, or raise.
Reserve = Callable[[Decimal, str], None]


def within_budget(
    budget: Budget,
    expected_cost: Callable[[CallRecord], Decimal],
    work: Callable[[CallRecord, Reserve], StepOutcome],
) -> Callable[[CallRecord], StepOutcome]:
    """`work` that reserves each call's expected cost first, and the expected cost of each
    further request it makes (through the `Reserve` it is given) before that request, and
    settles all of it with the cost the step recorded (`updates["cost"]`)."""

    def guarded(record: CallRecord) -> StepOutcome:
        held = [expected_cost(record)]
        budget.reserve(held[0], f"call {record.call_id}")

        def reserve(cost: Decimal, what: str) -> None:
            budget.reserve(cost, what)
            held.append(cost)  # only once reserved: a refusal holds nothing

        billed: Decimal | None = None
        try:
            outcome = work(record, reserve)
            billed = Decimal(str(outcome.updates.get("cost") or 0))
            return outcome
        finally:
            budget.settle(sum(held, Decimal(0)), billed)

    return guarded
