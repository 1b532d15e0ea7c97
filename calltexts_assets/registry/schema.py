"""The registry's data dictionary (docs/specs/call_registry_schema.yaml) and the validation
of a registry file against it, read a line at a time."""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from calltexts_assets.registry.rows import DEFAULT_DECIMAL_MARK, PHONE_COLUMNS, SEPARATOR
from calltexts_assets.registry.spreadsheet import is_formula_like

# Package data, so that an installed wheel has it too; docs/specs/call_registry_schema.yaml
# is a link to this file.
DEFAULT_SCHEMA_PATH = Path(__file__).with_name("call_registry_schema.yaml")


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
                decimals=entry.get("decimals"),
                values=frozenset(entry.get("values") or ()),
            )
        )
    return specs


def schema_columns(specs: Sequence[ColumnSpec]) -> list[str]:
    return [s.name for s in specs]


# -- validation ------------------------------------------------------------------------------


def _type_problem(spec: ColumnSpec, value: str, decimal_mark: str) -> str | None:
    if spec.type == "integer" and not (value.isascii() and value.isdigit()):
        return f"{spec.name}={value!r} is not a whole number"
    if spec.type == "decimal":
        places = spec.decimals or 0
        pattern = rf"\d+{re.escape(decimal_mark)}\d{{{places}}}" if places else r"\d+"
        if not re.fullmatch(pattern, value):
            return (
                f"{spec.name}={value!r} is not a decimal with {places} places "
                f"and {decimal_mark!r} as its decimal mark"
            )
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


def _row_problems(specs: Sequence[ColumnSpec], row: dict[str, str], decimal_mark: str) -> list[str]:
    status = row.get("status", "")
    problems = []
    for spec in specs:
        value = row[spec.name]
        if is_formula_like(value, phone=spec.name in PHONE_COLUMNS):
            problems.append(f"{spec.name} starts like a spreadsheet formula: {value[:40]!r}")
            continue
        if value == "":
            if spec.required.applies(status):
                problems.append(f"{spec.name} is empty (required {spec.required.describe()})")
            continue
        problem = _type_problem(spec, value, decimal_mark)
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


# A registry to check: its bytes, a file path, or a seekable binary stream (left open).
RegistrySource = bytes | str | os.PathLike[str] | BinaryIO
_READ_CHUNK = 1024 * 1024


@contextmanager
def _opened(source: RegistrySource) -> Iterator[BinaryIO]:
    if isinstance(source, bytes):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            yield file
    elif not source.seekable():
        raise ValueError("a registry stream must be seekable (it is read twice)")
    else:
        yield source


def _decode_error(exc: UnicodeDecodeError, shift: int) -> str:
    """`str(exc)` with positions counted from the start of the text, as decoding the whole file
    at once reports them (the incremental decoder counts from its current chunk)."""
    start = exc.start + shift
    if exc.end - exc.start == 1:
        where = f"byte 0x{exc.object[exc.start]:02x} in position {start}"
    else:
        where = f"bytes in position {start}-{exc.end + shift - 1}"
    return f"'{exc.encoding}' codec can't decode {where}: {exc.reason}"


def _utf8_error(stream: BinaryIO) -> str | None:
    """Why the rest of `stream` is not UTF-8, or None; read a chunk at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes given to the decoder before this chunk
    while True:
        chunk = stream.read(_READ_CHUNK)
        pending = len(decoder.getstate()[0])  # an incomplete character from the last chunk
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            return _decode_error(exc, offset - pending)
        if not chunk:
            return None
        offset += len(chunk)


def registry_problems(
    source: RegistrySource,
    schema_path: Path | str = DEFAULT_SCHEMA_PATH,
    *,
    decimal_mark: str = DEFAULT_DECIMAL_MARK,
) -> Iterator[Problem]:
    """Every problem of a registry file against the dictionary (see validate_registry_csv),
    found reading it a line at a time: memory does not grow with the file.

    A file that is not UTF-8 gives only its file-level problems: the text is checked first
    (a cheap pass), so no row is reported from a file that cannot be read as a whole."""
    specs = load_registry_schema(schema_path)
    with _opened(source) as stream:
        start = stream.tell()
        has_bom = stream.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
        if not has_bom:
            yield Problem(0, "", "file does not start with the UTF-8 byte order mark")
            stream.seek(start)
        if (error := _utf8_error(stream)) is not None:
            yield Problem(0, "", f"file is not UTF-8: {error}")
            return
        stream.seek(start)
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        try:
            yield from _csv_problems(csv.reader(text, delimiter=SEPARATOR), specs, decimal_mark)
        finally:
            text.detach()  # closing the wrapper would close the caller's stream


def _csv_problems(
    reader: Iterator[list[str]], specs: Sequence[ColumnSpec], decimal_mark: str
) -> Iterator[Problem]:
    header = next(reader, None)
    if header is None:
        yield Problem(0, "", "file is empty (no header)")
        return
    expected = schema_columns(specs)
    if header != expected:
        yield Problem(0, "", f"header is {header}, expected {expected}")
        return
    for number, cells in enumerate(reader, start=1):
        if len(cells) != len(header):
            yield Problem(number, "", f"has {len(cells)} fields, expected {len(header)}")
            continue
        row = dict(zip(header, cells, strict=True))
        for message in _row_problems(specs, row, decimal_mark):
            yield Problem(number, row["call_id"], message)


def validate_registry_csv(
    source: RegistrySource,
    schema_path: Path | str = DEFAULT_SCHEMA_PATH,
    *,
    decimal_mark: str = DEFAULT_DECIMAL_MARK,
    max_problems: int = 50,
) -> list[str]:
    """Problems of a registry file (bytes, a path or a seekable binary stream) against the
    dictionary; an empty list means valid.

    Checks the BOM, that it decodes as UTF-8 and parses with `;`, that the header is the
    dictionary's columns, and each row's field count, required cells and value types
    (decimals with `decimal_mark`).
    At most `max_problems` are listed, then a count of the rest."""
    listed: list[str] = []
    found = 0
    for problem in registry_problems(source, schema_path, decimal_mark=decimal_mark):
        found += 1
        if found <= max_problems:
            listed.append(str(problem))
    if found > max_problems:
        listed.append(f"... and {found - max_problems} more problems")
    return listed
