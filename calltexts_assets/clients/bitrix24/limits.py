"""Bitrix24's per-method running-time budget: `operating` in every answer's `time` block.

A method whose accumulated running time over the last 10 minutes passes the portal's limit
is refused with `OPERATION_TIME_LIMIT` (HTTP 429, or per command inside a `batch` answered
with 200) until the oldest one-minute bucket leaves the sum at `operating_reset_at`. The
client reads every `time` block (the answer's own, and `result_time` per batch command),
waits for the reset before it calls a method whose budget is nearly spent, and says how
long to wait after a refusal. Sources: docs/specs/bitrix24_wire.md §4.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

OPERATION_TIME_LIMIT = "OPERATION_TIME_LIMIT"
# The portal's limit per method and application: 480 s in the cloud docs' example, 420 s
# as the self-hosted default; the lower one, so that both are respected.
OPERATING_LIMIT_SEC = 420.0
SLOW_DOWN_SHARE = 0.8  # wait for the reset once this share of the budget is spent
BUCKET_SEC = 60.0  # the budget is kept in one-minute buckets
LONGEST_BLOCK_SEC = 660.0  # a method is blocked at most 10 minutes (plus one bucket)


@dataclass
class _Seen:
    operating: float
    reset_in: float | None  # seconds after `at` when the oldest bucket leaves the sum
    at: float  # monotonic time of the answer


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class OperatingBudget:
    """What the portal last said of each method's budget; thread-safe.

    Times are kept relative to the answer that carried them (`operating_reset_at` minus
    the answer's own `finish`), so a skew between the portal's clock and ours is harmless.
    """

    def __init__(
        self,
        *,
        limit_sec: float = OPERATING_LIMIT_SEC,
        bucket_sec: float = BUCKET_SEC,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_sec = limit_sec
        self.bucket_sec = bucket_sec
        self._clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def note(self, method: str, block: Any) -> None:
        """Remember a `time` block of an answer of `method` (absent keys: limiter off)."""
        if not isinstance(block, Mapping):
            return
        operating = _number(block.get("operating"))
        if operating is None:
            return
        reset_at = _number(block.get("operating_reset_at"))
        server_now = _number(block.get("finish")) or _number(block.get("start"))
        reset_in = None
        if reset_at is not None and server_now is not None:
            reset_in = max(0.0, reset_at - server_now)
        with self._lock:
            self._seen[method] = _Seen(operating, reset_in, self._clock())

    def operating(self, method: str) -> float:
        with self._lock:
            seen = self._seen.get(method)
            return seen.operating if seen else 0.0

    def _until_reset(self, seen: _Seen) -> float | None:
        if seen.reset_in is None:
            return None
        return max(0.0, seen.reset_in - (self._clock() - seen.at))

    def wait_before(self, methods: Iterable[str]) -> float:
        """Seconds to wait before calling `methods`: until the reset of any whose budget is
        nearly spent (mature clients slow down before the portal refuses them)."""
        wait = 0.0
        with self._lock:
            for method in set(methods):
                seen = self._seen.get(method)
                if seen is None or seen.operating < SLOW_DOWN_SHARE * self.limit_sec:
                    continue
                remaining = self._until_reset(seen)
                wait = max(wait, self.bucket_sec if remaining is None else remaining)
        return wait

    def wait_after_block(self, method: str) -> float:
        """Seconds to wait after `method` was refused: until the reset the last answer
        announced, else (unknown, or already past) one bucket."""
        with self._lock:
            seen = self._seen.get(method)
            remaining = self._until_reset(seen) if seen else None
        return remaining if remaining else self.bucket_sec

    def waited(self, methods: Iterable[str]) -> None:
        """After a wait for the reset: what was known of these budgets is out of date."""
        with self._lock:
            for method in methods:
                self._seen.pop(method, None)
