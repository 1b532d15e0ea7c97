"""Bitrix24's telephony codes in the registry's smaller vocabularies.

The ledger keeps the raw values (`CALL_TYPE`, `CALL_FAILED_CODE`, `COST_CURRENCY`); these
pure functions say what the registry shows for them. Sources: docs/specs/bitrix24_wire.md §1.
"""

from __future__ import annotations

# CALL_FAILED_CODE: the documented values, plus "500" and "402-B24" the core also knows.
# Anything else (the field is an open set) is "other"; the raw code stays in `failed_code`.
CALL_RESULTS = {
    "200": "answered",
    "304": "missed",
    "603": "declined",
    "603-S": "cancelled",
    "403": "forbidden",
    "404": "invalid_number",
    "486": "busy",
    "484": "unavailable",
    "503": "unavailable",
    "480": "temporarily_unavailable",
    "402": "insufficient_funds",
    "402-B24": "insufficient_funds",
    "423": "blocked",
    "500": "failed",
    "OTHER": "other",
}
OTHER_RESULT = "other"

# Bitrix24 writes the rouble as RUR (the pre-1998 ISO code); ISO 4217 says RUB.
_ISO_CURRENCIES = {"RUR": "RUB"}


def call_result(failed_code: str | None) -> str:
    """The call's outcome word for CALL_FAILED_CODE; "" when the portal gave none."""
    code = (failed_code or "").strip().upper()
    if not code:
        return ""
    return CALL_RESULTS.get(code, OTHER_RESULT)


def iso_currency(currency: str | None) -> str:
    """COST_CURRENCY as an ISO 4217 code (`RUR` -> `RUB`); "" stays "" (external calls)."""
    code = (currency or "").strip().upper()
    return _ISO_CURRENCIES.get(code, code)
