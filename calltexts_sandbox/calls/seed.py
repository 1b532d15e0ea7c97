"""Deterministic synthetic calls: rows of `voximplant.statistic.get` for the portal emulator.

Each day is generated from its own random stream (seed + date), so a day's calls are the
same whatever range was seeded: re-seeding a longer period never rewrites a known day.
Statistic IDs are `days since 2000-01-01 * 100000 + n`, increasing with the start time
across days, as a real portal's auto-increment would be.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from calltexts_sandbox.portal.files import SIGNED, STORAGE

MAX_CALLS_PER_DAY = 99_999
_EPOCH = date(2000, 1, 1)
_DAY_START = time(9, 0)
_WORKDAY_SEC = 10 * 3600  # calls start between 09:00 and 19:00 local time
# Lognormal, median 40 s: mean ~65 s, ~10 % of answered calls over 2.5 min, ~0.1 % over
# 15 min (split for the STT), a few at the 20-min cap; 60 x 150 calls give ~9,000 minutes.
_MEDIAN_SEC = 40.0
_SIGMA = 1.0
_MAX_SEC = 1200
_MISSED_SHARE = 0.08  # incoming calls nobody answered (304)
_UNANSWERED_SHARE = 0.12  # calls the portal placed that did not connect
_MONO_SHARE = 0.15
_WAV_SHARE = 0.12  # recordings kept as WAV (external PBXs), the rest MP3
# Where a recording is (docs/specs/bitrix24_wire.md §2): a Voximplant storage link with its
# Drive copy, a PBX link signed with an expiring token with its Drive copy, or the Drive
# file alone (attached by an external phone system, CALL_RECORD_URL null).
_SOURCES = (("link", 0.5), ("signed", 0.2), ("drive", 0.3))
_PORTAL_NUMBERS = ("+74951234567", "74993255849", "+78123334455", "reg133788")
_OPERATORS = ("1", "3", "5", "7", "8", "11", "12", "15")
_CRM_TYPES = ("CONTACT", "LEAD", "COMPANY", "DEAL")
# The portal's users (`user.get`): the operators above but "15", a user deleted since (the
# portal no longer lists him, so his calls keep the bare id); "8" has left (ACTIVE false:
# user.get still returns him).
EMPLOYEES = {
    "1": ("Анна", "Смирнова", True),
    "3": ("Игорь", "Петров", True),
    "5": ("Мария", "Кузнецова", True),
    "7": ("Олег", "Соколов", True),
    "8": ("Елена", "Попова", False),
    "11": ("Дмитрий", "Волков", True),
    "12": ("Ольга", "Морозова", True),
}
# `voximplant.line.get`: line ids as keys, names as values (only reg…/sip… lines; numbers
# are not keys there, so they stay as they are).
LINES = {"reg133788": "Офис Москва (SIP)", "sip7": "Офисная АТС 1"}
# CALL_TYPE 1-5: outgoing, incoming, incoming redirected, callback, info call.
_TYPE_WEIGHTS = {1: 40, 2: 42, 3: 6, 4: 6, 5: 6}
_COST_PER_MIN = {1: 1.8, 2: 0.0, 3: 0.0, 4: 1.8, 5: 0.9}  # RUR: the portal's legs are billed
# CALL_FAILED_CODE of calls the portal placed that did not connect, with their reasons.
_NOT_CONNECTED = (
    ("603-S", "Decline self"),
    ("486", "Busy here"),
    ("480", "Temporarily unavailable"),
    ("603", "Decline"),
    ("OTHER", "Call failed"),
)


@dataclass(frozen=True)
class SeedSpec:
    """What `POST /_sandbox/seed` and the CLI take to (re)seed a portal."""

    seed: int
    start: date
    days: int
    calls_per_day: int
    tz: str = "Europe/Moscow"

    def rows(self) -> list[dict[str, Any]]:
        return generate_rows(self.seed, self.start, self.days, self.calls_per_day, self.tz)


def _share(label: str, call_id: str) -> float:
    digest = hashlib.sha256(f"{label}:{call_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def recording_is_stereo(call_id: str) -> bool:
    """Whether the sandbox renders this call's recording in stereo (most) or mono (some).

    A pure function of the call id, so the portal can tell for any row it was given.
    """
    return _share("stereo", call_id) >= _MONO_SHARE


def recording_format(call_id: str) -> str:
    """ "wav" or "mp3": how the sandbox portal keeps this call's recording (a pure function
    of the call id, as `recording_is_stereo`)."""
    return "wav" if _share("format", call_id) < _WAV_SHARE else "mp3"


def recording_source(call_id: str) -> str:
    """ "link", "signed" or "drive": where the seeded call's recording is (see _SOURCES)."""
    point, total = _share("source", call_id), 0.0
    for source, share in _SOURCES:
        total += share
        if point < total:
            return source
    return _SOURCES[-1][0]


def _duration(rng: random.Random) -> int:
    return max(1, min(_MAX_SEC, round(rng.lognormvariate(math.log(_MEDIAN_SEC), _SIGMA))))


def _phone(rng: random.Random) -> str:
    """A client's number as portals store them: +7…, 7… or 8… (as dialled in Russia)."""
    subscriber = "9" + "".join(str(rng.randrange(10)) for _ in range(9))
    return rng.choices(("+7", "7", "8"), weights=(5, 2, 3))[0] + subscriber


