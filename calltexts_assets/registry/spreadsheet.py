"""Cells that a spreadsheet must show as text, never run (CSV injection).

OWASP's CSV-injection guidance: a cell that starts with `=`, `+`, `-`, `@`, a tab or a
carriage return is evaluated as a formula by Excel and LibreOffice (`=HYPERLINK(...)`,
`+cmd|' /C calc'!A0`, `-2+3`, `@SUM(...)`), so such a cell gets a leading `'`, which the
reader shows as text. Full-width forms count too: LibreOffice folds them.
A phone number is the one legitimate value starting with `+`: digits, spaces, dashes and
brackets cannot form a formula, so a phone-shaped value in a phone column stays as it is.
"""

from __future__ import annotations

import re

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠")
_PHONE = re.compile(r"\+?[0-9][0-9 ()\-]{0,30}")


def is_phone_shaped(value: str) -> bool:
    return bool(_PHONE.fullmatch(value))


def is_formula_like(value: str, *, phone: bool = False) -> bool:
    """Would a spreadsheet evaluate this cell? (`phone`: the cell is a phone column.)"""
    if not value.startswith(FORMULA_TRIGGERS):
        return False
    return not (phone and is_phone_shaped(value))


def text_cell(value: str, *, phone: bool = False) -> str:
    """`value` as a cell a spreadsheet shows as text."""
    return "'" + value if is_formula_like(value, phone=phone) else value
