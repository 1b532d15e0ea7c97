"""A Bitrix24 portal emulator (telephony part) as a Starlette ASGI app.

Endpoints (run it with `serve_in_thread(create_portal_app(...))`):
- `/rest/<user_id>/<code>/<method>.json` (webhook) and `/rest/<method>.json?auth=<token>`
  (OAuth; `auth` also accepted in the POST body). Params from the query string, a form or a
  JSON body, Bitrix-style nested keys (`FILTER[>=CALL_START_DATE]=...`).
  Methods: `voximplant.statistic.get`, `batch`, `scope`, `server.time`.
- `/sandbox/records/<RECORD_FILE_ID>.mp3`: the recordings. They need no auth (capability
  URLs, as a portal's file links handed out in CALL_RECORD_URL) and are not rate limited
  (a files server, not the REST API).
- `/_sandbox/faults` (GET list, POST add, DELETE clear), `/_sandbox/stats` (GET),
  `/_sandbox/reset-stats` (POST), `/_sandbox/seed` (POST `{seed,start,days,calls_per_day,tz}`
  or `{rows:[...]}`). The same controls exist in Python on `app.state.portal` (a `Portal`).

Emulator choices where the real portal is unspecified: default order of
`voximplant.statistic.get` is CALL_START_DATE DESC (so a client that pages by ID must say
`SORT=ID`); a batch `$result[...]` reference that cannot be resolved fails that command in
`result_error`; a fault on a method also hits a `batch` request that contains the method.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from calltexts_assets.sandbox.seed import SeedSpec, recording_is_stereo

log = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_BATCH = 50
STAT_METHOD = "voximplant.statistic.get"
RECORDS = "records"
AudioRenderer = Callable[[str, int, bool], bytes]  # (call_id, duration_sec, stereo) -> MP3
FAULT_KINDS = frozenset(
    {"status", "latency", "expired_token", "insufficient_scope", "html", "missing", "truncate"}
)
_CHUNK = 64 * 1024


def default_audio_renderer(call_id: str, duration_sec: int, stereo: bool) -> bytes:
    """The sandbox's tone-coded call audio (imported lazily: it pulls numpy and ffmpeg)."""
    from calltexts_assets.sandbox.script import call_script
    from calltexts_assets.sandbox.tones import render_mp3

    return render_mp3(call_script(call_id, duration_sec, stereo))


@dataclass
class PortalConfig:
    user_id: str = "1"  # webhook: /rest/<user_id>/<webhook_code>/
    webhook_code: str = "sandboxwebhookcode"
    oauth_tokens: tuple[str, ...] = ("sandbox-oauth-token",)
    rate_per_sec: float = 2.0  # leaky bucket per application; <= 0 disables it
    burst: int = 50  # bucket size; Bitrix24's standard plans use 50
    tz: str = "Europe/Moscow"  # how filter dates without an offset are read
    public_url: str = ""  # base of CALL_RECORD_URL; empty = the URL the request came to
    cache_dir: str | None = None  # on-disk cache of rendered recordings
    memory_cache_bytes: int = 64 * 1024 * 1024
    cache_version: str = "2"  # bump when the audio renderer changes


@dataclass
class Fault:
    """One injected misbehaviour; `times=None` keeps it until cleared.

    kinds: `status` (HTTP `status`, default 503, JSON `error`), `latency` (`delay_sec`, then
    the normal answer), `expired_token` / `insufficient_scope` (401 / 403), `html` (an HTML
    page with `status` 200 or 502), `missing` (records: 404 or 410), `truncate` (records:
    full Content-Length, `truncate_at` of the body, then the connection is dropped).
    `target`: a method name, `batch`, `records`, or `*` for every REST method.
    """

    kind: str
    target: str = "*"
    times: int | None = 1
    status: int | None = None
    error: str | None = None
    description: str | None = None
    delay_sec: float = 0.0
    retry_after: float | None = None
    record_ids: tuple[str, ...] | None = None
    truncate_at: float = 0.5
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        self.target = self.target.lower()
        if self.record_ids is not None:
            self.record_ids = tuple(str(r) for r in self.record_ids)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)} - {"fired"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        return cls(**dict(data))

    def matches(self, endpoints: set[str], record_id: str | None) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if record_id is not None:
            if self.target != RECORDS:
                return False
            return self.record_ids is None or record_id in self.record_ids
        return self.target in endpoints or (self.target == "*" and RECORDS not in endpoints)


class ApiError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class _DeliberateTruncation(Exception):
    """Raised mid-body to make the server drop the connection (the `truncate` fault)."""


class _QuietTruncation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _DeliberateTruncation)


