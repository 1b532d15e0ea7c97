"""The call registry: one row per call of the period, as a `;`-separated CSV and an .xlsx.

The columns and their rules are the data dictionary `docs/specs/call_registry_schema.yaml`;
`REGISTRY_COLUMNS` lists the same names in the same order (a test holds them together).
A row is first a set of typed values (`registry_values`); the CSV writes them as text a
spreadsheet of the configured locale reads back as the same types, the .xlsx as typed cells.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import BinaryIO

import polars as pl

from calltexts_assets.billing.cost import USD_PLACES, decode_request_seconds, round_usd
from calltexts_assets.billing.tariffs import WHISPER_1, Tariffs
from calltexts_assets.registry.call_codes import call_result, iso_currency
from calltexts_assets.registry.spreadsheet import text_cell
from calltexts_assets.runlog.masking import mask_phone
from calltexts_assets.state.ledger import NEEDS_REVIEW, NO_SPEECH, CallRecord, Status

SEPARATOR = ";"
COST_DECIMALS = USD_PLACES
PREVIEW_ROWS = 10  # rows of the file shown in the asset's metadata
# The decimal mark of the spreadsheets that open the CSV (CALLTEXTS_CSV_DECIMAL_MARK): a
# Russian (German, French...) Excel or LibreOffice reads "0,0180" as a number and
# "0.0180" as text; an English one the other way round.
DEFAULT_DECIMAL_MARK = ","

REGISTRY_COLUMNS = (
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
    # Always present (empty when summaries are off), so the column set never changes.
    "summary_path",
    "tags",
    # call_id/record_id go after the agreed columns so their order stays as specified;
    # columns added later follow them.
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
    # who and where (issue #24)
    "employee_id",
    "employee_name",
    "line_id",
    "line_name",
    "crm_entity_type",
    "crm_entity_id",
    "crm_url",
    # what went to the STT and what a person should look at (issue #23)
    "stt_sent_sec",
    "stt_billed_sec",
    "needs_review",
    "doubts",
    "second_opinion",
)
PHONE_COLUMNS = frozenset({"from", "to", "line_id"})  # line_id may be the portal's number

# A typed registry value: text, a whole number, a 4-place decimal, an aware date-time, or
# None (absent). A value the portal gave that does not parse stays text, so that
# validation reports it instead of the registry hiding it.
Value = str | int | Decimal | datetime | None


# -- typed values ----------------------------------------------------------------------------


def _start(value: str) -> datetime | str:
    """The start time to the second with the portal's offset; unparsable: the text."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.replace(microsecond=0) if moment.tzinfo else value


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


def _telephony_cost(raw: str | None) -> Decimal | str | None:
    """Bitrix24's COST ("8.1008") to the registry's 4 places; unreadable: the text."""
    if not raw:
        return None
    try:
        return Decimal(raw).quantize(Decimal(1).scaleb(-COST_DECIMALS))
    except ArithmeticError:
        return raw


def record_cost_usd(record: CallRecord, tariffs: Tariffs = WHISPER_1) -> Decimal | None:
    """The call's cost as the registry shows it: the cost the ledger recorded; for a
    transcribed row without one (an older ledger row) its models' tariffs applied; else (or
    no tariff known for its model) None."""
    if record.cost is not None:
        return Decimal(str(record.cost))
    if record.status == Status.TRANSCRIBED and not tariffs.unpriced(record):
        return tariffs.cost(record)
    return None


def registry_values(record: CallRecord, *, tariffs: Tariffs = WHISPER_1) -> dict[str, Value]:
    """One registry row as typed values, in `REGISTRY_COLUMNS` order."""
    cost = record_cost_usd(record, tariffs)
    return {
        "datetime_start": _start(record.started_at),
        "direction": record.direction,
        "from": record.phone_from,
        "to": record.phone_to,
        "duration_sec": record.duration_sec,
        "recording_url": record.recording_url,
        "transcript_path": record.transcript_path,
        "transcription_cost": None if cost is None else round_usd(cost),
        "language": record.language,
        "status": _status(record),
        "summary_path": record.summary_path,
        "tags": _tags(record.tags),
        "error_code": record.error_code,
        "retry_count": record.attempts,
        "call_id": record.call_id,
        "record_id": record.record_id,
        "call_type": record.call_type or None,
        "call_result": call_result(record.failed_code),
        "failed_code": record.failed_code,
        "telephony_cost": _telephony_cost(record.telephony_cost),
        "telephony_currency": iso_currency(record.telephony_currency),
        "recording_source": record.recording_source,
        "audio_path": record.audio_path,
        "employee_id": record.portal_user_id,
        "employee_name": record.employee_name,
        "line_id": record.portal_number,
        "line_name": record.line_name,
        "crm_entity_type": record.crm_entity_type,
        "crm_entity_id": record.crm_entity_id,
        "crm_url": record.crm_url,
        "stt_sent_sec": None if record.stt_sent_sec is None else math.ceil(record.stt_sent_sec),
        "stt_billed_sec": record_billed_sec(record, tariffs),
        "needs_review": "yes" if record.verdict == NEEDS_REVIEW else None,
        "doubts": record.doubts,
        "second_opinion": (
            f"{record.fallback_model}, {'kept' if record.fallback_kept else 'not kept'}"
            if record.fallback_model
            else None
        ),
    }


