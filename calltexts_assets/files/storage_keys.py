"""Storage keys of the export layout (docs/architecture.md), and their validation.

Every key is relative to the storage root, "/"-separated, and made only of segments from a
small ASCII alphabet, so no key (and no call id inside one) can leave the export root on any
backend: no "..", no absolute paths, no backslashes, no control or look-alike characters.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime
from typing import Literal

from calltexts_assets.files.recording_formats import CONTENT_TYPES
from calltexts_assets.runlog.log import log_file_name

KeyKind = Literal[
    "raw",
    "stt_answer",
    "summary_answer",
    "transcript",
    "summary",
    "registry",
    "report",
    "qa_sample",
    "log",
]
ReportFormat = Literal["md", "pdf"]
RegistryFormat = Literal["csv", "xlsx"]

# S3 caps keys at 1024 bytes; the local backend then stays far below PATH_MAX too.
MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-~]{0,254}")
_PARTIAL_SEGMENT = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.\-~]{0,254})?")

# A file id: the call id, or "<call id>~<recording>" for one of several recordings of a call.
_ID = r"[A-Za-z0-9][A-Za-z0-9_.\-]*(~[A-Za-z0-9]+)?"
_MONTH = r"[0-9]{4}-[0-9]{2}"
_DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_PERIOD = rf"(?P<f>{_DAY})_(?P<t>{_DAY})"
_AUDIO_EXTENSIONS = "|".join(CONTENT_TYPES)
_KIND_PATTERNS: dict[KeyKind, re.Pattern[str]] = {
    "raw": re.compile(
        rf"exports/{_MONTH}/raw/[0-9]{{4}}/[0-9]{{2}}/[0-9]{{2}}/call_{_ID}\.({_AUDIO_EXTENSIONS})"
    ),
    # what the STT and the chat model answered, kept beside the recording (gzip'd JSON)
    "stt_answer": re.compile(
        rf"exports/{_MONTH}/raw/[0-9]{{4}}/[0-9]{{2}}/[0-9]{{2}}/call_{_ID}\.stt\.json\.gz"
    ),
    "summary_answer": re.compile(
        rf"exports/{_MONTH}/raw/[0-9]{{4}}/[0-9]{{2}}/[0-9]{{2}}/call_{_ID}\.summary\.json\.gz"
    ),
    "transcript": re.compile(rf"exports/{_MONTH}/transcripts/call_{_ID}\.txt"),
    "summary": re.compile(rf"exports/{_MONTH}/summary/call_{_ID}\.md"),
    "registry": re.compile(rf"exports/{_PERIOD}/registry/calls_(?P=f)_(?P=t)\.(csv|xlsx)"),
    "report": re.compile(rf"exports/{_PERIOD}/reports/summary_(?P=f)_(?P=t)\.(md|pdf)"),
    "qa_sample": re.compile(rf"exports/{_PERIOD}/reports/qa_sample_(?P=f)_(?P=t)\.csv"),
    "log": re.compile(r"logs/call_export_[A-Za-z0-9_.\-]+\.jsonl"),
}


# Call ids become file names; anything outside this alphabet (slashes, "..", NUL,
# whitespace) could escape the export root, so such a row is rejected, not "cleaned".
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def is_safe_id(value: str) -> bool:
    return bool(_SAFE_ID.fullmatch(value)) and ".." not in value


class UnsafeKeyError(ValueError):
    """A key or id that could escape the export root or is not part of the layout alphabet."""


def _safe_segment(segment: str) -> bool:
    return bool(_SEGMENT.fullmatch(segment)) and ".." not in segment


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a safe relative storage key, else raise UnsafeKeyError."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise UnsafeKeyError(f"unsafe storage key {key!r}")
    if not all(_safe_segment(segment) for segment in key.split("/")):
        raise UnsafeKeyError(f"unsafe storage key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Like validate_key, for a listing prefix: "" is the root; the last segment may be partial."""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH:
        raise UnsafeKeyError(f"unsafe storage prefix {prefix!r}")
    if prefix == "":
        return prefix
    *parents, last = prefix.split("/")
    ok = all(_safe_segment(s) for s in parents) and bool(_PARTIAL_SEGMENT.fullmatch(last))
    if not ok or ".." in last:
        raise UnsafeKeyError(f"unsafe storage prefix {prefix!r}")
    return prefix


def _safe_id(value: str, what: str = "call id") -> str:
    # is_safe_id uses `$`, which also matches before a trailing "\n": fullmatch closes that gap.
    if not isinstance(value, str) or not is_safe_id(value) or not _safe_segment(value):
        raise UnsafeKeyError(f"unsafe {what} {value!r}")
    return value


def _aware(moment: datetime, what: str) -> datetime:
    # A naive time has no calendar month of its own; guessing one could file a call twice.
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return moment


def _day(value: date, what: str) -> date:
    # A datetime is a date too, but which day it is depends on a zone: make the caller choose.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"{what} must be a date, got {value!r}")
    return value


def period_label(period_from: date, period_to: date) -> str:
    """`<from>_<to>` with ISO dates, inclusive on both ends (one day: `d_d`)."""
    start, end = _day(period_from, "period_from"), _day(period_to, "period_to")
    if end < start:
        raise ValueError(f"period ends before it starts: {start} > {end}")
    return f"{start.isoformat()}_{end.isoformat()}"


def _month_dir(started_at: datetime) -> str:
    # The call's own wall-clock month (the portal's offset), so any run shape finds the same key.
    return f"exports/{_aware(started_at, 'started_at'):%Y-%m}"


