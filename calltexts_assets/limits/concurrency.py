"""Bounded concurrency for per-call work inside one asset (threads: the work is I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
_END: Any = object()


@dataclass
class Tally:
    """Outcome counts of one pass, plus the failures that escaped the per-call handling."""

    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, BaseException]] = field(default_factory=list)


def run_ahead(
    items: Iterable[T],
    work: Callable[[T], str],
    *,
    max_workers: int,
    tally: Tally,
    name: Callable[[T], str] = str,
) -> Iterator[tuple[T, str]]:
    """Run `work` on every item, at most `max_workers` at once, and yield each (item, outcome
    label) as soon as it completes, so that a next stage can start on it while this one goes
    on. Items are pulled from `items` through a window of twice the workers: a slow consumer
    holds this stage back instead of letting finished items pile up, and a 60-day backfill is
    never submitted whole.

    One call's unexpected exception must not stop the others: it is counted in `tally` with
    the item's name, not yielded, and the caller decides (the assets record it against the
    call and fail the step at the end)."""
    limit = max(1, max_workers)
    pending: dict[Future[str], T] = {}
    source = iter(items)
    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="call") as pool:
        while True:
            while len(pending) < 2 * limit and (item := next(source, _END)) is not _END:
                pending[pool.submit(work, item)] = item
            if not pending:
                return
            for future in wait(pending, return_when=FIRST_COMPLETED).done:
                item = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:
                    tally.outcomes["crashed"] += 1
                    tally.crashes.append((name(item), exc))
                    continue
                tally.outcomes[outcome] += 1
                yield item, outcome
