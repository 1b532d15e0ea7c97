"""The normalised call: one row of `voximplant.statistic.get`, validated and typed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from calltexts_assets.core.storage_keys import is_safe_id

DIRECTIONS = {1: "outgoing", 2: "incoming", 3: "incoming_redirected", 4: "callback"}


class InvalidCallRow(ValueError):
    """A statistic row that cannot be exported as it is (bad id, missing field)."""


@dataclass(frozen=True)
class Call:
    call_id: str
    record_id: str  # RECORD_FILE_ID, or "" when the call has no recording
    stat_id: int  # the statistic row ID, used for keyset paging
    started_at: datetime  # aware, as the portal gave it
    call_type: int
    duration_sec: int
    phone_number: str  # the client's number
    portal_number: str
    portal_user_id: str
    recording_url: str | None
    failed_code: str
    bitrix_cost: float
    bitrix_cost_currency: str
    crm_entity_type: str
    crm_entity_id: str

    @property
    def direction(self) -> str:
        return DIRECTIONS.get(self.call_type, f"type_{self.call_type}")

    @property
    def phone_from(self) -> str:
        return self.portal_number if self.call_type == 1 else self.phone_number

    @property
    def phone_to(self) -> str:
        return self.phone_number if self.call_type == 1 else self.portal_number

    @property
    def has_recording(self) -> bool:
        return bool(self.recording_url)

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
        raise InvalidCallRow(f"unsafe CALL_ID {call_id!r} in statistic row ID={row.get('ID')!r}")
    record_id = _text(row, "RECORD_FILE_ID")
    if record_id and not is_safe_id(record_id):
        raise InvalidCallRow(f"unsafe RECORD_FILE_ID {record_id!r} for call {call_id}")
    try:
        started_at = datetime.fromisoformat(_text(row, "CALL_START_DATE"))
        stat_id = int(row["ID"])
        call_type = int(row.get("CALL_TYPE") or 0)
        duration = int(float(row.get("CALL_DURATION") or 0))
        cost = float(row.get("COST") or 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidCallRow(f"malformed statistic row for call {call_id}: {exc}") from exc
    if started_at.tzinfo is None:
        raise InvalidCallRow(f"CALL_START_DATE without UTC offset for call {call_id}")
    return Call(
        call_id=call_id,
        record_id=record_id,
        stat_id=stat_id,
        started_at=started_at,
        call_type=call_type,
        duration_sec=max(duration, 0),
        phone_number=_text(row, "PHONE_NUMBER"),
        portal_number=_text(row, "PORTAL_NUMBER"),
        portal_user_id=_text(row, "PORTAL_USER_ID"),
        recording_url=_text(row, "CALL_RECORD_URL") or None,
        failed_code=_text(row, "CALL_FAILED_CODE"),
        bitrix_cost=cost,
        bitrix_cost_currency=_text(row, "COST_CURRENCY"),
        crm_entity_type=_text(row, "CRM_ENTITY_TYPE"),
        crm_entity_id=_text(row, "CRM_ENTITY_ID"),
    )