def _status(record: CallRecord) -> str:
    """The ledger's status; a transcribed call in which no speech was found `no_speech`."""
    if record.status == Status.TRANSCRIBED and record.verdict == NO_SPEECH:
        return NO_SPEECH
    return record.status


def record_billed_sec(record: CallRecord, tariffs: Tariffs = WHISPER_1) -> int | None:
    """The audio seconds the STT bills, summed over the call's requests, each rounded up in
    its model's billing unit (whole seconds, or started minutes), the second opinion's
    included: what `transcription_cost` is the tariff of. None for a row from before requests
    were recorded, or whose model has no tariff known."""
    if decode_request_seconds(record.stt_request_sec) is None or tariffs.unpriced(record):
        return None
    return sum(tariffs.billed_seconds(record))


# -- CSV cells -------------------------------------------------------------------------------


def csv_cell(name: str, value: Value, decimal_mark: str = DEFAULT_DECIMAL_MARK) -> str:
    """`value` as the CSV's text ("" = absent): decimals with `decimal_mark` and 4 places,
    date-times in ISO 8601 with their offset, and text that can never run as a formula."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:.{COST_DECIMALS}f}".replace(".", decimal_mark)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, int):
        return str(value)
    # Every text may come from a caller, the portal or a language model (tags): none may
    # run as a formula where the registry is opened.
    return text_cell(value, phone=name in PHONE_COLUMNS)


def csv_cells(
    values: Mapping[str, Value], decimal_mark: str = DEFAULT_DECIMAL_MARK
) -> dict[str, str]:
    return {name: csv_cell(name, value, decimal_mark) for name, value in values.items()}


def registry_row(
    record: CallRecord,
    *,
    tariffs: Tariffs = WHISPER_1,
    decimal_mark: str = DEFAULT_DECIMAL_MARK,
) -> dict[str, str]:
    """One CSV row, every value already a string ("" = absent)."""
    return csv_cells(registry_values(record, tariffs=tariffs), decimal_mark)


def masked_row(row: dict[str, str]) -> dict[str, str]:
    """A row for display outside the registry (Dagster metadata): phone numbers masked."""
    return {k: mask_phone(v) if k in PHONE_COLUMNS else v for k, v in row.items()}


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
    tariffs: Tariffs = WHISPER_1,
    decimal_mark: str = DEFAULT_DECIMAL_MARK,
) -> list[dict[str, str]]:
    """CSV rows in chronological order (then by call id), whatever the input order, so the
    same ledger always gives the same file."""
    return [
        registry_row(r, tariffs=tariffs, decimal_mark=decimal_mark)
        for r in sorted(records, key=chronological)
    ]


def registry_frame(rows: Sequence[Mapping[str, str]]) -> pl.DataFrame:
    """All-string frame in the dictionary's column order."""
    for index, row in enumerate(rows):
        if set(row) != set(REGISTRY_COLUMNS):
            raise ValueError(
                f"registry row {index} has columns {sorted(row)}, "
                f"expected {sorted(REGISTRY_COLUMNS)}"
            )
    # "" becomes null so the file has truly empty cells, not quoted empty strings.
    data = {name: [row[name] or None for row in rows] for name in REGISTRY_COLUMNS}
    return pl.DataFrame(data, schema=dict.fromkeys(REGISTRY_COLUMNS, pl.String))


def _csv_bytes(frame: pl.DataFrame, *, header: bool) -> bytes:
    """The frame's rows as CSV text; with `header`, after the BOM and the header line. The one
    place the file's format is set: the whole-frame and the streaming writer both use it."""
    buffer = io.BytesIO()
    frame.write_csv(buffer, separator=SEPARATOR, include_bom=header, include_header=header)
    return buffer.getvalue()


def write_registry_csv(frame: pl.DataFrame) -> bytes:
    """`;`-separated UTF-8 with BOM: Excel (ru locale) opens it with Cyrillic intact."""
    return _csv_bytes(frame, header=True)


# -- the streaming writer ----------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryWritten:
    """What `write_registry_file` wrote: the row count, the size and the first rows (for the
    asset's preview), so that nothing has to read the file back for its metadata."""

    rows: int
    size: int
    preview: list[dict[str, str]]  # the first rows, phone numbers masked (for metadata)
    rows_by_day: dict[str, int]  # export day (ledger run id) -> rows


# Called with each batch of typed rows in file order (the .xlsx writer).
RowsSink = Callable[[list[dict[str, Value]]], None]


def _has_start(record: CallRecord) -> bool:
    return chronological(record)[0] == 0


def write_registry_file(
    days: Iterable[Iterable[CallRecord]],
    sink: BinaryIO,
    *,
    tariffs: Tariffs = WHISPER_1,
    decimal_mark: str = DEFAULT_DECIMAL_MARK,
    also: RowsSink | None = None,
    preview_rows: int = PREVIEW_ROWS,
) -> RegistryWritten:
    """Write the registry CSV of `days` (the export days, in calendar order) to `sink`,
    holding one day's rows at a time, and hand the same rows, typed, to `also`; the bytes
    are those of `write_registry_csv` over `registry_frame(registry_rows(...))` of every
    record at once.

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
        typed = [registry_values(r, tariffs=tariffs) for r in ordered]
        if not typed and not header:
            return
        batch = [csv_cells(values, decimal_mark) for values in typed]
        data = _csv_bytes(registry_frame(batch), header=header)
        sink.write(data)
        if also is not None and typed:
            also(typed)
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