_quiet = _QuietTruncation()


# -- Bitrix-style parameters ---------------------------------------------------------------

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SUBKEY = re.compile(r"\[([^\[\]]*)\]")
_REF = re.compile(r"\$(result|result_total|result_next)\[([^\]]+)\]((?:\[[^\]]*\])*)")


def parse_params(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """`[("FILTER[>ID]", "5")]` -> `{"FILTER": {">ID": "5"}}` (PHP's rules; `a[]` appends)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        parts = [match.group(1), *_SUBKEY.findall(match.group(2))] if match else [key]
        node = out
        for depth, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if depth == len(parts) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return out


def _resolve_refs(value: str, done: Mapping[str, Mapping[str, Any]]) -> str:
    """Substitute `$result[cmd][index][FIELD]` from earlier batch commands' answers."""

    def lookup(match: re.Match[str]) -> str:
        node: Any = done[match.group(1)].get(match.group(2))
        missing = node is None
        for key in _SUBKEY.findall(match.group(3)):
            if missing:
                break
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict) and key in node:
                node = node[key]
            else:
                missing = True
        if missing or node is None or isinstance(node, dict | list):
            raise ApiError(400, "ERROR_BATCH_REFERENCE", f"cannot resolve {match.group(0)}")
        return str(node)

    return _REF.sub(lookup, value)


# -- statistic rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    stat_id: int
    started: datetime
    data: dict[str, Any]


_FILTER_KEY = re.compile(r"^(>=|<=|!=|>|<|=|!)?(.+)$")
_DATE_FIELDS = frozenset({"CALL_START_DATE"})


