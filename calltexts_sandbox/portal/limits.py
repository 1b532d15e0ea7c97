"""The emulated portal's two limits (docs/specs/bitrix24_wire.md §4): the request-rate leaky
bucket (QUERY_LIMIT_EXCEEDED, 503) and the per-method running-time budget (`operating`,
OPERATION_TIME_LIMIT) kept, per application and method, in one-minute buckets over ten
minutes. Calls under 0.1 s are not counted, as in the core's LoadLimiter."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

MINIMAL_FIX_SEC = 0.1


@dataclass
class _Bucket:
    level: float = 0.0
    last: float = 0.0


class LeakyBucket:
    """`burst` requests at once per application, draining at `rate` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def reset(self, rate: float, burst: int) -> None:
        with self._lock:
            self.rate, self.burst = rate, burst
            self._buckets.clear()

    def admit(self, app_key: str) -> bool:
        with self._lock:
            if self.rate <= 0:
                return True
            now = self.clock()
            bucket = self._buckets.setdefault(app_key, _Bucket(0.0, now))
            bucket.level = max(0.0, bucket.level - (now - bucket.last) * self.rate)
            bucket.last = now
            if bucket.level + 1 > self.burst:
                self.refused += 1
                return False
            bucket.level += 1
            return True


@dataclass
class _Budget:
    spent: deque[tuple[float, float]] = field(default_factory=deque)  # (unix time, seconds)


class LoadLimiter:
    """Running time per (application, method) over the last `window_sec`."""

    def __init__(
        self,
        limit_sec: float,
        window_sec: float,
        costs: dict[str, float],
        zone: ZoneInfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit_sec, self.window_sec, self.costs = limit_sec, window_sec, costs
        self.zone = zone  # the portal server's: dates in the time block are in it
        self.clock = clock
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._lock = threading.Lock()
        self.blocked = 0

    def _current(self, key: tuple[str, str], now: float) -> _Budget:
        budget = self._budgets.setdefault(key, _Budget())
        while budget.spent and budget.spent[0][0] + self.window_sec <= now:
            budget.spent.popleft()
        return budget

    def is_blocked(self, app_key: str, method: str) -> bool:
        with self._lock:
            budget = self._current((app_key, method), self.clock())
            over = sum(s for _, s in budget.spent) > self.limit_sec
            self.blocked += over
            return over

    def spend(self, app_key: str, method: str, started: float) -> None:
        """Count one call of `method` that started at `started` (unix time)."""
        seconds = self.clock() - started + self.costs.get(method, 0.0)
        if seconds < MINIMAL_FIX_SEC:
            return
        with self._lock:
            self._current((app_key, method), started).spent.append((started, seconds))

    def time_block(self, app_key: str, method: str, started: float) -> dict[str, Any]:
        """The answer's `time` block: the docs' fields, `start` an integer as on current
        portals, `operating` what the method has spent, `operating_reset_at` when the
        oldest part of it leaves the sum."""
        finish = self.clock()
        with self._lock:
            budget = self._current((app_key, method), finish)
            operating = sum(s for _, s in budget.spent)
            oldest = budget.spent[0][0] if budget.spent else finish
        return {
            "start": int(started),
            "finish": finish,
            "duration": finish - int(started),
            "processing": round(finish - started, 6),
            "date_start": datetime.fromtimestamp(int(started), self.zone).isoformat(),
            "date_finish": datetime.fromtimestamp(int(finish), self.zone).isoformat(),
            "operating_reset_at": math.ceil(oldest + self.window_sec),
            "operating": round(operating, 6),
        }
