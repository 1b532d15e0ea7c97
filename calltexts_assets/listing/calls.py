"""The normalised call: one row of `voximplant.statistic.get`, validated and typed."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from calltexts_assets.files.storage_keys import is_safe_id
from calltexts_assets.runlog.masking import public_url

# CALL_TYPE 1-5 (docs/specs/bitrix24_wire.md §1); an undocumented N is written type_N.
DIRECTIONS = {
    1: "outgoing",
    2: "incoming",
    3: "incoming_redirected",
    4: "callback",
    5: "info_call",
}
# Types in which the portal dials the client (a callback rings the operator, then the
# client; an info call is a robot's call to the client): the client's number is "to".
PORTAL_DIALS = frozenset({1, 4, 5})
_RU_TRUNK = re.compile(r"8(\d{10})")  # 8 958 111 07 07: Russian national format
_RU_NO_PLUS = re.compile(r"7(\d{10})")  # 7 906 219 50 47: international without "+"


def normalize_phone(number: str) -> str:
    """E.164 for the Russian forms the portal stores as dialled (`8…`, `7…` with 11
    digits); any other shape (extensions, `reg…`/`sip…` lines, `hidden`, foreign numbers)
    stays as it is."""
    for pattern in (_RU_TRUNK, _RU_NO_PLUS):
        match = pattern.fullmatch(number)
        if match:
            return "+7" + match.group(1)
    return number


class InvalidCallRow(ValueError):
    """A statistic row that cannot be exported as it is; `code` names the field's fault.
    The message never quotes a phone number (it reaches logs and the event log)."""

    def __init__(self, message: str, code: str = "invalid_row") -> None:
        super().__init__(message)
        self.code = code


# What the ledger's columns hold (docs/specs/bitrix24_wire.md §1: PHONE_NUMBER is at most
# 20 characters; PORTAL_NUMBER may be `REST_APP:<id>`); a value past these is not a call's.
MAX_TEXT = {
    "PHONE_NUMBER": 64,
    "PORTAL_NUMBER": 64,
    "PORTAL_USER_ID": 32,
    "CALL_FAILED_CODE": 32,
    "COST": 32,
    "COST_CURRENCY": 8,
}
MAX_DURATION_SEC = 7 * 24 * 3600  # a line left open for a week is not a call
MAX_CALL_TYPE = 1_000  # documented: 1-5; an unknown small N is kept as type_N
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _checked_text(row: dict[str, Any], key: str, call_id: str) -> str:
    value = _text(row, key)
    if len(value) > MAX_TEXT[key]:
        raise InvalidCallRow(
            f"{key} of call {call_id} has {len(value)} characters (at most {MAX_TEXT[key]})",
            code=f"invalid_{key.lower()}",
        )
    if _CONTROL.search(value):
        raise InvalidCallRow(
            f"{key} of call {call_id} holds control characters", code=f"invalid_{key.lower()}"
        )
    return value


def _bounded(value: float, low: int, high: int, key: str, call_id: str) -> float:
    if not low <= value <= high:
        raise InvalidCallRow(
            f"{key} of call {call_id} is out of range ({low}..{high})",
            code=f"invalid_{key.lower()}",
        )
    return value


@dataclass(frozen=True)
class Call:
    call_id: str
    record_id: str  # RECORD_FILE_ID (a Bitrix24 Drive file id), or "" without one
    stat_id: int  # the statistic row ID: keyset paging, and re-reading the row
    started_at: datetime  # aware, as the portal gave it
    call_type: int
    duration_sec: int
    phone_number: str  # the client's number
    portal_number: str
    portal_user_id: str
    recording_url: str | None  # CALL_RECORD_URL without its secret parameters
    recording_url_signed: bool  # the portal's link had secrets: ask for it again to use it
    failed_code: str
    telephony_cost: str  # COST as the portal wrote it ("8.1008"): a decimal, kept exact
    telephony_currency: str  # COST_CURRENCY as given ("RUR", "EUR", "" for external calls)
    crm_entity_type: str
    crm_entity_id: str
    # Filled from the portal's directories after listing (listing.directory): empty when
    # the name is unknown (no `user_brief` scope, a line `voximplant.line.get` does not list).
    employee_name: str = ""
    line_name: str = ""
    crm_url: str = ""  # the CRM card on the portal (crm_card_path)

    @property
    def direction(self) -> str:
        return DIRECTIONS.get(self.call_type, f"type_{self.call_type}")

    @property
    def phone_from(self) -> str:
        return self.portal_number if self.call_type in PORTAL_DIALS else self.phone_number

    @property
    def phone_to(self) -> str:
        return self.phone_number if self.call_type in PORTAL_DIALS else self.portal_number

    @property
    def has_recording(self) -> bool:
        """A link, or a Drive file (recordings attached by an external PBX have only that)."""
        return bool(self.recording_url or self.record_id)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        return data


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


def call_from_row(row: dict[str, Any]) -> Call:
    """Normalise one `voximplant.statistic.get` row; raises InvalidCallRow with the reason."""
    call_id = _text(row, "CALL_ID")
    if not is_safe_id(call_id):
        raise InvalidCallRow(
            f"unsafe CALL_ID {call_id[:40]!r} in statistic row ID={str(row.get('ID'))[:20]!r}",
            code="invalid_call_id",
        )
    record_id = _text(row, "RECORD_FILE_ID")
    if record_id and not is_safe_id(record_id):
        raise InvalidCallRow(
            f"unsafe RECORD_FILE_ID {record_id[:40]!r} for call {call_id}",
            code="invalid_record_file_id",
        )
    try:
        started_at = datetime.fromisoformat(_text(row, "CALL_START_DATE"))
        stat_id = int(row["ID"])
        call_type = int(row.get("CALL_TYPE") or 0)
        duration = float(row.get("CALL_DURATION") or 0)
        cost = _checked_text(row, "COST", call_id)
        if cost and not Decimal(cost).is_finite():
            raise ValueError("COST is not a number")
    except (KeyError, TypeError, ValueError, InvalidOperation, OverflowError) as exc:
        # the exception's text may quote the value: name the fault, not the data
        reason = str(exc) if isinstance(exc, InvalidCallRow) else type(exc).__name__
        raise InvalidCallRow(f"malformed statistic row for call {call_id}: {reason}") from None
    if started_at.tzinfo is None:
        raise InvalidCallRow(
            f"CALL_START_DATE without UTC offset for call {call_id}", code="invalid_call_start_date"
        )
    _bounded(stat_id, 1, 2**63 - 1, "ID", call_id)
    _bounded(call_type, 0, MAX_CALL_TYPE, "CALL_TYPE", call_id)
    if duration != duration:  # NaN
        raise InvalidCallRow(
            f"CALL_DURATION of call {call_id} is not a number", "invalid_call_duration"
        )
    _bounded(
        int(min(max(duration, -1), MAX_DURATION_SEC + 1)),
        0,
        MAX_DURATION_SEC,
        "CALL_DURATION",
        call_id,
    )
    recording_url, signed = public_url(_text(row, "CALL_RECORD_URL"))
    return Call(
        call_id=call_id,
        record_id=record_id,
        stat_id=stat_id,
        started_at=started_at,
        call_type=call_type,
        duration_sec=int(duration),
        phone_number=normalize_phone(_checked_text(row, "PHONE_NUMBER", call_id)),
        portal_number=normalize_phone(_checked_text(row, "PORTAL_NUMBER", call_id)),
        portal_user_id=_checked_text(row, "PORTAL_USER_ID", call_id),
        recording_url=recording_url or None,
        recording_url_signed=signed,
        failed_code=_checked_text(row, "CALL_FAILED_CODE", call_id),
        telephony_cost=cost,
        telephony_currency=_checked_text(row, "COST_CURRENCY", call_id),
        crm_entity_type=_crm_part(row, "CRM_ENTITY_TYPE"),
        crm_entity_id=_crm_part(row, "CRM_ENTITY_ID"),
    )


# The CRM binding is not needed to export the call: a value no portal writes (a long or
# multi-line one) is dropped rather than the call rejected.
_CRM_PART = re.compile(r"[A-Za-z0-9_]{1,32}")
# CRM_ENTITY_TYPE -> the card's path on the portal (docs/specs/bitrix24_wire.md §12:
# BX24.openPath lists /crm/<lead|contact|company|deal>/details/<id>/).
CRM_CARD_KINDS = {"LEAD": "lead", "CONTACT": "contact", "COMPANY": "company", "DEAL": "deal"}


def _crm_part(row: dict[str, Any], key: str) -> str:
    value = _text(row, key)
    return value if _CRM_PART.fullmatch(value) else ""


def crm_card_path(entity_type: str, entity_id: str) -> str:
    """`/crm/deal/details/5/` for a known entity type and a numeric id, else ""."""
    kind = CRM_CARD_KINDS.get(entity_type.upper())
    if kind is None or not entity_id.isdigit():
        return ""
    return f"/crm/{kind}/details/{entity_id}/"