def _as_instant(value: Any, zone: ZoneInfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise ApiError(400, "INVALID_ARG_VALUE", f"bad date {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def _compare_key(row: _Row, name: str, zone: ZoneInfo) -> Any:
    if name == "ID":
        return row.stat_id
    if name in _DATE_FIELDS:
        return row.started
    return row.data.get(name)


def _coerce(value: Any, like: Any, zone: ZoneInfo) -> Any:
    if isinstance(like, datetime):
        return _as_instant(value, zone)
    if isinstance(like, int):
        try:
            return int(float(value))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "INVALID_ARG_VALUE", f"bad number {value!r}") from exc
    return value


def _values_equal(actual: Any, wanted: Any) -> bool:
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return str(actual if actual is not None else "") == str(wanted)


class _Filter:
    def __init__(self, raw: Any, zone: ZoneInfo) -> None:
        self.tests: list[tuple[str, str, Any]] = []
        self.id_floor: int | None = None  # lowest ID that can match (for the keyset fast path)
        self.zone = zone
        if not isinstance(raw, dict):
            return
        sample = _Row(0, datetime.now(zone), {})
        for key, value in raw.items():
            match = _FILTER_KEY.match(str(key))
            if match is None:  # an empty key filters nothing
                continue
            op, name = match.group(1) or "=", match.group(2)
            like = _compare_key(sample, name, zone)
            if isinstance(value, dict):  # FILTER[CALL_TYPE][]=1&...: one of
                wanted: Any = [_coerce(v, like, zone) for v in value.values()]
            else:
                wanted = _coerce(value, like, zone)
            self.tests.append((op, name, wanted))
            if name == "ID" and op in (">", ">=") and not isinstance(wanted, list):
                floor = wanted + 1 if op == ">" else wanted
                self.id_floor = floor if self.id_floor is None else max(self.id_floor, floor)

    def __call__(self, row: _Row) -> bool:
        for op, name, wanted in self.tests:
            actual = _compare_key(row, name, self.zone)
            if isinstance(wanted, list):
                hit = any(_values_equal(actual, w) for w in wanted)
                if hit == (op in ("!", "!=")):
                    return False
                continue
            if op in ("=", "!", "!="):
                if _values_equal(actual, wanted) == (op == "="):
                    continue
                return False
            if actual is None or isinstance(actual, str):
                try:
                    actual, wanted = float(actual), float(wanted)
                except (TypeError, ValueError):
                    return False
            if not {
                ">": actual > wanted,
                ">=": actual >= wanted,
                "<": actual < wanted,
                "<=": actual <= wanted,
            }[op]:
                return False
        return True


# -- audio ---------------------------------------------------------------------------------


class AudioCache:
    """Rendered recordings: a bounded in-memory LRU over an optional directory of files.

    Rendering costs ~0.25 s per audio minute, so each recording is rendered once (a per-key
    lock makes concurrent first downloads wait for the one render).
    """

    def __init__(
        self, renderer: AudioRenderer, cache_dir: str | None, max_bytes: int, version: str
    ) -> None:
        self.renderer = renderer
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_bytes = max_bytes
        self.version = version
        self.renders = 0
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    def get(self, call_id: str, duration_sec: int, stereo: bool) -> bytes:
        key = hashlib.sha256(
            f"{self.version}|{call_id}|{duration_sec}|{int(stereo)}".encode()
        ).hexdigest()[:32]
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            data = self._from_memory(key)
            if data is None:
                data = self._from_disk(key)
            if data is None:
                data = self.renderer(call_id, duration_sec, stereo)
                self.renders += 1
                self._to_disk(key, data)
            self._to_memory(key, data)
            return data

    def _from_memory(self, key: str) -> bytes | None:
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
            return data

    def _to_memory(self, key: str, data: bytes) -> None:
        with self._lock:
            if key in self._memory or len(data) > self.max_bytes:
                return
            self._memory[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, old = self._memory.popitem(last=False)
                self._size -= len(old)

    def _from_disk(self, key: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.mp3"
        return path.read_bytes() if path.exists() else None

    def _to_disk(self, key: str, data: bytes) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f"{key}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.cache_dir / f"{key}.mp3")  # atomic: readers never see half a file


class _TruncatedBody:
    """ASGI response: announce the full length, send part of the body, drop the connection."""

    def __init__(self, data: bytes, fraction: float) -> None:
        self.data = data
        self.cut = max(0, min(len(data) - 1, int(len(data) * fraction)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"audio/mpeg"),
            (b"content-length", str(len(self.data)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.data[: self.cut], "more_body": True})
        raise _DeliberateTruncation


# -- the portal state ----------------------------------------------------------------------


@dataclass
class _Bucket:
    level: float = 0.0
    last: float = 0.0


@dataclass
class PortalStats:
    requests: Counter[str] = field(default_factory=Counter)  # endpoints + batch commands
    http_requests: Counter[str] = field(default_factory=Counter)  # HTTP level only
    responses: Counter[int] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "http_requests": dict(self.http_requests),
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "faults_fired": dict(self.faults_fired),
            "rate_limited": self.rate_limited,
        }


class Portal:
    """The emulator's state and its Python control API (`app.state.portal`)."""

    def __init__(
        self,
        rows: Iterable[Mapping[str, Any]],
        config: PortalConfig,
        faults: Iterable[Fault | Mapping[str, Any]],
        audio_renderer: AudioRenderer,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.clock = clock
        self._lock = threading.RLock()
        self._rows: list[_Row] = []
        self._ids: list[int] = []
        self._records: dict[str, dict[str, Any]] = {}
        self._faults: list[Fault] = []
        self._buckets: dict[str, _Bucket] = {}
        self._stats = PortalStats()
        self.audio = AudioCache(
            audio_renderer, config.cache_dir, config.memory_cache_bytes, config.cache_version
        )
        self.set_rows(rows)
        for fault in faults:
            self.add_fault(fault)

    # data
    def set_rows(self, rows: Iterable[Mapping[str, Any]]) -> int:
        zone = ZoneInfo(self.config.tz)
        indexed = sorted(
            (_Row(int(r["ID"]), _as_instant(r["CALL_START_DATE"], zone), dict(r)) for r in rows),
            key=lambda r: r.stat_id,
        )
        with self._lock:
            self._rows = indexed
            self._ids = [r.stat_id for r in indexed]
            self._records = {
                str(r.data["RECORD_FILE_ID"]): r.data
                for r in indexed
                if r.data.get("RECORD_FILE_ID")
            }
        return len(indexed)

    def seed(self, spec: SeedSpec) -> int:
        return self.set_rows(spec.rows())

    @property
    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r.data) for r in self._rows]

    # faults
    def add_fault(self, fault: Fault | Mapping[str, Any] | None = None, **kwargs: Any) -> Fault:
        """`add_fault(Fault(...))`, `add_fault({"kind": ...})` or `add_fault(kind=..., ...)`."""
        if fault is None:
            fault = Fault(**kwargs)
        elif not isinstance(fault, Fault):
            fault = Fault.from_dict(fault)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return [replace(f) for f in self._faults]

    def _take_faults(
        self, endpoints: set[str], record_id: str | None
    ) -> tuple[float, Fault | None]:
        """Consume the matching faults: total latency, and the first failure to answer with."""
        delay, chosen = 0.0, None
        with self._lock:
            for fault in self._faults:
                if not fault.matches(endpoints, record_id):
                    continue
                if fault.kind == "latency":
                    delay += fault.delay_sec
                elif chosen is None:
                    chosen = fault
                else:
                    continue
                fault.fired += 1
                self._stats.faults_fired[fault.kind] += 1
            self._faults = [f for f in self._faults if f.times is None or f.fired < f.times]
        return delay, chosen

    # limits
    def set_rate_limit(self, rate_per_sec: float, burst: int | None = None) -> None:
        with self._lock:
            self.config.rate_per_sec = rate_per_sec
            if burst is not None:
                self.config.burst = burst
            self._buckets.clear()

    def _admit(self, app_key: str) -> bool:
        with self._lock:
            rate, burst = self.config.rate_per_sec, self.config.burst
            if rate <= 0:
                return True
            now = self.clock()
            bucket = self._buckets.setdefault(app_key, _Bucket(0.0, now))
            bucket.level = max(0.0, bucket.level - (now - bucket.last) * rate)
            bucket.last = now
            if bucket.level + 1 > burst:
                self._stats.rate_limited += 1
                return False
            bucket.level += 1
            return True

    # stats
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats.snapshot()

    def request_count(self, endpoint: str) -> int:
        with self._lock:
            return self._stats.requests[endpoint.lower()]

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = PortalStats()

    def _count(self, endpoint: str, *, http: bool = True) -> None:
        with self._lock:
            self._stats.requests[endpoint] += 1
            if http:
                self._stats.http_requests[endpoint] += 1

    def _count_response(self, status: int) -> None:
        with self._lock:
            self._stats.responses[status] += 1

    # REST methods
    def statistic_get(self, params: Mapping[str, Any], base_url: str) -> dict[str, Any]:
        zone = ZoneInfo(self.config.tz)
        flt = _Filter(params.get("FILTER") or params.get("filter"), zone)
        sort = str(params.get("SORT") or params.get("sort") or "CALL_START_DATE").upper()
        order = str(params.get("ORDER") or params.get("order") or "DESC").upper()
        try:
            offset = int(params.get("start", 0) or 0)
        except (TypeError, ValueError):
            offset = 0
        keyset = offset == -1
        with self._lock:
            rows, ids = self._rows, self._ids
        if keyset and sort == "ID" and order == "ASC":
            # Rows are kept in ID order: jump to the floor and stop at one page.
            first = bisect.bisect_left(ids, flt.id_floor) if flt.id_floor is not None else 0
            page: list[_Row] = []
            for row in rows[first:]:
                if flt(row):
                    page.append(row)
                    if len(page) == PAGE_SIZE:
                        break
            return {"result": [self._render(r, base_url) for r in page]}
        matched = [r for r in rows if flt(r)]
        matched.sort(
            key=lambda r: (_sortable(_compare_key(r, sort, zone)), r.stat_id),
            reverse=order == "DESC",
        )
        if keyset:
            return {"result": [self._render(r, base_url) for r in matched[:PAGE_SIZE]]}
        offset = max(0, offset)
        body: dict[str, Any] = {
            "result": [self._render(r, base_url) for r in matched[offset : offset + PAGE_SIZE]]
        }
        if offset + PAGE_SIZE < len(matched):
            body["next"] = offset + PAGE_SIZE
        body["total"] = len(matched)
        return body

    def _render(self, row: _Row, base_url: str) -> dict[str, Any]:
        data = dict(row.data)
        url = data.get("CALL_RECORD_URL") or ""
        if url.startswith("/"):
            data["CALL_RECORD_URL"] = (self.config.public_url or base_url).rstrip("/") + url
        return data

    def dispatch(self, method: str, params: Mapping[str, Any], base_url: str) -> dict[str, Any]:
        if method == STAT_METHOD:
            return self.statistic_get(params, base_url)
        if method == "scope":
            return {"result": ["telephony", "call"]}
        if method == "server.time":
            return {"result": datetime.now(ZoneInfo(self.config.tz)).isoformat()}
        raise ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def batch(self, params: Mapping[str, Any], base_url: str) -> dict[str, Any]:
        cmd = params.get("cmd") or {}
        if not isinstance(cmd, dict):
            raise ApiError(400, "INVALID_ARG_VALUE", "cmd must be a set of named commands")
        if len(cmd) > MAX_BATCH:
            raise ApiError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        halt = str(params.get("halt", "0")).lower() in ("1", "true", "y")
        done: dict[str, dict[str, Any]] = {
            "result": {},
            "result_error": {},
            "result_total": {},
            "result_next": {},
            "result_time": {},
        }
        for name, query in cmd.items():
            started = time.time()
            method, _, query_string = str(query).partition("?")
            method = method.strip().lower().removesuffix(".json")
            self._count(method, http=False)
            try:
                if method == "batch":
                    raise ApiError(400, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method not allowed")
                pairs = [
                    (k, _resolve_refs(v, done))
                    for k, v in parse_qsl(query_string, keep_blank_values=True)
                ]
                body = self.dispatch(method, parse_params(pairs), base_url)
            except ApiError as exc:
                done["result_error"][name] = exc.body()
                if halt:
                    break
                continue
            done["result"][name] = body["result"]
            if "total" in body:
                done["result_total"][name] = body["total"]
            if "next" in body:
                done["result_next"][name] = body["next"]
            done["result_time"][name] = _time_block(started)
        # PHP's json_encode turns an empty array into [], and the real portal shows it.
        return {"result": {k: v or [] for k, v in done.items()}}


def _sortable(value: Any) -> Any:
    if isinstance(value, datetime | int | float):
        return (0, value, "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0, str(value or ""))


def _time_block(started: float) -> dict[str, Any]:
    finish = time.time()
    return {
        "start": started,
        "finish": finish,
        "duration": finish - started,
        "processing": finish - started,
        "date_start": datetime.fromtimestamp(started).astimezone().isoformat(),
        "date_finish": datetime.fromtimestamp(finish).astimezone().isoformat(),
        "operating_reset_at": int(finish) + 600,
        "operating": 0,
    }


# -- HTTP ----------------------------------------------------------------------------------

_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>{status}</title></head>"
    "<body><h1>{status}</h1><p>The portal is temporarily unavailable.</p></body></html>"
)
_DEFAULT_ERRORS = {
    429: ("QUERY_LIMIT_EXCEEDED", "Too many requests"),
    503: ("QUERY_LIMIT_EXCEEDED", "Too many requests"),
    500: ("INTERNAL_SERVER_ERROR", "Internal server error"),
}


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(dict(body), status_code=status, headers=dict(headers or {}))


def _fault_response(fault: Fault) -> Response:
    if fault.kind == "expired_token":
        return _json(
            401,
            {
                "error": "expired_token",
                "error_description": "The access token provided has expired.",
            },
        )
    if fault.kind == "insufficient_scope":
        return _json(
            403,
            {
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided"
                " by the access token",
            },
        )
    if fault.kind == "html":
        status = fault.status or 200
        return HTMLResponse(_HTML_PAGE.format(status=status), status_code=status)
    if fault.kind == "missing":
        status = fault.status or 404
        return _json(status, {"error": "NOT_FOUND", "error_description": "File not found"})
    status = fault.status or 503
    error, description = _DEFAULT_ERRORS.get(status, ("ERROR", f"HTTP {status}"))
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
    body = {"error": fault.error or error, "error_description": fault.description or description}
    return _json(status, body, headers)


async def _read_params(request: Request) -> dict[str, Any]:
    pairs: list[tuple[str, Any]] = list(request.query_params.multi_items())
    merged = parse_params(pairs)
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError as exc:
                raise ApiError(400, "INVALID_REQUEST", "body is not valid JSON") from exc
            if not isinstance(body, dict):
                raise ApiError(400, "INVALID_REQUEST", "body must be a JSON object")
            merged.update(body)
        elif "form" in ctype:
            form = await request.form(max_fields=10_000)
            merged.update(parse_params((k, v) for k, v in form.multi_items() if isinstance(v, str)))
    return merged


def _auth(portal: Portal, segments: list[str], params: Mapping[str, Any]) -> tuple[str, str]:
    """(method, application key) or ApiError 401 for unknown credentials."""
    cfg = portal.config
    if len(segments) == 3:
        user_id, code, method = segments
        if user_id != cfg.user_id or code != cfg.webhook_code:
            raise ApiError(401, "invalid_token", "The access token provided is invalid.")
        app_key = f"webhook:{user_id}"
    elif len(segments) == 1:
        method = segments[0]
        token = str(params.get("auth") or "")
        if token not in cfg.oauth_tokens:
            raise ApiError(401, "invalid_token", "The access token provided is invalid.")
        app_key = f"oauth:{hashlib.sha256(token.encode()).hexdigest()[:12]}"
    else:
        raise ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    return method, app_key


def _method_of(path: str) -> tuple[list[str], str]:
    segments = [s for s in path.split("/") if s]
    method = segments[-1].lower().removesuffix(".json") if segments else ""
    return [*segments[:-1], method], method


async def _api(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    started = time.time()
    segments, method = _method_of(request.path_params["path"])
    portal._count(method)
    try:
        params = await _read_params(request)
        endpoints = {method}
        if method == "batch" and isinstance(params.get("cmd"), dict):
            endpoints |= {
                str(q).partition("?")[0].strip().lower().removesuffix(".json")
                for q in params["cmd"].values()
            }
        _, app_key = _auth(portal, segments, params)
        # A refused request consumes no fault: the fault plan stays what the test wrote.
        admitted = portal._admit(app_key)
        delay, fault = portal._take_faults(endpoints, None) if admitted else (0.0, None)
        if delay:
            await asyncio.sleep(delay)
        if not admitted:
            response = _json(
                503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
            )
        elif fault is not None:
            response = _fault_response(fault)
        else:
            base_url = str(request.base_url)
            if method == "batch":
                body = portal.batch(params, base_url)
            else:
                body = portal.dispatch(method, params, base_url)
            body["time"] = _time_block(started)
            response = _json(200, body)
    except ApiError as exc:
        response = _json(exc.status, exc.body())
    portal._count_response(response.status_code)
    return response


async def _record(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    portal._count(RECORDS)
    record_id = request.path_params["name"].removesuffix(".mp3")
    delay, fault = portal._take_faults({RECORDS}, record_id)
    if delay:
        await asyncio.sleep(delay)
    row = portal._records.get(record_id)
    response: Any
    if fault is not None and fault.kind != "truncate":
        response = _fault_response(fault)
    elif row is None:
        response = _json(404, {"error": "NOT_FOUND", "error_description": "File not found"})
    else:
        call_id = str(row.get("CALL_ID") or record_id)
        duration = int(float(row.get("CALL_DURATION") or 0))
        data = await run_in_threadpool(
            portal.audio.get, call_id, duration, recording_is_stereo(call_id)
        )
        if fault is not None:
            response = _TruncatedBody(data, fault.truncate_at)
            portal._count_response(200)
            return response
        response = StreamingResponse(
            _chunks(data),
            media_type="audio/mpeg",
            headers={
                "Content-Length": str(len(data)),
                "Content-Disposition": f'attachment; filename="{record_id}.mp3"',
            },
        )
    portal._count_response(response.status_code)
    return response


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        yield bytes(view[start : start + _CHUNK])


# -- admin ---------------------------------------------------------------------------------


async def _admin_faults(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    try:
        if request.method == "DELETE":
            portal.clear_faults()
        elif request.method == "POST":
            payload = json.loads(await request.body() or b"{}")
            if isinstance(payload, dict) and "faults" in payload:
                if payload.get("replace"):
                    portal.clear_faults()
                payload = payload["faults"]
            for item in payload if isinstance(payload, list) else [payload]:
                portal.add_fault(item)
    except (ValueError, TypeError) as exc:
        return _json(400, {"error": "INVALID_FAULT", "error_description": str(exc)})
    return _json(200, {"faults": [asdict(f) for f in portal.faults]})


async def _admin_stats(request: Request) -> Response:
    return _json(200, request.app.state.portal.stats())


async def _admin_reset_stats(request: Request) -> Response:
    request.app.state.portal.reset_stats()
    return _json(200, {"ok": True})


async def _admin_seed(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    try:
        payload = json.loads(await request.body() or b"{}")
        if "rows" in payload:
            count = portal.set_rows(payload["rows"])
        else:
            spec = SeedSpec(
                seed=int(payload.get("seed", 1)),
                start=date.fromisoformat(str(payload["start"])),
                days=int(payload.get("days", 1)),
                calls_per_day=int(payload.get("calls_per_day", 100)),
                tz=str(payload.get("tz", portal.config.tz)),
            )
            count = await run_in_threadpool(portal.seed, spec)
    except (KeyError, ValueError, TypeError) as exc:
        return _json(400, {"error": "INVALID_SEED", "error_description": str(exc)})
    return _json(200, {"rows": count})


def create_portal_app(
    rows: Iterable[Mapping[str, Any]] | None = None,
    *,
    seed: SeedSpec | None = None,
    config: PortalConfig | None = None,
    faults: Iterable[Fault | Mapping[str, Any]] = (),
    audio_renderer: AudioRenderer | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The portal emulator; its state and controls are `app.state.portal` (a `Portal`).

    Data comes from `rows` (statistic rows, CALL_RECORD_URL as a path) or a `seed` spec.
    `audio_renderer(call_id, duration_sec, stereo) -> mp3 bytes` defaults to the sandbox's
    tone renderer; tests may inject a cheap one.
    """
    config = config or PortalConfig()
    if rows is None:
        rows = seed.rows() if seed is not None else []
    portal = Portal(rows, config, faults, audio_renderer or default_audio_renderer, clock)
    logging.getLogger("uvicorn.error").addFilter(_quiet)  # truncation faults are on purpose
    app = Starlette(
        routes=[
            Route("/rest/{path:path}", _api, methods=["GET", "POST"]),
            Route("/sandbox/records/{name}", _record, methods=["GET"]),
            Route("/_sandbox/faults", _admin_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sandbox/stats", _admin_stats, methods=["GET"]),
            Route("/_sandbox/reset-stats", _admin_reset_stats, methods=["POST"]),
            Route("/_sandbox/seed", _admin_seed, methods=["POST"]),
        ]
    )
    app.state.portal = portal
    return app


def portal_of(app: Starlette) -> Portal:
    return app.state.portal
