"""Bounded accumulators for checks that read their rows once, from a generator over the
ledger: nothing here keeps a row, and what is kept per call is at most a few fixed-size
integers, so a 60-day period's checks do not grow with its number of calls."""

from __future__ import annotations

import hashlib
import heapq
import math
import sys
from array import array
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=str)
V = TypeVar("V")

# builtin sum() of floats adds left to right up to Python 3.11 and compensates the rounding
# (Neumaier) from 3.12: FloatSum repeats whichever this interpreter does, so a total summed
# as the rows go by is bit for bit the sum() the checks computed over a list before.
_COMPENSATED_SUM = sys.version_info >= (3, 12)


class FloatSum:
    """`sum()` of floats added one at a time; 0 (an int, like sum([])) before any."""

    __slots__ = ("_compensation", "_count", "_total")

    def __init__(self) -> None:
        self._total = 0.0
        self._compensation = 0.0
        self._count = 0

    def add(self, value: float) -> None:
        self._count += 1
        if not _COMPENSATED_SUM:
            self._total += value
            return
        total = self._total
        added = total + value
        if abs(total) >= abs(value):
            self._compensation += (total - added) + value
        else:
            self._compensation += (value - added) + total
        self._total = added

    @property
    def value(self) -> float:
        if not self._count:
            return 0  # sum() of nothing is the int 0, and the checks' metadata showed it so
        compensation = self._compensation
        if compensation and math.isfinite(compensation):
            return self._total + compensation
        return self._total


class Smallest(Generic[T]):
    """`sorted(items, key=key)[:limit]` over items added one at a time, holding at most
    2 x limit of them. Equal keys keep the order they were added in (a stable sort);
    `total` counts every item added."""

    def __init__(self, limit: int, key: Callable[[T], Any]) -> None:
        self.limit = limit
        self.total = 0
        self._key = key
        self._items: list[T] = []

    def add(self, item: T) -> None:
        self.total += 1
        if self.limit <= 0:
            return
        self._items.append(item)
        if len(self._items) >= 2 * self.limit:
            # nsmallest is stable, and the kept items stay ahead of later ones: ties hold.
            self._items = heapq.nsmallest(self.limit, self._items, key=self._key)

    def items(self) -> list[T]:
        return sorted(self._items, key=self._key)[: self.limit]


class SmallestKeys(Generic[K, V]):
    """A dict holding only the `limit` smallest keys ever set, with their latest values.

    Once it has been cut, a key above the largest kept one is refused: the keys kept only
    get smaller, so such a key can never be among the `limit` smallest again. `get` of a
    refused key is None, which is how callers tell a tracked key from an untracked one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: dict[K, V] = {}
        self._bound: K | None = None

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def set(self, key: K, value: V) -> None:
        if self._bound is not None and key > self._bound:
            return
        self._items[key] = value
        if len(self._items) >= 2 * self.limit:
            kept = sorted(self._items)[: self.limit]
            self._items = {k: self._items[k] for k in kept}
            self._bound = kept[-1] if kept else None

    def smallest(self) -> list[tuple[K, V]]:
        return sorted(self._items.items())[: self.limit]


def fingerprint(*parts: str) -> int:
    """A nonzero 64-bit digest of the strings; each is length-prefixed, so ("ab", "c") and
    ("a", "bc") differ. Two of 100,000 calls share one with a probability of ~3e-10."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return int.from_bytes(digest.digest(), "little") or 1


_INITIAL_SLOTS = 1024


def _zeros(slots: int) -> array[int]:
    # Repeating a one-item array allocates the result only (bytes(n) would add a copy).
    return array("Q", [0]) * slots


class FingerprintTable:
    """Fingerprints (nonzero 64-bit ints) mapped to 64-bit values, in flat arrays.

    Open addressing with linear probing, kept at most 3/4 full: 16 bytes a slot, so 21 to
    43 bytes per entry (8 bytes a slot, 11 to 21, without values), where a set of ints
    takes ~80 and a dict ~110."""

    __slots__ = ("_keys", "_mask", "_size", "_values")

    def __init__(self, *, values: bool = True) -> None:
        self._keys = _zeros(_INITIAL_SLOTS)
        self._values: array[int] | None = _zeros(_INITIAL_SLOTS) if values else None
        self._mask = _INITIAL_SLOTS - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _slot(self, fp: int) -> int:
        keys, mask = self._keys, self._mask
        slot = fp & mask
        while True:
            found = keys[slot]
            if found == fp or not found:
                return slot
            slot = (slot + 1) & mask

    def get(self, fp: int) -> int | None:
        """The value, 0 in a table without values; None when `fp` is not in the table."""
        slot = self._slot(fp)
        if not self._keys[slot]:
            return None
        return self._values[slot] if self._values is not None else 0

    def put(self, fp: int, value: int = 0) -> bool:
        """Set `fp` to `value`; True when `fp` was not in the table yet."""
        slot = self._slot(fp)
        new = not self._keys[slot]
        if new:
            if (self._size + 1) * 4 > len(self._keys) * 3:
                self._grow()
                slot = self._slot(fp)
            self._keys[slot] = fp
            self._size += 1
        if self._values is not None:
            self._values[slot] = value
        return new

    def _grow(self) -> None:
        keys, values = self._keys, self._values
        slots = 2 * len(keys)
        self._keys = _zeros(slots)
        self._values = _zeros(slots) if values is not None else None
        self._mask = slots - 1
        for index, fp in enumerate(keys):
            if fp:
                slot = self._slot(fp)
                self._keys[slot] = fp
                if values is not None and self._values is not None:
                    self._values[slot] = values[index]
