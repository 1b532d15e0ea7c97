"""Bounded concurrency for per-call work inside one asset (threads: the work is I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
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
    with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="call") as pool:
        futures = {pool.submit(work, item): item for item in items}
        for future in as_completed(futures):
            try:
                tally.outcomes[future.result()] += 1
            except Exception as exc:
                tally.outcomes["crashed"] += 1
                tally.crashes.append((name(futures[future]), exc))
    return tally
