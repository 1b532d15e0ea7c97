"""The call registry CSV: one row per call of the period, and its validation.

The columns and their rules are the data dictionary `docs/specs/call_registry_schema.yaml`;
`registry_columns` must list the same names in the same order (a test holds them together).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import BinaryIO

import polars as pl

from calltexts_assets.core.ledger import CallRecord, Status
from calltexts_assets.core.masking import mask_phone
from calltexts_assets.reporting.call_codes import call_result, iso_currency
from calltexts_assets.reporting.cost import (
    PRICE_PER_MINUTE_USD,
    USD_PLACES,
    billed_seconds,
    call_cost_usd,
    format_usd,
)
from calltexts_assets.reporting.spreadsheet import text_cell

SEPARATOR = ";"
COST_DECIMALS = USD_PLACES
PREVIEW_ROWS = 10  # rows of the file shown in the asset's metadata

_HEAD = (
    "datetime_start",
    "direction",
    "from",
    "to",
    "duration_sec",
    "recording_url",
    "transcript_path",
    "transcription_cost",
    "language",
    "status",
)
_SUMMARY = ("summary_path", "tags")
# call_id/record_id go last so the agreed order of the other columns stays as specified;
# columns added later follow them.
_TAIL = (
    "error_code",
    "retry_count",
    "call_id",
    "record_id",
    "call_type",
    "call_result",
    "failed_code",
    "telephony_cost",
    "telephony_currency",
    "recording_source",
    "audio_path",
)

PHONE_COLUMNS = frozenset({"from", "to"})


def registry_columns(summaries_enabled: bool) -> list[str]:
    return [*_HEAD, *(_SUMMARY if summaries_enabled else ()), *_TAIL]


# -- rows ------------------------------------------------------------------------------------


def _iso_start(value: str) -> str:
    """ISO 8601 with the portal's offset, to the second; an unparsable value is kept as is
    so that validation reports it instead of the registry hiding it."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.isoformat(timespec="seconds") if moment.tzinfo else value


def _tags(value: str | None) -> str:
    if not value:
        return ""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if isinstance(parsed, list):
        value = ", ".join(str(tag) for tag in parsed)
    return value


def record_cost_usd(
    record: CallRecord, price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD
) -> Decimal | None:
    """The call's cost as the registry shows it: the cost the ledger recorded; for a
    transcribed row without one (an older ledger row) the tariff applied; else None."""
    if record.cost is not None:
        return Decimal(str(record.cost))
    if record.status == Status.TRANSCRIBED:
        return call_cost_usd(billed_seconds(record), price_per_minute)
    return None


def _cost(record: CallRecord, price_per_minute: float | Decimal) -> str:
    cost = record_cost_usd(record, price_per_minute)
    return "" if cost is None else format_usd(cost)


def registry_row(
    record: CallRecord,
    *,
    summaries_enabled: bool,
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
) -> dict[str, str]:
    """One CSV row, every value already a string ("" = absent)."""
    row = {
        "datetime_start": _iso_start(record.started_at),
        "direction": record.direction,
        "from": record.phone_from,
        "to": record.phone_to,
        "duration_sec": str(record.duration_sec),
        "recording_url": record.recording_url or "",
        "transcript_path": record.transcript_path or "",
        "transcription_cost": _cost(record, price_per_minute),
        "language": record.language or "",
        "status": record.status,
    }
    if summaries_enabled:
        row["summary_path"] = record.summary_path or ""
        row["tags"] = _tags(record.tags)
    row |= {
        "error_code": record.error_code or "",
        "retry_count": str(record.attempts),
        "call_id": record.call_id,
        "record_id": record.record_id,
        "call_type": str(record.call_type) if record.call_type else "",
        "call_result": call_result(record.failed_code),
        "failed_code": record.failed_code or "",
        "telephony_cost": _telephony_cost(record.telephony_cost),
        "telephony_currency": iso_currency(record.telephony_currency),
        "recording_source": record.recording_source or "",
        "audio_path": record.audio_path or "",
    }
    # Every value may come from a caller, the portal or a language model (tags): none may
    # run as a formula where the registry is opened.
    return {name: text_cell(value, phone=name in PHONE_COLUMNS) for name, value in row.items()}


def masked_row(row: dict[str, str]) -> dict[str, str]:
    """A row for display outside the registry (Dagster metadata): phone numbers masked."""
    return {k: mask_phone(v) if k in PHONE_COLUMNS else v for k, v in row.items()}


def _telephony_cost(raw: str | None) -> str:
    """Bitrix24's COST ("8.1008") with the registry's 4 places; an unreadable one is kept
    as is, so that validation reports it instead of the registry hiding it."""
    if not raw:
        return ""
    try:
        return f"{Decimal(raw).quantize(Decimal('0.0001'))}"
    except ArithmeticError:
        return raw


