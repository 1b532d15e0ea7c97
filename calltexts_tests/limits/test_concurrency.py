"""run_ahead: every item once, failures collected, a bounded window of items in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from calltexts_assets.limits.concurrency import Tally, run_ahead


def test_every_item_is_run_once_and_crashes_are_collected() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> str:
        with lock:
            seen.append(n)
        if n == 7:
            raise ValueError("boom")
        return "even" if n % 2 == 0 else "odd"

    tally = Tally()
    done = run_ahead(range(20), work, max_workers=3, tally=tally, name=lambda n: f"call-{n}")
    assert sorted(n for n, _ in done) == [n for n in range(20) if n != 7]
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

    tally = Tally()
    for _ in run_ahead(items(), work, max_workers=4, tally=tally):
        pass
    assert tally.outcomes == {"done": 200}
    assert most_running <= 4
    assert most_ahead <= 2 * 4 + 1  # the window, not the whole backlog of a backfill


def test_run_ahead_yields_each_item_when_done_and_waits_for_its_consumer() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for n in range(50):
            pulled = n + 1
            yield n

    tally = Tally()
    results = run_ahead(items(), lambda n: "odd" if n % 2 else "even", max_workers=2, tally=tally)
    first = next(results)
    # The consumer has taken one item: the stage pulled a window of 2 x 2, not all 50.
    assert first[1] == ("odd" if first[0] % 2 else "even")
    assert pulled <= 2 * 2 + 1
    rest = list(results)
    assert sorted(n for n, _ in [first, *rest]) == list(range(50))
    assert tally.outcomes == {"even": 25, "odd": 25}
