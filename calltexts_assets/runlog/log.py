"""The JSONL run log `logs/call_export_<timestamp>.jsonl`, scrubbed of secrets and phones.

One JSON object per line: ts, event, call_id, stage, duration_ms, error_code,
correlation_id (the Dagster run id), then any extra fields. Every value passes through
`scrub` first, so neither a webhook code nor a client's phone number reaches the disk.

The file name comes from the run's start time, so every step process of one run appends
to the same file; each line is written with a single `write` on an O_APPEND descriptor,
which keeps concurrent lines whole on a local file system.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from calltexts_assets.runlog.masking import MASK, mask_phone, mask_text


def log_file_name(started_at: datetime) -> str:
    """`call_export_<UTC YYYYmmddTHHMMSS_ffffffZ>.jsonl`: the run log of a run that started
    then (no ":": a valid file name everywhere; microseconds: two runs, two files)."""
    if started_at.utcoffset() is None:  # a naive time would take the machine's zone
        raise ValueError(f"started_at must be a timezone-aware datetime, got {started_at!r}")
    return f"call_export_{started_at.astimezone(UTC):%Y%m%dT%H%M%S_%fZ}.jsonl"


# -- scrubbing ---------------------------------------------------------------------------------

# A phone number in free text: optional +, 10-15 digits, single spaces/dashes/dots or
# brackets between groups. Not glued to other digits, letters or "-" (ids, hashes, dates).
_PHONE = re.compile(r"(?<![\w+\-/])\+?\d(?:[\s\-.()]{0,2}\d){9,14}(?![\w\-])")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/\-]+=*")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(api[_-]?key|apikey|auth|access_token|refresh_token|token|client_secret|password"
    r"|passwd|secret)(\s*[=:]\s*)(?!\*\*\*)([^\s&,;\"']+)"
)
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")
# user:password@ in URLs of any scheme (postgresql://, redis://...), not only http(s).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@]+@")
# Strings under these keys are secrets whatever they look like (counts like `tokens` stay).
_SECRET_KEYS = re.compile(
    r"(?i)(authorization|api[_-]?key|password|passwd|secret|token|cookie|webhook_code)"
)
# Integers under these keys are phone numbers (strings are matched by shape anywhere).
_PHONE_KEYS = re.compile(r"(?i)(phone|msisdn|caller|callee|number)")
# Our own structural fields: never rewritten.
_TRUSTED_KEYS = frozenset({"ts", "event", "correlation_id", "duration_ms", "level", "logger"})


def scrub_text(text: str) -> str:
    """Mask credentialed URLs, tokens, key=value secrets and phone numbers in free text."""
    text = mask_text(text)  # URLs: webhook codes, user:pass@, auth=/token=... parameters
    text = _USERINFO.sub(rf"\g<1>{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _OPENAI_KEY.sub(f"sk-{MASK}", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def scrub(value: Any, key: str | None = None) -> Any:
    """`value` with every secret and phone number masked, recursively through containers.

    `key` is the mapping key the value sits under, which marks secrets and numeric phones.
    """
    if isinstance(value, str | bytes):
        if key is not None and _SECRET_KEYS.search(key) and value:
            return MASK
        return scrub_text(value.decode(errors="replace") if isinstance(value, bytes) else value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if key is not None and _PHONE_KEYS.search(key) and len(str(abs(value))) >= 5:
            return mask_phone(str(value))
        return value
    if isinstance(value, Mapping):
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v, key) for v in value]
    return scrub_text(str(value))


# -- the run log -------------------------------------------------------------------------------


class RunLog:
    """Thread-safe JSONL writer of one run's events (use as a context manager)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        correlation_id: str,
        *,
        started_at: datetime | None = None,
    ) -> None:
        self.correlation_id = correlation_id
        self.path = Path(directory) / log_file_name(started_at or datetime.now(UTC))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def event(
        self,
        event: str,
        *,
        call_id: str | None = None,
        stage: str | None = None,
        duration_ms: float | None = None,
        error_code: str | None = None,
        **extra: Any,
    ) -> None:
        record: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "call_id": call_id,
            "stage": stage,
            "duration_ms": duration_ms,
            "error_code": error_code,
            "correlation_id": self.correlation_id,
        }
        for name, value in extra.items():
            if name not in record:  # extras never overwrite the fixed fields
                record[name] = value
        self.write(record)

    def write(self, record: Mapping[str, Any]) -> None:
        clean = {k: v if k in _TRUSTED_KEYS else scrub(v, k) for k, v in record.items()}
        line = (json.dumps(clean, ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise ValueError(f"run log {self.path} is closed")
            os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunLogHandler(logging.Handler):
    """Sends log records into a run log as `log` events, scrubbed like every other line."""

    def __init__(self, run_log: RunLog, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.run_log = run_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.run_log.event(
                "log",
                level=record.levelname,
                logger=record.name,
                message=message,
                call_id=getattr(record, "call_id", None),
                stage=getattr(record, "stage", None),
            )
        except Exception:
            self.handleError(record)


class ScrubFilter(logging.Filter):
    """Masks secrets and phones in records before any handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            # Exception texts carry URLs too: render now, scrubbed, and drop the original.
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = scrub_text(message)
        record.args = None
        return True


PROJECT_LOGGER = "calltexts_assets"
_SCRUB = ScrubFilter()


def scrubbed_logger(name: str) -> logging.Logger:
    """The module logger `name`, masking secrets and phones in its records before any
    handler (console, Dagster's captured logs, the run log) sees them."""
    logger = logging.getLogger(name)
    if _SCRUB not in logger.filters:
        logger.addFilter(_SCRUB)
    return logger


@contextmanager
def logging_into(run_log: RunLog, level: int = logging.WARNING) -> Iterator[None]:
    """While open, the project's own warnings (client retries, limit hits) also go into
    `run_log` as `log` events."""
    handler = RunLogHandler(run_log, level)
    logger = logging.getLogger(PROJECT_LOGGER)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
