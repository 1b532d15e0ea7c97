"""Bitrix24 REST wire format: form-encoded parameters, batch commands and answers."""

from __future__ import annotations

import email.utils
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlencode

import httpx

PAGE_SIZE = 50  # fixed by the API
MAX_BATCH = 50
STAT_METHOD = "voximplant.statistic.get"
DEFAULT_RETRY_WAITS = (5.0, 15.0, 30.0, 60.0, 120.0)
Sink = Callable[[bytes], Any] | IO[bytes]


@dataclass
class ClientStats:
    """Counters for asset metadata; safe to update from many threads."""

    requests: int = 0  # REST attempts (a batch is one)
    retries: int = 0
    limit_hits: int = 0  # 429 / QUERY_LIMIT_EXCEEDED answers
    blocked: int = 0  # OPERATION_TIME_LIMIT refusals (a batch command counts)
    operating_waits: int = 0  # pauses for a method's running-time budget to reset
    operating_wait_sec: float = 0.0
    downloads: int = 0  # download attempts
    rest_downloads: int = 0  # of them through the portal's REST path (Drive files)
    download_bytes: int = 0
    per_method: Counter[str] = field(default_factory=Counter)
    batch_commands: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def add_wait(self, seconds: float) -> None:
        with self._lock:
            self.operating_waits += 1
            self.operating_wait_sec += seconds

    def count_request(self, method: str) -> None:
        with self._lock:
            self.requests += 1
            self.per_method[method] += 1

    def count_commands(self, methods: Sequence[str]) -> None:
        with self._lock:
            self.batch_commands.update(methods)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "limit_hits": self.limit_hits,
                "blocked": self.blocked,
                "operating_waits": self.operating_waits,
                "operating_wait_sec": round(self.operating_wait_sec, 3),
                "downloads": self.downloads,
                "rest_downloads": self.rest_downloads,
                "download_bytes": self.download_bytes,
                "per_method": dict(self.per_method),
                "batch_commands": dict(self.batch_commands),
            }


@dataclass(frozen=True)
class DownloadResult:
    bytes: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class BatchResult:
    result: dict[str, Any]
    result_error: dict[str, Any]
    result_total: dict[str, Any]
    result_next: dict[str, Any]
    result_time: dict[str, Any]

    def error_code(self, name: str) -> str:
        return str(as_dict(self.result_error.get(name)).get("error") or "")

    def blocked(self) -> list[str]:
        """Commands refused for their method's running-time limit (OPERATION_TIME_LIMIT)."""
        return [
            name for name in self.result_error if self.error_code(name) == "OPERATION_TIME_LIMIT"
        ]

    def merged_with(self, again: BatchResult) -> BatchResult:
        """This answer with the commands sent `again` replaced by their new answers."""
        redone = set(again.result) | set(again.result_error)
        sections = {}
        for section in ("result", "result_error", "result_total", "result_next", "result_time"):
            kept = {k: v for k, v in getattr(self, section).items() if k not in redone}
            sections[section] = {**kept, **getattr(again, section)}
        return BatchResult(**sections)


class Batching:
    """What the client's mixins (telephony listing, links) need of its `batch`."""

    def batch(
        self,
        commands: Mapping[str, str | tuple[str, Mapping[str, Any]]],
        *,
        halt: bool = False,
        retry_blocked: bool = True,
    ) -> BatchResult:
        raise NotImplementedError  # Bitrix24Client.batch

    def wait_blocked(self, methods: set[str], waited: float) -> float:
        raise NotImplementedError  # Bitrix24Client.wait_blocked


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested params as Bitrix (PHP) form keys: `{"FILTER": {">ID": 5}}` -> `FILTER[>ID]=5`."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            pairs.extend(flatten_params(value, name))
        elif isinstance(value, list | tuple):
            pairs.extend(flatten_params({str(i): v for i, v in enumerate(value)}, name))
        elif value is None:
            pairs.append((name, ""))
        elif isinstance(value, bool):
            pairs.append((name, "1" if value else "0"))
        elif isinstance(value, datetime):
            pairs.append((name, value.isoformat()))
        else:
            pairs.append((name, str(value)))
    return pairs


def encode_command(method: str, params: Mapping[str, Any] | None = None) -> str:
    """One `batch` command: `method?query`. `$result[...]` references survive URL-encoding
    because the portal decodes each command's query before substituting them."""
    query = urlencode(flatten_params(params or {}))
    return f"{method}?{query}" if query else method


def as_dict(value: Any) -> dict[str, Any]:
    # PHP encodes an empty associative array as [], so batch sections may be lists.
    return value if isinstance(value, dict) else {}


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def snippet(data: bytes) -> str:
    return repr(data[:120].decode("utf-8", "replace"))


def looks_html(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml"))
