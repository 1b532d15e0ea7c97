"""Bounded concurrency for per-call work inside one asset (threads: the work is I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Tally:
    """Outcome counts of one pass, plus the failures that escaped the per-call handling."""

    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, BaseException]] = field(default_factory=list)


def run_bounded(
    items: Iterable[T],
    work: Callable[[T], str],
    *,
    max_workers: int,
    name: Callable[[T], str] = str,
) -> Tally:
    """Run `work` on every item, at most `max_workers` at once; `work` returns an outcome label.

    One call's unexpected exception must not stop the others, so it is collected and the
    caller decides (the assets record it against the call and fail the step at the end).
    """
    tally = Tally()
    limit = max(1, max_workers)
    pending: dict[Future[str], T] = {}

    def settle(done: set[Future[str]]) -> None:
        for future in done:
            item = pending.pop(future)
            try:
                tally.outcomes[future.result()] += 1
            except Exception as exc:
                tally.outcomes["crashed"] += 1
                tally.crashes.append((name(item), exc))

    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="call") as pool:
        # A window of twice the workers keeps them busy; submitting all items at once would
        # hold a future per call of a 60-day backfill in memory.
        for item in items:
            if len(pending) >= 2 * limit:
                settle(wait(pending, return_when=FIRST_COMPLETED).done)
            pending[pool.submit(work, item)] = item
        settle(wait(pending).done)
    return tally