def chronological(record: CallRecord) -> tuple[int, float, str, str, str]:
    """Sort key: start time (rows without one last), then ids; independent of input order."""
    try:
        moment = datetime.fromisoformat(record.started_at)
        stamp = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        unparsed = 0
    except ValueError:
        stamp, unparsed = 0.0, 1  # rows without a start time go last
    return (unparsed, stamp, record.call_id, record.record_id, record.run_id)


def registry_rows(
    records: Iterable[CallRecord],
    *,
    summaries_enabled: bool,
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
) -> list[dict[str, str]]:
    """Rows of the registry in chronological order (then by call id), whatever the input order,
    so the same ledger always gives the same file."""
    return [
        registry_row(r, summaries_enabled=summaries_enabled, price_per_minute=price_per_minute)
        for r in sorted(records, key=chronological)
    ]


def registry_frame(
    rows: Sequence[Mapping[str, str]], *, summaries_enabled: bool | None = None
) -> pl.DataFrame:
    """All-string frame in the dictionary's column order. `summaries_enabled=None` infers the
    columns from the first row; pass it explicitly when `rows` may be empty."""
    if summaries_enabled is None:
        summaries_enabled = bool(rows) and "summary_path" in rows[0]
    columns = registry_columns(summaries_enabled)
    for index, row in enumerate(rows):
        if set(row) != set(columns):
            raise ValueError(
                f"registry row {index} has columns {sorted(row)}, expected {sorted(columns)}"
            )
    # "" becomes null so the file has truly empty cells, not quoted empty strings.
    data = {name: [row[name] or None for row in rows] for name in columns}
    return pl.DataFrame(data, schema=dict.fromkeys(columns, pl.String))


def _csv_bytes(frame: pl.DataFrame, *, header: bool) -> bytes:
    """The frame's rows as CSV text; with `header`, after the BOM and the header line. The one
    place the file's format is set: the whole-frame and the streaming writer both use it."""
    buffer = io.BytesIO()
    frame.write_csv(buffer, separator=SEPARATOR, include_bom=header, include_header=header)
    return buffer.getvalue()


def write_registry_csv(frame: pl.DataFrame) -> bytes:
    """`;`-separated UTF-8 with BOM: Excel (ru locale) opens it with Cyrillic intact."""
    return _csv_bytes(frame, header=True)


@dataclass(frozen=True)
class RegistryWritten:
    """What `write_registry_file` wrote: the row count, the size and the first rows (for the
    asset's preview), so that nothing has to read the file back for its metadata."""

    rows: int
    size: int
    preview: list[dict[str, str]]  # the first rows, phone numbers masked (for metadata)
    rows_by_day: dict[str, int]  # export day (ledger run id) -> rows


def _has_start(record: CallRecord) -> bool:
    return chronological(record)[0] == 0


def write_registry_file(
    days: Iterable[Iterable[CallRecord]],
    sink: BinaryIO,
    *,
    summaries_enabled: bool,
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
    preview_rows: int = PREVIEW_ROWS,
) -> RegistryWritten:
    """Write the registry of `days` (the export days, in calendar order) to `sink`, holding
    one day's rows at a time; the bytes are those of `write_registry_csv` over
    `registry_frame(registry_rows(...))` of every record at once.

    A call belongs to the export day of its start time, so sorting each day and writing the
    days in order is the global `chronological` order. Rows whose start time does not parse
    sort after all others, so they are held back and written last (there are few: statistic
    rows that could not be exported)."""
    rows = size = 0
    preview: list[dict[str, str]] = []
    rows_by_day: Counter[str] = Counter()

    def emit(records: Iterable[CallRecord], *, header: bool = False) -> None:
        nonlocal rows, size
        ordered = sorted(records, key=chronological)
        rows_by_day.update(r.run_id for r in ordered)
        batch = [
            registry_row(r, summaries_enabled=summaries_enabled, price_per_minute=price_per_minute)
            for r in ordered
        ]
        if not batch and not header:
            return
        data = _csv_bytes(registry_frame(batch, summaries_enabled=summaries_enabled), header=header)
        sink.write(data)
        rows, size = rows + len(batch), size + len(data)
        preview.extend(masked_row(row) for row in batch[: preview_rows - len(preview)])

    emit((), header=True)
    undated: list[CallRecord] = []
    for day in days:
        dated: list[CallRecord] = []
        for record in day:
            (dated if _has_start(record) else undated).append(record)
        emit(dated)
    emit(undated)
    return RegistryWritten(rows=rows, size=size, preview=preview, rows_by_day=dict(rows_by_day))
