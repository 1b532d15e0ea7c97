"""The emulated portal's telephony statistics: `voximplant.statistic.get` over its rows
(docs/specs/bitrix24_wire.md §1).

Emulator choices where the real portal is unspecified: without a valid SORT/ORDER the rows
come newest first (so a client that pages by ID must say `SORT=ID`, `ORDER=ASC`); a
comparison (`>ID`) whose value is an array, as an unresolved batch reference leaves it, is
dropped, the worst case for a client that would trust such a page.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from calltexts_sandbox.portal.errors import ApiError

PAGE_SIZE = 50
STAT_METHOD = "voximplant.statistic.get"
_OPERATORS = ("!><", "><", ">=", "<=", "!=", "!%", ">", "<", "=", "!", "%", "?")
_DATE_FIELDS = frozenset({"CALL_START_DATE"})


@dataclass(frozen=True)
class Row:
    stat_id: int
    started: datetime
    data: dict[str, Any]


def as_instant(value: Any, zone: ZoneInfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise ApiError(400, "INVALID_ARG_VALUE", f"bad date {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def _field(row: Row, name: str) -> Any:
    if name == "ID":
        return row.stat_id
    if name in _DATE_FIELDS:
        return row.started
    return row.data.get(name)


def _coerce(value: Any, like: Any, zone: ZoneInfo) -> Any:
    if isinstance(like, datetime):
        return as_instant(value, zone)
    if isinstance(like, int):
        try:
            return int(float(value))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "INVALID_ARG_VALUE", f"bad number {value!r}") from exc
    return value


def _values_equal(actual: Any, wanted: Any) -> bool:
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return str(actual if actual is not None else "") == str(wanted)


def _split(key: str) -> tuple[str, str]:
    for op in _OPERATORS:
        if key.startswith(op):
            return op, key[len(op) :]
    return "=", key


class RowFilter:
    def __init__(self, raw: Any, zone: ZoneInfo, known: set[str]) -> None:
        self.tests: list[tuple[str, str, Any]] = []
        self.id_floor: int | None = None  # lowest ID that can match (the keyset fast path)
        self.zone = zone
        if not isinstance(raw, dict):  # a non-array FILTER is no filter at all
            return
        sample = Row(0, datetime.now(zone), {})
        for key, value in raw.items():
            op, name = _split(str(key).upper())
            if name not in known or op not in ("=", "!", "!=", ">", ">=", "<", "<="):
                continue  # the portal drops unknown fields and operators silently
            like = _field(sample, name)
            if isinstance(value, dict | list):
                items = list(value.values()) if isinstance(value, dict) else value
                if op not in ("=", "!", "!="):  # an array under > or <: dropped
                    continue
                if any(isinstance(v, dict | list) for v in items) or not items:
                    continue
                wanted: Any = [_coerce(v, like, zone) for v in items]
            else:
                wanted = _coerce(value, like, zone)
            self.tests.append((op, name, wanted))
            if name == "ID" and op in (">", ">=") and not isinstance(wanted, list):
                floor = wanted + 1 if op == ">" else wanted
                self.id_floor = floor if self.id_floor is None else max(self.id_floor, floor)

    def __call__(self, row: Row) -> bool:
        for op, name, wanted in self.tests:
            actual = _field(row, name)
            if isinstance(wanted, list):
                hit = any(_values_equal(actual, w) for w in wanted)
                if hit == (op in ("!", "!=")):
                    return False
                continue
            if op in ("=", "!", "!="):
                if _values_equal(actual, wanted) == (op == "="):
                    continue
                return False
            if actual is None or isinstance(actual, str):
                try:
                    actual, wanted = float(actual), float(wanted)
                except (TypeError, ValueError):
                    return False
            if not {
                ">": actual > wanted,
                ">=": actual >= wanted,
                "<": actual < wanted,
                "<=": actual <= wanted,
            }[op]:
                return False
        return True


def _sortable(value: Any) -> Any:
    if isinstance(value, datetime | int | float):
        return (0, value, "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0, str(value or ""))


class StatisticRows:
    """The rows, kept in ID order, and the query `voximplant.statistic.get` runs on them.
    Not thread-safe by itself: `Portal` swaps whole snapshots under its lock."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], tz: str) -> None:
        self.zone = ZoneInfo(tz)
        self.rows = sorted(
            (Row(int(r["ID"]), as_instant(r["CALL_START_DATE"], self.zone), dict(r)) for r in rows),
            key=lambda r: r.stat_id,
        )
        self.ids = [r.stat_id for r in self.rows]
        self.fields = {"ID", *(key for r in self.rows for key in r.data)}
        # RECORD_FILE_ID -> the row: the Drive files and the storage host's records
        self.by_file = {
            str(r.data["RECORD_FILE_ID"]): r.data for r in self.rows if r.data.get("RECORD_FILE_ID")
        }

    def query(self, params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(rows of the page, the envelope's `total`/`next`): `start=-1` counts nothing,
        so `total` is 0 and there is no `next`, whatever the rows."""
        upper = {str(k).upper(): v for k, v in params.items()}
        flt = RowFilter(upper.get("FILTER"), self.zone, self.fields)
        sort, order = upper.get("SORT"), upper.get("ORDER")
        valid = isinstance(sort, str) and sort in self.fields and order in ("ASC", "DESC")
        sort_key, descending = (sort, order == "DESC") if valid else ("CALL_START_DATE", True)
        try:
            offset = int(upper.get("START", 0) or 0)
        except (TypeError, ValueError):
            offset = 0
        if offset < 0 and sort_key == "ID" and not descending:
            # Rows are kept in ID order: jump to the floor and stop at one page.
            first = bisect.bisect_left(self.ids, flt.id_floor) if flt.id_floor is not None else 0
            page: list[Row] = []
            for row in self.rows[first:]:
                if flt(row):
                    page.append(row)
                    if len(page) == PAGE_SIZE:
                        break
            return [r.data for r in page], {"total": 0}
        matched = [r for r in self.rows if flt(r)]
        matched.sort(key=lambda r: (_sortable(_field(r, sort_key)), r.stat_id), reverse=descending)
        if offset < 0:
            return [r.data for r in matched[:PAGE_SIZE]], {"total": 0}
        envelope: dict[str, Any] = {"total": len(matched)}
        if offset + PAGE_SIZE < len(matched):
            envelope["next"] = offset + PAGE_SIZE
        return [r.data for r in matched[offset : offset + PAGE_SIZE]], envelope
