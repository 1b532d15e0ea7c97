"""The client-side rate limiter, on a fake clock (no real sleeping)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from calltexts_assets.limits.ratelimit import RateLimiter


class FakeClock:
    """A clock that advances only when someone sleeps on it (thread-safe)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)


def test_spaces_requests_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(5)]
    # Nobody advanced the clock: each booking lands 0.5 s after the previous one.
    assert waits == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert clock.sleeps == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_burst_lets_the_first_requests_through_then_paces() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, burst=3, clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0])


def test_idle_time_is_not_banked_beyond_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now += 60  # a long pause earns no 120-request burst
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0.0, 0.5, 1.0])


def test_zero_rate_disables_pacing() -> None:
    limiter = RateLimiter(0.0)
    assert all(limiter.acquire() == 0.0 for _ in range(1000))


def test_low_rate_mode_after_many_limit_hits_in_a_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        2.0, low_rate_after=3, low_rate_window=10, low_rate_hold=30, clock=clock, sleep=clock.sleep
    )
    assert not limiter.note_limit_hit()
    clock.now += 20  # outside the window: the first hit no longer counts
    assert not limiter.note_limit_hit()
    assert not limiter.note_limit_hit()
    assert not limiter.low_rate
    assert limiter.note_limit_hit()
    assert limiter.low_rate and limiter.effective_rate == pytest.approx(0.5)
    limiter.acquire()
    assert limiter.acquire() == pytest.approx(2.0)  # 1 / (2 req/s / 4)
    clock.now += 31
    assert not limiter.low_rate and limiter.effective_rate == pytest.approx(2.0)


def test_the_default_low_rate_rule_is_more_than_ten_hits_in_fifteen_minutes() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    assert not limiter.note_limit_hit()
    clock.now += 60
    for _ in range(9):
        assert not limiter.note_limit_hit()
        clock.now += 85.0
    assert limiter.note_limit_hit()  # the eleventh, 13:45 after the first
    assert limiter.effective_rate == pytest.approx(0.5)
    clock.now += 15 * 60.0
    assert not limiter.low_rate and limiter.effective_rate == pytest.approx(2.0)


def test_threads_share_one_budget() -> None:
    """8 threads x 5 requests at 200 req/s (burst 1) book 40 distinct slots, one interval
    apart, and take at least 39 intervals of real time. What the limiter booked is counted
    on a fake clock; stamps taken after a real wake-up would bunch on a busy machine."""
    clock = FakeClock()
    booked = RateLimiter(200.0, clock=clock, sleep=clock.sleep)
    waits: list[float] = []
    lock = threading.Lock()

    def book() -> None:
        for _ in range(5):
            wait = booked.acquire()
            with lock:
                waits.append(wait)

    _in_threads(book)
    assert sorted(waits) == pytest.approx([n / 200 for n in range(40)])

    limiter = RateLimiter(200.0)
    started = time.monotonic()
    _in_threads(lambda: [limiter.acquire() for _ in range(5)])
    # sleeping never ends early: a floor only, which a loaded machine cannot break
    assert time.monotonic() - started >= 39 / 200 - 0.01


def _in_threads(work: Callable[[], object], count: int = 8) -> None:
    threads = [threading.Thread(target=work) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
