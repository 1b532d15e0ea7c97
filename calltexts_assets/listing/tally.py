"""What `call_list` learns from the statistic rows, one `batch` answer at a time."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from calltexts_assets.files.storage_keys import is_safe_id
from calltexts_assets.listing.calls import Call, InvalidCallRow, call_from_row

_MOD = 1 << 256


def _digest(data: str) -> bytes:
    return hashlib.sha256(data.encode()).digest()


def call_digest(call: Call) -> int:
    """A listed call's own hash, as summed into a listing's fingerprint."""
    return int.from_bytes(_digest(json.dumps(call.to_json(), sort_keys=True, ensure_ascii=False)))


@dataclass(frozen=True)
class Rejected:
    """A statistic row that cannot be exported: the registry shows it with its fault."""

    call_id: str  # the row's own id when it is safe, else a stable placeholder
    started_at: datetime | None  # when it parses (the row's day), else None
    code: str
    reason: str


def rejected(row: dict[str, Any], exc: InvalidCallRow) -> Rejected:
    call_id = str(row.get("CALL_ID") or "").strip()
    if not is_safe_id(call_id):
        # An unsafe id never becomes a key; a stable placeholder keeps the row visible.
        digest = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()[:12]
        call_id = f"invalid-{digest}"
    try:
        started_at: datetime | None = datetime.fromisoformat(str(row.get("CALL_START_DATE")))
    except ValueError:
        started_at = None
    if started_at is not None and started_at.tzinfo is None:
        started_at = None
    return Rejected(call_id, started_at, exc.code, str(exc))


class Listing:
    """Each call once (first occurrence wins), rejected rows with a reason, and the totals
    of the whole listing. Kept per call: a 16-byte key digest and the duration of calls
    with a recording (for the forecast), so a 60-day listing is never held whole."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self._fingerprint = 0
        self.calls = 0
        self.seconds = 0
        self.recording_durations = array("q")
        self.rejected = 0

    def add(
        self,
        rows: Iterable[dict[str, Any]],
        enrich: Callable[[Sequence[Call]], list[Call]] | None = None,
    ) -> tuple[list[Call], list[Rejected]]:
        """The new valid calls of `rows` (with what `enrich` adds, e.g. names, before they
        are counted: a renamed employee changes the fingerprint), and the rows that cannot
        be exported."""
        calls: list[Call] = []
        invalid: list[Rejected] = []
        for row in rows:
            try:
                call = call_from_row(row)
            except InvalidCallRow as exc:
                invalid.append(rejected(row, exc))
                continue
            key = _digest(f"{call.call_id}\x00{call.record_id}")[:16]
            if key in self._seen:
                continue
            self._seen.add(key)
            calls.append(call)
        if enrich is not None:
            calls = enrich(calls)
        for call in calls:
            self._count(call)
        self.rejected += len(invalid)
        return calls, invalid

    def _count(self, call: Call) -> None:
        self.calls += 1
        self.seconds += call.duration_sec
        if call.has_recording:
            self.recording_durations.append(call.duration_sec)
        # A sum of per-call hashes does not depend on the order the portal listed them in.
        self._fingerprint = (self._fingerprint + call_digest(call)) % _MOD

    @property
    def fingerprint(self) -> str:
        """Stable hash of the listed calls: the data version of `call_list`."""
        return f"{self._fingerprint:064x}"[:32]


class DayFingerprints:
    """Each day's listing as one hash (its calls, as `Listing` counts them, and its rejected
    rows), kept in the ledger by call_list: a re-run compares its own listing of the day
    with it to tell whether the portal has anything new (`ops.export_plan`)."""

    def __init__(self) -> None:
        self._sums: dict[str, int] = {}

    def _add(self, day: str, value: int) -> None:
        self._sums[day] = (self._sums.get(day, 0) + value) % _MOD

    def add(self, day: str, call: Call) -> None:
        self._add(day, call_digest(call))

    def add_rejected(self, day: str, row: Rejected) -> None:
        self._add(day, int.from_bytes(_digest(f"rejected\x00{row.call_id}\x00{row.code}")))

    def of(self, day: str) -> str:
        return f"{self._sums.get(day, 0):064x}"[:32]
