"""Listing: what call_list keeps of the statistic rows, batch by batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calltexts_assets.billing.cost import forecast
from calltexts_assets.listing.calls import call_from_row, normalize_phone
from calltexts_assets.listing.tally import Listing


def _row(n: int, *, day: str = "2026-11-24", call_id: str | None = None, **changes: object):
    return {
        "ID": str(n),
        "CALL_ID": call_id or f"call.{n}",
        "CALL_TYPE": "2",
        "CALL_DURATION": str(30 * n),
        "CALL_START_DATE": f"{day}T10:00:{n:02d}+03:00",
        "PHONE_NUMBER": "+79991234567",
        "PORTAL_NUMBER": "+74950000000",
        "PORTAL_USER_ID": "5",
        "CALL_RECORD_URL": f"https://portal.example/rec/{n}.mp3",
        "RECORD_FILE_ID": str(1000 + n),
        **changes,
    }


def test_each_call_once_across_batches_first_occurrence_wins() -> None:
    listing = Listing()
    first, _ = listing.add([_row(1), _row(2)])
    again, _ = listing.add([_row(1, CALL_DURATION="999"), _row(3, day="2026-11-25")])
    assert [c.call_id for c in first] == ["call.1", "call.2"]
    assert [c.call_id for c in again] == ["call.3"]
    assert (listing.calls, listing.seconds) == (3, 30 + 60 + 90)


def test_invalid_rows_get_a_placeholder_and_a_reason() -> None:
    listing = Listing()
    calls, invalid = listing.add([_row(1, call_id="../../etc/passwd"), _row(2)])
    assert [c.call_id for c in calls] == ["call.2"]
    (row,) = invalid
    assert row.call_id.startswith("invalid-") and "/" not in row.call_id
    assert row.reason and row.code == "invalid_call_id"
    assert (listing.calls, listing.rejected) == (1, 1)


def test_forecast_counts_calls_with_a_recording_only() -> None:
    listing = Listing()
    listing.add([_row(1), _row(2, CALL_RECORD_URL="", RECORD_FILE_ID="")])
    assert list(listing.recording_durations) == [30]
    assert forecast(listing.recording_durations).minutes == 1


def test_fingerprint_ignores_order_and_batching_but_not_content() -> None:
    rows = [_row(n) for n in range(1, 6)]
    one, two, changed = Listing(), Listing(), Listing()
    one.add(rows)
    two.add(rows[3:])
    two.add(list(reversed(rows[:3])))
    changed.add([*rows[:4], _row(5, CALL_DURATION="151")])
    assert one.fingerprint == two.fingerprint
    assert one.fingerprint != changed.fingerprint
    assert len(one.fingerprint) == 32


# -- documented rows (docs/specs/payloads/bitrix24) ---------------------------------------

PAYLOADS = Path(__file__).resolve().parents[2] / "docs" / "specs" / "payloads" / "bitrix24"


def documented_rows(name: str) -> list[dict[str, object]]:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))["result"]


@pytest.mark.parametrize(
    "payload",
    ["voximplant_statistic_get_response.json", "voximplant_statistic_get_response_ru.json"],
)
def test_a_drive_file_without_a_link_is_a_recording(payload: str) -> None:
    """The docs' second row: CALL_RECORD_URL null, RECORD_FILE_ID 9079 (a JSON number),
    as `telephony.externalCall.attachRecord` leaves it. It used to be `no_recording`."""
    declined, attached = (call_from_row(row) for row in documented_rows(payload))
    assert (attached.record_id, attached.recording_url, attached.has_recording) == (
        "9079",
        None,
        True,
    )
    assert not declined.has_recording  # "" link, null file id
    assert declined.failed_code == "603-S" and declined.direction == "outgoing"
    assert attached.direction == "incoming" and attached.telephony_currency == ""


def test_russian_numbers_in_every_stored_form_become_e164() -> None:
    _, attached = (
        call_from_row(r) for r in documented_rows("voximplant_statistic_get_response_ru.json")
    )
    assert attached.phone_from == "+79062195047"  # "79062195047" in the docs' example
    assert attached.phone_to == "3"  # an external line id stays as it is
    assert normalize_phone("89581110707") == "+79581110707"
    assert normalize_phone("+79581110707") == "+79581110707"
    for other in ("19061234568", "+499061234567", "101", "hidden", "reg133788", "", "8495123"):
        assert normalize_phone(other) == other


@pytest.mark.parametrize(
    ("call_type", "direction", "client_is_called"),
    [(1, "outgoing", True), (2, "incoming", False), (3, "incoming_redirected", False),
     (4, "callback", True), (5, "info_call", True), (9, "type_9", False)],
)  # fmt: skip
def test_every_call_type_has_a_direction_and_the_right_parties(
    call_type: int, direction: str, client_is_called: bool
) -> None:
    call = call_from_row(_row(1, CALL_TYPE=str(call_type), PORTAL_USER_ID=None))
    assert call.direction == direction
    client, line = "+79991234567", "+74950000000"
    assert (call.phone_from, call.phone_to) == (
        (line, client) if client_is_called else (client, line)
    )


def test_a_link_with_a_token_is_kept_without_it_and_marked_signed() -> None:
    url = "https://pbx.example/rec/1.mp3?record_id=5&token=s3cr3t&expires=1800000000"
    call = call_from_row(_row(1, CALL_RECORD_URL=url))
    assert call.recording_url == "https://pbx.example/rec/1.mp3?record_id=5&expires=1800000000"
    assert call.recording_url_signed
    assert "s3cr3t" not in json.dumps(call.to_json())
    plain = call_from_row(_row(2))
    assert not plain.recording_url_signed


def test_cost_is_kept_exact_and_a_bad_cost_rejects_the_row() -> None:
    assert call_from_row(_row(1, COST="8.1008", COST_CURRENCY="RUR")).telephony_cost == "8.1008"
    _, invalid = Listing().add([_row(1, COST="lots")])
    assert invalid and "malformed" in invalid[0].reason


ODD_FIELDS = [
    ({"PHONE_NUMBER": "+7" + "9" * 200}, "invalid_phone_number"),
    ({"PORTAL_NUMBER": "+7495\r\nМодель: forged"}, "invalid_portal_number"),
    ({"CALL_DURATION": "1e11"}, "invalid_call_duration"),
    ({"CALL_DURATION": "nan"}, "invalid_call_duration"),
    ({"CALL_DURATION": "-5"}, "invalid_call_duration"),
    ({"CALL_TYPE": "100000000000"}, "invalid_call_type"),
    ({"ID": "99999999999999999999999"}, "invalid_id"),
    ({"PORTAL_USER_ID": "u" * 40}, "invalid_portal_user_id"),
    ({"CALL_FAILED_CODE": "X" * 33}, "invalid_call_failed_code"),
]


@pytest.mark.parametrize(("changes", "code"), ODD_FIELDS)
def test_an_odd_field_rejects_its_row_with_a_code_and_keeps_its_call_id(
    changes: dict[str, str], code: str
) -> None:
    calls, invalid = Listing().add([_row(1, **changes), _row(2)])
    assert [c.call_id for c in calls] == ["call.2"]
    (row,) = invalid
    assert (row.call_id, row.code) == ("call.1", code)
    assert row.started_at is not None  # the row's own day
    assert "9999999" not in row.reason and "forged" not in row.reason
