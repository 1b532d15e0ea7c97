"""The registry in a real spreadsheet program: headless LibreOffice Calc opens the CSV as a
Russian (or English) user's does, and the .xlsx as anyone's; openpyxl reads what it made.

Skipped only where LibreOffice is absent; CI installs it (Debian's libreoffice-calc), and
there a missing program fails the test instead.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from calltexts_assets.registry.rows import REGISTRY_COLUMNS, Value, write_registry_file
from calltexts_assets.registry.schema import load_registry_schema
from calltexts_assets.registry.xlsx import RegistryWorkbook
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_tests.support.records import invalid_record, transcribed_record

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
if SOFFICE is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must install LibreOffice (libreoffice-calc) for these tests")
    pytest.skip("LibreOffice is not installed", allow_module_level=True)

RUSSIAN, ENGLISH = 1049, 1033  # LibreOffice's language ids
NUMERIC = [s.name for s in load_registry_schema() if s.type in ("integer", "decimal")]
DAY = "2026-11-24"


def call(n: int, **changes: Any) -> CallRecord:
    started_at = f"{DAY}T10:0{n}:07+03:00"
    return transcribed_record(n, day=DAY, call_id=f"call{n}", started_at=started_at, **changes)


def records() -> list[CallRecord]:
    tags = '["доставка", "жалоба; срочно"]'
    return [
        call(1, seconds=184.0, cost=0.018, attempts=2, tags=tags, telephony_cost="8.1008"),
        call(
            2,
            seconds=61.0,
            cost=0.012,
            phone_from="+74951234567",
            summary_path="exports/2026-11/summary/call_call2.md",
        ),
        call(
            3,
            seconds=30.0,
            status=Status.DOWNLOAD_ERROR,
            error_code="timeout",
            cost=None,
            transcript_path=None,
            language=None,
            telephony_cost="12.15",
        ),
        invalid_record("bad.1", DAY),
    ]


def written(tmp_path: Path, decimal_mark: str) -> tuple[Path, Path, list[dict[str, Value]]]:
    """The registry CSV and .xlsx of `records()`, and the typed rows both hold."""
    csv_path, xlsx_path = tmp_path / "calls.csv", tmp_path / "calls.xlsx"
    typed: list[dict[str, Value]] = []
    sink = io.BytesIO()
    with RegistryWorkbook(xlsx_path, tmpdir=tmp_path) as workbook:

        def both(rows: list[dict[str, Value]]) -> None:
            typed.extend(rows)
            workbook.add_rows(rows)

        write_registry_file([records()], sink, decimal_mark=decimal_mark, also=both)
    csv_path.write_bytes(sink.getvalue())
    return csv_path, xlsx_path, typed


def libreoffice_to_xlsx(source: Path, tmp_path: Path, infilter: str | None = None) -> list[Any]:
    """`source` opened by LibreOffice and saved as .xlsx; its sheet as rows of cells."""
    out = tmp_path / "libreoffice"
    command = [
        SOFFICE,
        f"-env:UserInstallation={(tmp_path / 'profile').as_uri()}",
        "--headless",
        "--convert-to",
        "xlsx",
        "--outdir",
        str(out),
        str(source),
    ]
    if infilter:
        command[-1:-1] = [f"--infilter={infilter}"]
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    book = openpyxl.load_workbook(out / f"{source.stem}.xlsx")
    return [list(row) for row in book.active.iter_rows(values_only=True)]


def csv_filter(language: int) -> str:
    # separator ";" (59), text delimiter '"' (34), UTF-8 (76), from line 1, standard column
    # types, the language whose number format applies: what a user of that locale gets.
    return f"CSV:59,34,76,1,,{language}"


def as_number(value: Value) -> float | int | None:
    if isinstance(value, Decimal):
        return float(value)
    return value if isinstance(value, int) else None


@pytest.mark.parametrize(("decimal_mark", "language"), [(",", RUSSIAN), (".", ENGLISH)])
def test_every_numeric_column_of_the_csv_arrives_as_numbers(
    tmp_path: Path, decimal_mark: str, language: int
) -> None:
    csv_path, _, typed = written(tmp_path, decimal_mark)
    header, *cells = libreoffice_to_xlsx(csv_path, tmp_path, csv_filter(language))

    assert header == list(REGISTRY_COLUMNS)
    assert len(cells) == len(typed) == 4
    checked = 0
    for row, values in zip(cells, typed, strict=True):
        got = dict(zip(header, row, strict=True))
        for name in NUMERIC:
            expected = as_number(values[name])
            if expected is None:
                assert got[name] is None, (name, got[name])
                continue
            assert isinstance(got[name], int | float), (name, got[name])
            assert got[name] == pytest.approx(expected), name
            checked += 1
        assert got["call_id"] == values["call_id"]
    assert checked >= 14  # every filled numeric cell of the four rows
    tags = dict(zip(header, cells[0], strict=True))["tags"]
    assert tags == "доставка, жалоба; срочно"  # Cyrillic intact, the ";" inside kept


def test_a_point_in_a_russian_spreadsheet_is_text(tmp_path: Path) -> None:
    # Why CALLTEXTS_CSV_DECIMAL_MARK exists: the mark of the other locale is not a number.
    csv_path, _, _ = written(tmp_path, ".")
    header, first, *_ = libreoffice_to_xlsx(csv_path, tmp_path, csv_filter(RUSSIAN))
    cost = dict(zip(header, first, strict=True))["transcription_cost"]
    assert not isinstance(cost, int | float), cost


def test_the_xlsx_has_phones_as_text_numbers_as_numbers_and_real_dates(tmp_path: Path) -> None:
    _, xlsx_path, typed = written(tmp_path, ",")
    header, *cells = libreoffice_to_xlsx(xlsx_path, tmp_path)

    assert header == list(REGISTRY_COLUMNS)
    first = dict(zip(header, cells[0], strict=True))
    second = dict(zip(header, cells[1], strict=True))
    assert (first["from"], second["from"]) == ("+79161234567", "+74951234567")
    assert first["transcription_cost"] == pytest.approx(0.018)
    assert first["telephony_cost"] == pytest.approx(8.1008)
    assert (first["duration_sec"], first["retry_count"], first["call_type"]) == (184, 2, 2)
    start = typed[0]["datetime_start"]
    assert isinstance(start, datetime)
    assert first["datetime_start"] == start.replace(tzinfo=None)  # the portal's wall clock
    assert first["tags"] == "доставка, жалоба; срочно"
    assert second["summary_path"] == "exports/2026-11/summary/call_call2.md"
    for row, values in zip(cells, typed, strict=True):
        got = dict(zip(header, row, strict=True))
        assert got["call_id"] == values["call_id"]  # text, whatever it looks like
        assert got["record_id"] == (values["record_id"] or None)
