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

RECORDS_PATH = "/sandbox/records"  # the portal prefixes its own base URL at answer time
MAX_CALLS_PER_DAY = 99_999
_EPOCH = date(2000, 1, 1)
_DAY_START = time(9, 0)
_WORKDAY_SEC = 10 * 3600  # calls start between 09:00 and 19:00 local time
# Lognormal, median 40 s: mean ~65 s, ~10 % of answered calls over 2.5 min, ~0.1 % over
# 15 min (split for the STT), a few at the 20-min cap; 60 x 150 calls give ~9,000 minutes.
_MEDIAN_SEC = 40.0
_SIGMA = 1.0
_MAX_SEC = 1200
_MISSED_SHARE = 0.08
_MONO_SHARE = 0.15
_PORTAL_NUMBERS = ("+74951234567", "+74957654321", "+78123334455")
_OPERATORS = ("1", "3", "5", "7", "8", "11", "12", "15")
_CRM_TYPES = ("CONTACT", "LEAD", "COMPANY", "DEAL")
_COST_PER_MIN = {1: 1.8, 2: 0.0, 3: 0.0, 4: 1.8}  # RUB, outgoing legs are billed


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


def recording_is_stereo(call_id: str) -> bool:
    """Whether the sandbox renders this call's recording in stereo (most) or mono (some).

    A pure function of the call id, so the portal can tell for any row it was given.
    """
    digest = hashlib.sha256(f"stereo:{call_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 >= _MONO_SHARE


def record_path(record_id: str) -> str:
    return f"{RECORDS_PATH}/{record_id}.mp3"


def _duration(rng: random.Random) -> int:
    return max(1, min(_MAX_SEC, round(rng.lognormvariate(math.log(_MEDIAN_SEC), _SIGMA))))


def _phone(rng: random.Random) -> str:
    return "+79" + "".join(str(rng.randrange(10)) for _ in range(9))


def _day_rows(seed: int, day: date, calls_per_day: int, zone: ZoneInfo) -> list[dict[str, Any]]:
    rng = random.Random(f"calltexts-sandbox:{seed}:{day.isoformat()}")
    day_start = datetime.combine(day, _DAY_START, tzinfo=zone)
    offsets = sorted(rng.randrange(_WORKDAY_SEC) for _ in range(calls_per_day))
    id_base = (day - _EPOCH).days * 100_000
    rows = []
    for n, offset in enumerate(offsets, start=1):
        stat_id = id_base + n
        call_type = rng.choices((1, 2, 3, 4), weights=(45, 45, 6, 4))[0]
        missed = call_type != 1 and rng.random() < _MISSED_SHARE / 0.55
        duration = 0 if missed else _duration(rng)
        record_id = "" if missed else str(stat_id * 10 + 7)  # differs from ID on purpose
        crm = rng.random() < 0.7
        minutes = math.ceil(duration / 60)
        call_hex = hashlib.sha256(f"{seed}:{day}:{n}".encode()).hexdigest()[:20]
        # Real portals give most fields as strings; RECORD_FILE_ID is null without a file.
        rows.append(
            {
                "ID": str(stat_id),
                "CALL_ID": f"sbx.{call_hex}",
                "CALL_TYPE": str(call_type),
                "CALL_CATEGORY": "external",
                "CALL_DURATION": str(duration),
                "CALL_START_DATE": (day_start + timedelta(seconds=offset)).isoformat(),
                "PHONE_NUMBER": _phone(rng),
                "PORTAL_NUMBER": rng.choice(_PORTAL_NUMBERS),
                "PORTAL_USER_ID": rng.choice(_OPERATORS),
                "CALL_RECORD_URL": record_path(record_id) if record_id else "",
                "RECORD_FILE_ID": record_id or None,
                "CALL_FAILED_CODE": "304" if missed else "200",
                "CALL_FAILED_REASON": "Missed call" if missed else "Success call",
                "COST": f"{minutes * _COST_PER_MIN[call_type]:.4f}",
                "COST_CURRENCY": "RUB",
                "CRM_ENTITY_TYPE": rng.choice(_CRM_TYPES) if crm else "",
                "CRM_ENTITY_ID": str(rng.randrange(1, 50_000)) if crm else "",
            }
        )
    return rows


def generate_rows(
    seed: int, start: date, days: int, calls_per_day: int, tz: str = "Europe/Moscow"
) -> list[dict[str, Any]]:
    """`calls_per_day` calls on each of `days` days from `start`, ordered by ID.

    CALL_RECORD_URL holds the path `/sandbox/records/<RECORD_FILE_ID>.mp3`; the portal
    emulator turns it into an absolute URL on its own base URL. Missed calls
    (CALL_FAILED_CODE "304") last 0 s and have no recording.
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
