"""The registry as an .xlsx beside the CSV: the cells carry their types, which a CSV cannot.

Phone numbers and ids are text (a spreadsheet keeps `+7...` and long ids as they are),
durations and counts whole numbers, costs numbers shown with 4 places, the start a real
date-time. Excel has no time zones: the start is the portal's wall-clock time, the offset
is in the CSV. Text cells are never formulas in an .xlsx, so they need no `'` guard.

Written with XlsxWriter in constant-memory mode: rows go to a temporary file in `tmpdir`
as they come, so memory does not grow with the period.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import xlsxwriter

from calltexts_assets.registry.rows import COST_DECIMALS, REGISTRY_COLUMNS, Value

SHEET_NAME = "calls"
# An Excel sheet holds 1,048,576 rows, the header included.
MAX_DATA_ROWS = 1_048_575
_WIDTHS = {"datetime_start": 20, "from": 16, "to": 16, "recording_url": 40, "tags": 30}


class RegistryWorkbook:
    """Writes typed registry rows to `target` (a path or a binary file); `close()` finishes
    the file. Use as a context manager, or call `add_rows` and `close`."""

    def __init__(self, target: str | Path | BinaryIO, *, tmpdir: str | Path) -> None:
        # strings_to_numbers etc. stay off: a text value is written as text, never guessed.
        self._book = xlsxwriter.Workbook(
            target if not isinstance(target, Path) else str(target),
            {"constant_memory": True, "tmpdir": str(tmpdir)},
        )
        self._sheet = self._book.add_worksheet(SHEET_NAME)
        self._formats = {
            "header": self._book.add_format({"bold": True}),
            "datetime": self._book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
            "decimal": self._book.add_format({"num_format": "0." + "0" * COST_DECIMALS}),
        }
        for index, name in enumerate(REGISTRY_COLUMNS):
            self._sheet.set_column(index, index, _WIDTHS.get(name, max(10, len(name) + 2)))
            self._sheet.write_string(0, index, name, self._formats["header"])
        self._sheet.freeze_panes(1, 0)
        self.rows = 0
        # Why the workbook is not the whole registry (then it must not be published).
        self.incomplete: str | None = None

    def add_rows(self, rows: list[dict[str, Value]]) -> None:
        if self.incomplete:
            return
        if self.rows + len(rows) > MAX_DATA_ROWS:
            self.incomplete = (
                f"the registry has more than {MAX_DATA_ROWS:,} rows, more than an Excel sheet "
                "holds: the .xlsx is not written (the CSV has every row)"
            )
            return
        for row in rows:
            self.rows += 1
            self._write_row(self.rows, row)

    def _write_row(self, number: int, row: Mapping[str, Value]) -> None:
        for index, name in enumerate(REGISTRY_COLUMNS):
            value = row[name]
            if value is None or value == "":
                continue
            if isinstance(value, datetime):
                naive = value.replace(tzinfo=None)
                self._sheet.write_datetime(number, index, naive, self._formats["datetime"])
            elif isinstance(value, Decimal):
                self._sheet.write_number(number, index, float(value), self._formats["decimal"])
            elif isinstance(value, int):
                self._sheet.write_number(number, index, value)
            else:
                self._sheet.write_string(number, index, value)

    def close(self) -> None:
        last_column = len(REGISTRY_COLUMNS) - 1
        self._sheet.autofilter(0, 0, max(self.rows, 1), last_column)
        self._book.close()

    def __enter__(self) -> RegistryWorkbook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
