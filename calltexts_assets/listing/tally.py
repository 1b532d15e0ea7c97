"""What `call_list` learns from the statistic rows, one `batch` answer at a time."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterable
from typing import Any

from calltexts_assets.listing.calls import Call, InvalidCallRow, call_from_row

_MOD = 1 << 256


def _digest(data: str) -> bytes:
    return hashlib.sha256(data.encode()).digest()


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

    def add(self, rows: Iterable[dict[str, Any]]) -> tuple[list[Call], list[tuple[str, str]]]:
        """The new valid calls of `rows` and (placeholder id, reason) of the invalid ones."""
        calls: list[Call] = []
        invalid: list[tuple[str, str]] = []
        for row in rows:
            try:
                call = call_from_row(row)
            except InvalidCallRow as exc:
                # The unsafe id never becomes a key; a stable placeholder keeps the row visible.
                digest = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()[:12]
                invalid.append((f"invalid-{digest}", str(exc)))
                continue
            key = _digest(f"{call.call_id}\x00{call.record_id}")[:16]
            if key in self._seen:
                continue
            self._seen.add(key)
            calls.append(call)
            self._count(call)
        self.rejected += len(invalid)
        return calls, invalid

    def _count(self, call: Call) -> None:
        self.calls += 1
        self.seconds += call.duration_sec
        if call.has_recording:
            self.recording_durations.append(call.duration_sec)
        # A sum of per-call hashes does not depend on the order the portal listed them in.
        as_json = json.dumps(call.to_json(), sort_keys=True, ensure_ascii=False)
        self._fingerprint = (self._fingerprint + int.from_bytes(_digest(as_json))) % _MOD

    @property
    def fingerprint(self) -> str:
        """Stable hash of the listed calls: the data version of `call_list`."""
        return f"{self._fingerprint:064x}"[:32]