def _recording(call_id: str, record_id: int, started: datetime) -> tuple[str | None, int]:
    """(CALL_RECORD_URL, RECORD_FILE_ID) of a recorded call. Links are placeholders the
    portal turns into its storage host's URLs (signed ones with a token) when it answers."""
    source = recording_source(call_id)
    name = f"{started:%Y/%m/%d}/{call_id.removeprefix('sbx.')}.{recording_format(call_id)}"
    if source == "link":
        return f"{STORAGE}/voximplant-records/{name}?record_id={record_id}", record_id
    if source == "signed":
        return f"{SIGNED}/pbx-records/{name}?record_id={record_id}", record_id
    return None, record_id


def _day_rows(seed: int, day: date, calls_per_day: int, zone: ZoneInfo) -> list[dict[str, Any]]:
    rng = random.Random(f"calltexts-sandbox:{seed}:{day.isoformat()}")
    day_start = datetime.combine(day, _DAY_START, tzinfo=zone)
    offsets = sorted(rng.randrange(_WORKDAY_SEC) for _ in range(calls_per_day))
    id_base = (day - _EPOCH).days * 100_000
    rows = []
    for n, offset in enumerate(offsets, start=1):
        stat_id = id_base + n
        started = day_start + timedelta(seconds=offset)
        call_type = rng.choices(list(_TYPE_WEIGHTS), weights=list(_TYPE_WEIGHTS.values()))[0]
        placed = call_type in (1, 4, 5)
        failed = rng.random() < (_UNANSWERED_SHARE if placed else _MISSED_SHARE)
        if not failed:
            code, reason = "200", "Success call"
        elif placed:
            code, reason = rng.choice(_NOT_CONNECTED)
        else:
            code, reason = "304", "Missed call"
        duration = 0 if failed else _duration(rng)
        crm = rng.random() < 0.7
        minutes = math.ceil(duration / 60)
        call_hex = hashlib.sha256(f"{seed}:{day}:{n}".encode()).hexdigest()[:20]
        call_id = f"sbx.{call_hex}"
        # No recording: "" as Voximplant leaves it; RECORD_FILE_ID is then null.
        link, file_id = ("", None) if failed else _recording(call_id, stat_id * 10 + 7, started)
        # Real portals give most fields as strings; RECORD_FILE_ID is a JSON number.
        rows.append(
            {
                "ID": str(stat_id),
                "CALL_ID": call_id,
                "CALL_TYPE": str(call_type),
                "CALL_CATEGORY": "external",
                "CALL_DURATION": str(duration),
                "CALL_START_DATE": started.isoformat(),
                "PHONE_NUMBER": _phone(rng),
                "PORTAL_NUMBER": rng.choice(_PORTAL_NUMBERS),
                # An info call is a robot's: no responsible user.
                "PORTAL_USER_ID": None if call_type == 5 else rng.choice(_OPERATORS),
                "CALL_RECORD_URL": link,
                "RECORD_FILE_ID": file_id,
                "RECORD_DURATION": None if failed else str(duration),
                "CALL_FAILED_CODE": code,
                "CALL_FAILED_REASON": reason,
                "COST": f"{minutes * _COST_PER_MIN[call_type]:.4f}",
                "COST_CURRENCY": "RUR",
                "CRM_ENTITY_TYPE": rng.choice(_CRM_TYPES) if crm else None,
                "CRM_ENTITY_ID": str(rng.randrange(1, 50_000)) if crm else None,
            }
        )
    return rows


def generate_rows(
    seed: int, start: date, days: int, calls_per_day: int, tz: str = "Europe/Moscow"
) -> list[dict[str, Any]]:
    """`calls_per_day` calls on each of `days` days from `start`, ordered by ID.

    Recorded calls have a Drive file (RECORD_FILE_ID) and most a CALL_RECORD_URL
    placeholder that the portal turns into its storage host's URL; calls that did not
    connect (CALL_FAILED_CODE 304, 603-S, 486, ...) last 0 s and have no recording.
    """
    if days < 0 or not 0 <= calls_per_day <= MAX_CALLS_PER_DAY:
        raise ValueError(f"need days >= 0 and 0 <= calls_per_day <= {MAX_CALLS_PER_DAY}")
    if start < _EPOCH:
        raise ValueError("sandbox calls start on 2000-01-01 or later")
    zone = ZoneInfo(tz)
    rows: list[dict[str, Any]] = []
    for index in range(days):
        rows.extend(_day_rows(seed, start + timedelta(days=index), calls_per_day, zone))
    return rows


def day_counts(rows: list[dict[str, Any]], tz: str = "Europe/Moscow") -> dict[date, int]:
    """Calls per local calendar day of `tz`, as a daily partition would see them."""
    zone = ZoneInfo(tz)
    counts = Counter(
        datetime.fromisoformat(row["CALL_START_DATE"]).astimezone(zone).date() for row in rows
    )
    return dict(sorted(counts.items()))


def expected_day_counts(
    seed: int, start: date, days: int, calls_per_day: int, tz: str = "Europe/Moscow"
) -> dict[date, int]:
    """The per-day counts the portal will report for this seed (for tests)."""
    counts = day_counts(generate_rows(seed, start, days, calls_per_day, tz), tz)
    return {
        start + timedelta(days=i): counts.get(start + timedelta(days=i), 0) for i in range(days)
    }
