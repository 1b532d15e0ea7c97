"""Client-side request pacing shared by all threads that talk to one portal."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from calltexts_assets.runlog.log import scrubbed_logger

log = scrubbed_logger(__name__)

# The seed's rule: more than 10 limit answers within 15 minutes put the client in low-rate
# mode (for the next 15 minutes).
LOW_RATE_AFTER = 11
LOW_RATE_WINDOW_SEC = 15 * 60.0


class RateLimiter:
    """Keeps callers to `rate` requests per second (with `burst` back-to-back) across threads.

    A reservation scheme (GCRA, the virtual-scheduling form of a leaky bucket): each
    `acquire()` books the next free slot under a lock and sleeps outside it, so threads are
    served in arrival order and nobody spins. `rate <= 0` disables pacing.

    Low-rate mode: after `low_rate_after` limit hits (HTTP 429/503 QUERY_LIMIT_EXCEEDED)
    within `low_rate_window` seconds the rate is divided by `low_rate_divisor` for
    `low_rate_hold` seconds, because a portal that keeps refusing us is shared with other
    applications and our fair share is smaller than its nominal limit.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        low_rate_divisor: float = 4.0,
        low_rate_after: int = LOW_RATE_AFTER,
        low_rate_window: float = LOW_RATE_WINDOW_SEC,
        low_rate_hold: float = LOW_RATE_WINDOW_SEC,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if low_rate_divisor < 1:
            raise ValueError("low_rate_divisor must be at least 1")
        self.rate = float(rate)
        self.burst = burst
        self.low_rate_divisor = float(low_rate_divisor)
        self.low_rate_after = low_rate_after
        self.low_rate_window = low_rate_window
        self.low_rate_hold = low_rate_hold
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = 0.0  # theoretical arrival time of the next request
        self._hits: deque[float] = deque()
        self._low_until = 0.0

    @property
    def low_rate(self) -> bool:
        with self._lock:
            return self._low_rate_locked(self._clock())

    @property
    def effective_rate(self) -> float:
        with self._lock:
            return self._rate_locked(self._clock())

    def note_limit_hit(self) -> bool:
        """Record a limit refusal; returns True when this hit switched low-rate mode on."""
        with self._lock:
            now = self._clock()
            self._hits.append(now)
            while self._hits and self._hits[0] < now - self.low_rate_window:
                self._hits.popleft()
            if len(self._hits) < self.low_rate_after or self._low_rate_locked(now):
                return False
            self._low_until = now + self.low_rate_hold
            self._hits.clear()
        log.warning(
            "rate limit hit %d times within %.0f s: low-rate mode (rate / %g) for %.0f s",
            self.low_rate_after,
            self.low_rate_window,
            self.low_rate_divisor,
            self.low_rate_hold,
        )
        return True

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            rate = self._rate_locked(now)
            if rate <= 0:
                return 0.0
            interval = 1.0 / rate
            tat = max(self._tat, now)
            allowed_at = tat - (self.burst - 1) * interval
            wait = max(0.0, allowed_at - now)
            self._tat = tat + interval
        if wait > 0:
            self._sleep(wait)
        return wait

    def _low_rate_locked(self, now: float) -> bool:
        return now < self._low_until

    def _rate_locked(self, now: float) -> float:
        if self.rate > 0 and self._low_rate_locked(now):
            return self.rate / self.low_rate_divisor
        return self.rate
