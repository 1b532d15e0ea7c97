"""The call registry CSV: one row per call of the period, and its validation.

The columns and their rules are the data dictionary `docs/specs/call_registry_schema.yaml`;
`registry_columns` must list the same names in the same order (a test holds them together).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from calltexts_assets.cost import (
    PRICE_PER_MINUTE_USD,
    USD_PLACES,
    billed_seconds,
    call_cost_usd,
    format_usd,
)
from calltexts_assets.ledger import CallRecord, Status

DEFAULT_SCHEMA_PATH = (
    Path(__file__).resolve().parent.parent / "docs" / "specs" / "call_registry_schema.yaml"
)
SEPARATOR = ";"
COST_DECIMALS = USD_PLACES

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
# call_id/record_id go last so the agreed order of the other columns stays as specified.
_TAIL = ("error_code", "retry_count", "call_id", "record_id")

# A cell starting with one of these is run as a formula by spreadsheets (CSV injection);
# tags come from a language model reading what a caller said, so they are not trusted.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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
    return "'" + value if value.startswith(_FORMULA_START) else value


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
    }
    return row


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


def write_registry_csv(frame: pl.DataFrame) -> bytes:
    """`;`-separated UTF-8 with BOM: Excel (ru locale) opens it with Cyrillic intact."""
    buffer = io.BytesIO()
    frame.write_csv(buffer, separator=SEPARATOR, include_bom=True)
    return buffer.getvalue()


# -- the data dictionary ---------------------------------------------------------------------


@dataclass(frozen=True)
class RequiredRule:
    """`mode`: "always", "never", "when" (status in `statuses`), "unless" (status not in)."""

    mode: str
    statuses: frozenset[str] = frozenset()

    def applies(self, status: str) -> bool:
        if self.mode == "always":
            return True
        if self.mode == "when":
            return status in self.statuses
        if self.mode == "unless":
            return status not in self.statuses
        return False

    def describe(self) -> str:
        if self.mode in ("when", "unless"):
            return f"{self.mode} status is {', '.join(sorted(self.statuses))}"
        return self.mode


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    required: RequiredRule
    only_with_summaries: bool = False
    decimals: int | None = None
    values: frozenset[str] = frozenset()


_RULE = re.compile(r"^(when|unless) status is (.+)$")
_TYPES = {"string", "integer", "decimal", "datetime", "enum"}


def _required_rule(value: Any, column: str) -> RequiredRule:
    if value is True:
        return RequiredRule("always")
    if value is False:
        return RequiredRule("never")
    match = _RULE.match(str(value).strip())
    if not match:
        raise ValueError(f"column {column}: cannot read required rule {value!r}")
    statuses = frozenset(s.strip() for s in re.split(r",|\bor\b", match[2]) if s.strip())
    return RequiredRule(match[1], statuses)


def load_registry_schema(path: Path | str = DEFAULT_SCHEMA_PATH) -> list[ColumnSpec]:
    """Column specs in file order; a malformed dictionary raises ValueError (it is a bug)."""
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    specs: list[ColumnSpec] = []
    for entry in document["columns"]:
        name = entry["name"]
        if entry["type"] not in _TYPES:
            raise ValueError(f"column {name}: unknown type {entry['type']!r}")
        specs.append(
            ColumnSpec(
                name=name,
                type=entry["type"],
                required=_required_rule(entry["required"], name),
                only_with_summaries=bool(entry.get("only_with_summaries", False)),
                decimals=entry.get("decimals"),
                values=frozenset(entry.get("values") or ()),
            )
        )
    return specs


def schema_columns(specs: Sequence[ColumnSpec], summaries_enabled: bool) -> list[str]:
    return [s.name for s in specs if summaries_enabled or not s.only_with_summaries]


# -- validation ------------------------------------------------------------------------------


def _type_problem(spec: ColumnSpec, value: str) -> str | None:
    if spec.type == "integer" and not (value.isascii() and value.isdigit()):
        return f"{spec.name}={value!r} is not a whole number"
    if spec.type == "decimal":
        places = spec.decimals or 0
        pattern = rf"\d+\.\d{{{places}}}" if places else r"\d+"
        if not re.fullmatch(pattern, value):
            return f"{spec.name}={value!r} is not a decimal with {places} places"
    if spec.type == "datetime":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return f"{spec.name}={value!r} is not an ISO 8601 date-time"
        if moment.tzinfo is None:
            return f"{spec.name}={value!r} has no UTC offset"
    if spec.type == "enum" and value not in spec.values:
        return f"{spec.name}={value!r} is not one of {sorted(spec.values)}"
    return None


def _row_problems(specs: Sequence[ColumnSpec], row: dict[str, str]) -> list[str]:
    status = row.get("status", "")
    problems = []
    for spec in specs:
        value = row[spec.name]
        if value == "":
            if spec.required.applies(status):
                problems.append(f"{spec.name} is empty (required {spec.required.describe()})")
            continue
        problem = _type_problem(spec, value)
        if problem:
            problems.append(problem)
    return problems


@dataclass(frozen=True)
class Problem:
    """One finding; `row` is the 1-based data row (0: the file itself)."""

    row: int
    call_id: str
    message: str

    def __str__(self) -> str:
        if self.row == 0:
            return self.message
        return f"row {self.row} (call {self.call_id or '?'}): {self.message}"


def registry_problems(
    data: bytes,
    schema_path: Path | str = DEFAULT_SCHEMA_PATH,
    *,
    summaries_enabled: bool | None = None,
) -> list[Problem]:
    """Every problem of a registry file against the dictionary (see validate_registry_csv)."""
    specs = load_registry_schema(schema_path)
    problems: list[Problem] = []
    if not data.startswith(codecs.BOM_UTF8):
        problems.append(Problem(0, "", "file does not start with the UTF-8 byte order mark"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [*problems, Problem(0, "", f"file is not UTF-8: {exc}")]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=SEPARATOR)
    header = next(reader, None)
    if header is None:
        return [*problems, Problem(0, "", "file is empty (no header)")]
    if summaries_enabled is None:
        summaries_enabled = "summary_path" in header
    expected = schema_columns(specs, summaries_enabled)
    if header != expected:
        return [*problems, Problem(0, "", f"header is {header}, expected {expected}")]
    active = [s for s in specs if s.name in expected]
    for number, cells in enumerate(reader, start=1):
        if len(cells) != len(header):
            message = f"has {len(cells)} fields, expected {len(header)}"
            problems.append(Problem(number, "", message))
            continue
        row = dict(zip(header, cells, strict=True))
        problems.extend(Problem(number, row["call_id"], m) for m in _row_problems(active, row))
    return problems


def validate_registry_csv(
    data: bytes,
    schema_path: Path | str = DEFAULT_SCHEMA_PATH,
    *,
    summaries_enabled: bool | None = None,
    max_problems: int = 50,
) -> list[str]:
    """Problems of a registry file against the dictionary; an empty list means valid.

    Checks the BOM, that it decodes as UTF-8 and parses with `;`, that the header is the
    dictionary's columns (with the summary columns when `summaries_enabled`, or, when None,
    if the header has them), and each row's field count, required cells and value types.
    At most `max_problems` are listed, then a count of the rest."""
    found = registry_problems(data, schema_path, summaries_enabled=summaries_enabled)
    listed = [str(p) for p in found[:max_problems]]
    if len(found) > max_problems:
        listed.append(f"... and {len(found) - max_problems} more problems")
    return listed
