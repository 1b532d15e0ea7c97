"""run_bounded: every item once, failures collected, a bounded window of items in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from calltexts_assets.concurrency import run_bounded


def test_every_item_is_run_once_and_crashes_are_collected() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> str:
        with lock:
            seen.append(n)
        if n == 7:
            raise ValueError("boom")
        return "even" if n % 2 == 0 else "odd"

    tally = run_bounded(range(20), work, max_workers=3, name=lambda n: f"call-{n}")
    assert sorted(seen) == list(range(20))
    assert tally.outcomes == {"even": 10, "odd": 9, "crashed": 1}
    assert [(name, str(exc)) for name, exc in tally.crashes] == [("call-7", "boom")]


def test_items_are_pulled_as_workers_free_up_not_all_at_once() -> None:
    completed = 0
    running = 0
    most_running = 0
    most_ahead = 0  # items pulled from the iterator but not finished yet
    lock = threading.Lock()

    def items() -> Iterator[int]:
        nonlocal most_ahead
        for n in range(200):
            with lock:
                most_ahead = max(most_ahead, n + 1 - completed)
            yield n

    def work(_: int) -> str:
        nonlocal completed, running, most_running
        with lock:
            running += 1
            most_running = max(most_running, running)
        time.sleep(0.001)
        with lock:
            running -= 1
            completed += 1
        return "done"

    tally = run_bounded(items(), work, max_workers=4)
    assert tally.outcomes == {"done": 200}
    assert most_running <= 4
    assert most_ahead <= 2 * 4 + 1  # the window, not the whole backlog of a backfill
