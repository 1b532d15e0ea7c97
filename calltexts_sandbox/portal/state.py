"""The emulated Bitrix24 portal's state and its REST methods (telephony, Drive, batch,
OAuth tokens), answering as the real portal does (docs/specs/bitrix24_wire.md, each
behaviour with its source). The HTTP side is `portal_app.py`."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from calltexts_sandbox.calls.seed import (
    EMPLOYEES,
    LINES,
    SeedSpec,
    recording_format,
    recording_is_stereo,
)
from calltexts_sandbox.portal.errors import (
    ApiError,
    access_denied,
    insufficient_scope,
    invalid_credentials,
    method_not_found,
    operation_time_limit,
)
from calltexts_sandbox.portal.faults import (
    Fault,
)
from calltexts_sandbox.portal.files import (
    SPEECH_CONTENT_VERSION,
    TONES,
    WAV_RATE,
    AudioCache,
    AudioRenderer,
    Signer,
    drive_download_url,
    drive_file,
    storage_link,
)
from calltexts_sandbox.portal.limits import LeakyBucket, LoadLimiter
from calltexts_sandbox.portal.oauth import OAuthServer
from calltexts_sandbox.portal.params import parse_params, php_truthy, resolve_reference
from calltexts_sandbox.portal.rows import STAT_METHOD, StatisticRows, as_instant

log = logging.getLogger(__name__)

MAX_BATCH = 50
PAGE_SIZE = 50
DISK_METHOD = "disk.file.get"
USER_METHOD = "user.get"
LINE_METHOD = "voximplant.line.get"
# Scopes that allow each method, any one will do (docs §1, §2, §12); `batch`, `scope`,
# `server.time` are basic.
_SCOPES = {
    STAT_METHOD: ("telephony",),
    DISK_METHOD: ("disk",),
    LINE_METHOD: ("telephony",),
    USER_METHOD: ("user", "user_basic", "user_brief"),
}
_BASIC = frozenset({"batch", "scope", "server.time"})
__all__ = ["Fault", "Portal", "PortalConfig"]


@dataclass
class PortalConfig:
    user_id: str = "1"  # webhook: /rest/<user_id>/<webhook_code>/
    webhook_code: str = "sandboxwebhookcode"
    oauth_tokens: tuple[str, ...] = ("sandbox-oauth-token",)  # never expire
    client_id: str = "local.sandbox0000000001.00000001"
    client_secret: str = "sandbox-client-secret-0123456789"
    refresh_tokens: tuple[str, ...] = ("sandbox-refresh-token-0123456789",)
    token_lifetime_sec: float = 3600.0  # issued access tokens (the real portal: 1 hour)
    # What refresh answers name as the authorization server (`server_endpoint`); empty:
    # this emulator's own /rest/ (it serves /oauth/token/ too).
    oauth_server_endpoint: str = ""
    scopes: tuple[str, ...] = ("telephony", "disk", "call", "user_brief")  # webhook and app
    # The webhook's user may not see the lines (voximplant.line.get answers ACCESS_DENIED).
    lines_visible: bool = True
    rate_per_sec: float = 2.0  # leaky bucket per application; <= 0 disables it
    burst: int = 50  # bucket size; Bitrix24's standard plans use 50
    # Whether a Drive download (`/rest/…/download`) passes the leaky bucket like a REST
    # request: the portal's behaviour is documented nowhere (docs/specs/bitrix24_downloads.md);
    # True, the conservative reading, by default; False models a portal that does not meter it.
    download_metered: bool = True
    operating_limit_sec: float = 480.0  # per method and application (the docs' example)
    operating_window_sec: float = 600.0
    operating_cost_sec: dict[str, float] = field(default_factory=dict)  # running time added
    tz: str = "Europe/Moscow"  # how filter dates without an offset are read
    public_url: str = ""  # the portal's own base URL; empty = the URL the request came to
    storage_url: str = ""  # base of the storage host's links (set when it is served)
    # Signed storage links expire this long after the call (Voximplant keeps records for
    # 3 months at least: docs/specs/bitrix24_wire.md §2).
    storage_link_ttl_sec: float = 90 * 86400.0
    cache_dir: str | None = None  # on-disk cache of rendered recordings
    memory_cache_bytes: int = 64 * 1024 * 1024
    cache_version: str = "4"  # bump when the audio renderer changes
    # What the recordings hold: "tones" (a tone per word, silence between) or "speech"
    # (espeak-ng's voice, ring-back, holds, noise-only and music-only calls: calls/content.py)
    content: str = "tones"


@dataclass
class _Caller:
    """Who sent a request: the application's budget key and what a DOWNLOAD_URL needs."""

    app_key: str
    auth: dict[str, str]
    base_url: str

    @property
    def webhook(self) -> bool:
        return "code" in self.auth