# "~" is outside the call-id alphabet, so no call id can look like one of these names.
RECORDING_SEPARATOR = "~"
_DRIVE_FILE_ID = re.compile(r"[0-9]{1,20}")


def recording_file_id(call_id: str, record_id: str, *, several: bool) -> str:
    """The name every file of one recording carries (`call_<file id>.mp3/.txt/.md`): the
    call id, as always, for a call with one recording; `<call id>~<Drive file id>` for each
    of several (a transferred call recorded on each leg). A row without a Drive file is
    `~link`; an id that is not a Drive number is hashed (short, and cannot collide)."""
    _safe_id(call_id)
    if not several:
        return call_id
    if not record_id:
        part = "link"
    elif _DRIVE_FILE_ID.fullmatch(record_id):
        part = record_id
    else:
        part = "h" + hashlib.sha256(record_id.encode()).hexdigest()[:16]
    return f"{call_id}{RECORDING_SEPARATOR}{part}"


def _file_id(value: str) -> str:
    if not isinstance(value, str):
        raise UnsafeKeyError(f"unsafe file id {value!r}")
    call_id, separator, part = value.partition(RECORDING_SEPARATOR)
    _safe_id(call_id)
    if separator and not re.fullmatch(r"[A-Za-z0-9]{1,24}", part):
        raise UnsafeKeyError(f"unsafe file id {value!r}")
    return value


def file_id_of(key: str) -> str:
    """The file id in a layout key (`.../call_<file id>.<ext>`): a recording's transcript
    and summary are named after its stored audio file."""
    name = key.rpartition("/")[2]
    stem = name.rpartition(".")[0]
    if not stem.startswith("call_"):
        raise UnsafeKeyError(f"not a call file: {key!r}")
    return _file_id(stem[len("call_") :])


def raw_audio_key(file_id: str, started_at: datetime, extension: str = "mp3") -> str:
    """`exports/<YYYY-MM>/raw/YYYY/MM/DD/call_<file id>.<mp3|wav|...>`: the extension is
    the recording's real format (files.recording_formats); the file id is `recording_file_id`."""
    if extension not in CONTENT_TYPES:
        raise ValueError(f"not a recording format: {extension!r}")
    month_dir = _month_dir(started_at)
    return f"{month_dir}/raw/{started_at:%Y/%m/%d}/call_{_file_id(file_id)}.{extension}"


def stt_answer_key(file_id: str, started_at: datetime) -> str:
    """`exports/<YYYY-MM>/raw/YYYY/MM/DD/call_<file id>.stt.json.gz`: what the STT answered
    for the recording beside it, from which its transcript is re-made at no cost."""
    day_dir = f"{_month_dir(started_at)}/raw/{started_at:%Y/%m/%d}"
    return f"{day_dir}/call_{_file_id(file_id)}.stt.json.gz"


def summary_answer_key(file_id: str, started_at: datetime) -> str:
    """`.../call_<file id>.summary.json.gz` beside the recording: the chat model's summary."""
    return stt_answer_key(file_id, started_at).replace(".stt.json.gz", ".summary.json.gz")


def transcript_key(file_id: str, started_at: datetime) -> str:
    """`exports/<YYYY-MM>/transcripts/call_<file id>.txt`."""
    return f"{_month_dir(started_at)}/transcripts/call_{_file_id(file_id)}.txt"


def summary_key(file_id: str, started_at: datetime) -> str:
    """`exports/<YYYY-MM>/summary/call_<file id>.md`."""
    return f"{_month_dir(started_at)}/summary/call_{_file_id(file_id)}.md"


def registry_key(period_from: date, period_to: date, fmt: RegistryFormat = "csv") -> str:
    """`exports/<from>_<to>/registry/calls_<from>_<to>.csv` (or `.xlsx`)."""
    if fmt not in ("csv", "xlsx"):
        raise ValueError(f"registry format must be 'csv' or 'xlsx', got {fmt!r}")
    label = period_label(period_from, period_to)
    return f"exports/{label}/registry/calls_{label}.{fmt}"


def report_key(period_from: date, period_to: date, fmt: ReportFormat = "md") -> str:
    """`exports/<from>_<to>/reports/summary_<from>_<to>.md` (or `.pdf`)."""
    if fmt not in ("md", "pdf"):
        raise ValueError(f"report format must be 'md' or 'pdf', got {fmt!r}")
    label = period_label(period_from, period_to)
    return f"exports/{label}/reports/summary_{label}.{fmt}"


def deliverable_keys(period_from: date, period_to: date) -> dict[str, str]:
    """The period's files people open, by name: registry (CSV and .xlsx) and report."""
    return {
        "registry": registry_key(period_from, period_to, "csv"),
        "registry_xlsx": registry_key(period_from, period_to, "xlsx"),
        "report_md": report_key(period_from, period_to, "md"),
        "report_pdf": report_key(period_from, period_to, "pdf"),
    }


def qa_sample_key(period_from: date, period_to: date) -> str:
    """`exports/<from>_<to>/reports/qa_sample_<from>_<to>.csv`."""
    label = period_label(period_from, period_to)
    return f"exports/{label}/reports/qa_sample_{label}.csv"


def log_key(started_at: datetime) -> str:
    """`logs/<log_file_name>`: where the run log sits under the local storage root."""
    return f"logs/{log_file_name(started_at)}"


def key_kind(key: str) -> KeyKind | None:
    """Which layout entry `key` is, or None for anything the layout does not name."""
    for kind, pattern in _KIND_PATTERNS.items():
        if pattern.fullmatch(key):
            return kind
    return None