@dataclass
class PortalStats:
    requests: Counter[str] = field(default_factory=Counter)  # endpoints + batch commands
    http_requests: Counter[str] = field(default_factory=Counter)  # HTTP level only
    responses: Counter[int] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)

    def snapshot(self, rate_limited: int, blocked: int, refreshes: int) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "http_requests": dict(self.http_requests),
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "faults_fired": dict(self.faults_fired),
            "rate_limited": rate_limited,
            "operation_time_limited": blocked,
            "token_refreshes": refreshes,
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
        self._faults: list[Fault] = []
        self._stats = PortalStats()
        self._bucket = LeakyBucket(config.rate_per_sec, config.burst, clock)
        self.limiter = LoadLimiter(
            config.operating_limit_sec,
            config.operating_window_sec,
            config.operating_cost_sec,
            ZoneInfo(config.tz),
        )
        self.oauth = OAuthServer(
            static_tokens=config.oauth_tokens,
            refresh_tokens=config.refresh_tokens,
            client_id=config.client_id,
            client_secret=config.client_secret,
            lifetime_sec=config.token_lifetime_sec,
            scopes=config.scopes,
        )
        self.signer = Signer(secrets.token_bytes(32))
        version = config.cache_version
        if config.content != TONES:
            version = f"{version}-{config.content}{SPEECH_CONTENT_VERSION}"
        self.audio = AudioCache(
            audio_renderer, config.cache_dir, config.memory_cache_bytes, version
        )
        self._table = StatisticRows([], config.tz)
        self.set_rows(rows)
        for fault in faults:
            self.add_fault(fault)

    # data
    def set_rows(self, rows: Iterable[Mapping[str, Any]]) -> int:
        table = StatisticRows(rows, self.config.tz)
        with self._lock:
            self._table = table
        return len(table.rows)

    def seed(self, spec: SeedSpec) -> int:
        return self.set_rows(spec.rows())

    @property
    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r.data) for r in self._table.rows]

    def _file_row(self, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._table.by_file.get(str(record_id))

    def recording(self, record_id: str) -> tuple[dict[str, Any], str, bytes | Path] | None:
        """(row, format, bytes or file) of the recording behind a RECORD_FILE_ID."""
        row = self._file_row(record_id)
        if row is None:
            return None
        call_id = str(row.get("CALL_ID") or record_id)
        fmt = recording_format(call_id)
        duration = int(float(row.get("CALL_DURATION") or 0))
        return row, fmt, self.audio.open(call_id, duration, recording_is_stereo(call_id), fmt)

    def secrets(self) -> set[str]:
        """Every credential and link token the portal has handed out or accepts: none may
        appear in anything the export writes."""
        with self._lock:
            return {
                self.config.webhook_code,
                *self.oauth.issued,
                *self.signer.issued,
            }

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

    def _fire(self, fault: Fault) -> None:
        fault.fired += 1
        self._stats.faults_fired[fault.kind] += 1

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
                self._fire(fault)
            self._faults = [f for f in self._faults if not f.spent]
        return delay, chosen

    def _command_fault(self, method: str, record_id: str | None) -> ApiError | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches_command(method, record_id):
                    self._fire(fault)
                    self._faults = [f for f in self._faults if not f.spent]
                    error = fault.command_error()
                    error.description = error.description.replace("{id}", str(record_id))
                    return error
        return None

    # limits
    def set_rate_limit(self, rate_per_sec: float, burst: int | None = None) -> None:
        with self._lock:
            self.config.rate_per_sec = rate_per_sec
            if burst is not None:
                self.config.burst = burst
        self._bucket.reset(self.config.rate_per_sec, self.config.burst)

    def _admit(self, app_key: str) -> bool:
        return self._bucket.admit(app_key)

    # stats
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats.snapshot(
                self._bucket.refused, self.limiter.blocked, self.oauth.refreshes
            )

    def request_count(self, endpoint: str) -> int:
        with self._lock:
            return self._stats.requests[endpoint.lower()]

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = PortalStats()
            self._bucket.refused = 0
            self.limiter.blocked = 0

    def _count(self, endpoint: str, *, http: bool = True) -> None:
        with self._lock:
            self._stats.requests[endpoint] += 1
            if http:
                self._stats.http_requests[endpoint] += 1

    def _count_response(self, status: int) -> None:
        with self._lock:
            self._stats.responses[status] += 1

    # REST methods
    def _render(self, row: Mapping[str, Any], caller: _Caller) -> dict[str, Any]:
        """The row as the portal answers it: a storage link placeholder becomes the storage
        host's URL; a signed one carries a token valid until `storage_link_ttl_sec` after
        the call (fixed, as a link stored with the call is: reading the row again gives the
        same link, and an old call's link has expired)."""
        data = dict(row)
        stored = data.get("CALL_RECORD_URL")
        if isinstance(stored, str) and stored:
            started = as_instant(data["CALL_START_DATE"], ZoneInfo(self.config.tz))
            storage_url = self.config.storage_url or caller.base_url
            data["CALL_RECORD_URL"] = storage_link(
                stored,
                str(data.get("RECORD_FILE_ID")),
                storage_url=storage_url.rstrip("/"),
                signer=self.signer,
                expires=int(started.timestamp() + self.config.storage_link_ttl_sec),
            )
        return data

    def _statistic_get(self, params: Mapping[str, Any], caller: _Caller) -> dict[str, Any]:
        with self._lock:
            table = self._table
        rows, envelope = table.query(params)
        return {"result": [self._render(r, caller) for r in rows], **envelope}

    def _disk_file_get(self, params: Mapping[str, Any], caller: _Caller) -> dict[str, Any]:
        record_id = str(params.get("id") or params.get("ID") or "")
        if not record_id:
            raise ApiError(400, "ERROR_ARGUMENT", "Invalid value of parameter {Parameter #0}")
        row = self._file_row(record_id)
        if row is None:
            raise ApiError(400, "ERROR_NOT_FOUND", f"Could not find entity with id '{record_id}'.")
        call_id = str(row.get("CALL_ID") or record_id)
        fmt = recording_format(call_id)
        # SIZE is estimated, so that resolving 50 links renders nothing (a download does).
        channels = 2 if recording_is_stereo(call_id) else 1
        per_sec = WAV_RATE * 2 * channels if fmt == "wav" else 4000
        size = int(float(row.get("CALL_DURATION") or 0)) * per_sec
        url = drive_download_url(caller.base_url, record_id, caller.auth, self.signer)
        return {"result": drive_file(row, record_id, fmt=fmt, size=size, download_url=url)}

    def call_method(
        self, method: str, params: Mapping[str, Any], caller: _Caller
    ) -> dict[str, Any]:
        """One method call (alone or as a batch command): its answer with a `time` block,
        or ApiError as the portal would answer it."""
        started = time.time()
        scopes = _SCOPES.get(method)
        if method not in _BASIC and scopes is None:
            raise method_not_found()
        if scopes is not None and not set(scopes) & set(self.config.scopes):
            raise insufficient_scope(caller.webhook)
        if method not in _BASIC and self.limiter.is_blocked(caller.app_key, method):
            raise operation_time_limit()
        record_id = str(params.get("id") or "") if method == DISK_METHOD else ""
        injected = self._command_fault(method, record_id or None)
        if injected is not None:
            raise injected
        if method == STAT_METHOD:
            body = self._statistic_get(params, caller)
        elif method == DISK_METHOD:
            body = self._disk_file_get(params, caller)
        elif method == USER_METHOD:
            body = _user_get(params)
        elif method == LINE_METHOD:
            if not self.config.lines_visible:
                raise access_denied()
            body = {"result": dict(LINES)}
        elif method == "scope":
            body = {"result": list(self.config.scopes)}
        else:
            body = {"result": datetime.now(ZoneInfo(self.config.tz)).isoformat()}
        if method not in _BASIC:
            self.limiter.spend(caller.app_key, method, started)
        body["time"] = self.limiter.time_block(caller.app_key, method, started)
        return body

    def batch(self, params: Mapping[str, Any], caller: _Caller) -> dict[str, Any]:
        """Commands in order, each answered or failed on its own; the request answers 200
        whatever they did (docs §3)."""
        cmd = params.get("cmd") or {}
        if not isinstance(cmd, dict):
            raise ApiError(400, "INVALID_ARG_VALUE", "cmd must be a set of named commands")
        halt = php_truthy(params.get("halt", "0"))
        done: dict[str, dict[str, Any]] = {
            "result": {},
            "result_error": {},
            "result_total": {},
            "result_next": {},
            "result_time": {},
        }
        for position, (name, query) in enumerate(cmd.items()):
            if not isinstance(query, str):
                continue  # the portal skips non-string commands without a word
            method, _, query_string = query.partition("?")
            method = method.strip().lower().removesuffix(".json")
            self._count(method, http=False)
            try:
                if position >= MAX_BATCH:
                    raise ApiError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
                if method in ("batch", "download", "upload"):
                    raise ApiError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method not allowed")
                pairs = [
                    (k, resolve_reference(v, done))
                    for k, v in parse_qsl(query_string, keep_blank_values=True)
                ]
                body = self.call_method(method, parse_params(pairs), caller)
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
            done["result_time"][name] = body["time"]
        # PHP's json_encode turns an empty array into [], and the real portal shows it.
        return {"result": {k: v or [] for k, v in done.items()}}

    # authentication
    def caller(self, segments: list[str], params: Mapping[str, Any], base_url: str) -> _Caller:
        cfg = self.config
        base = (cfg.public_url or base_url).rstrip("/")
        if len(segments) == 3:
            user_id, code, _ = segments
            if user_id != cfg.user_id or code != cfg.webhook_code:
                raise invalid_credentials()
            return _Caller(f"webhook:{user_id}", {"user": user_id, "code": code}, base)
        if len(segments) == 1:
            token = str(params.get("auth") or params.get("access_token") or "")
            self.oauth.check(token)
            return _Caller(f"oauth:{cfg.client_id}", {"token": token}, base)
        raise method_not_found()


def _user_get(params: Mapping[str, Any]) -> dict[str, Any]:
    """`user.get` with the fields the `user_brief` scope opens (docs §12): a `FILTER` on
    `ID` or `@ID` (one id or an array), 50 users a page from `start`, ordered by ID."""
    keys = {str(k).upper(): v for k, v in params.items()}
    raw = keys.get("FILTER")
    wanted: set[str] | None = None
    if isinstance(raw, dict):
        for key in ("ID", "@ID"):
            value = raw.get(key)
            if value is not None:
                values = value.values() if isinstance(value, dict) else [value]
                wanted = {str(v) for v in values}
    users = [
        {"ID": user_id, "ACTIVE": active, "NAME": name, "LAST_NAME": last, "SECOND_NAME": ""}
        for user_id, (name, last, active) in sorted(EMPLOYEES.items(), key=lambda i: int(i[0]))
        if wanted is None or user_id in wanted
    ]
    try:
        start = max(int(str(keys.get("START") or 0)), 0)
    except ValueError:
        start = 0
    page = users[start : start + PAGE_SIZE]
    body: dict[str, Any] = {"result": page, "total": len(users)}
    if start + len(page) < len(users):
        body["next"] = start + len(page)
    return body
