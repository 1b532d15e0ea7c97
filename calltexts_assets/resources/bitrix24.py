"""Bitrix24 REST client for telephony statistics and recordings, and its Dagster resource.

Everything that reaches a log line or an exception goes through `masking`: the webhook code
and the OAuth token never leave this module in clear.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, TypeVar
from urllib.parse import urlencode

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from calltexts_assets.masking import install_log_masking, mask_text, mask_url
from calltexts_assets.ratelimit import RateLimiter
from calltexts_assets.retrying import RetryableError, retry_policy

log = logging.getLogger(__name__)

PAGE_SIZE = 50  # fixed by the API
MAX_BATCH = 50
STAT_METHOD = "voximplant.statistic.get"
DEFAULT_RETRY_WAITS = (5.0, 15.0, 30.0, 60.0, 120.0)
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_LIMIT_ERRORS = frozenset({"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"})
_AUTH_HINTS = {
    "expired_token": "access token expired: refresh the OAuth token or webhook",
    "insufficient_scope": "insufficient scope: the webhook needs the telephony scope",
    "invalid_token": "invalid credentials: check the webhook code or the OAuth token",
    "invalid_credentials": "invalid credentials: check the webhook code or the OAuth token",
    "no_auth_found": "no credentials accepted: check the webhook URL or the OAuth token",
    "access_denied": "access denied: the webhook's user may not read telephony statistics",
}
T = TypeVar("T")
Sink = Callable[[bytes], Any] | IO[bytes]


class Bitrix24Error(Exception):
    """A Bitrix24 request that failed for good; `code` is short and safe for the ledger."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        code: str = "bitrix24_error",
        status: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.method, self.code, self.status, self.attempts = method, code, status, attempts


class Bitrix24AuthError(Bitrix24Error):
    """401/403: retrying cannot help, the credentials or their scope must change."""


class RecordingMissing(Exception):
    """The recording URL answered 404/410: the file is gone (not retried)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.code = f"http_{status}"


class _Transient(RetryableError):
    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code, self.status = code, status


@dataclass
class ClientStats:
    """Counters for asset metadata; safe to update from many threads."""

    requests: int = 0  # REST attempts (a batch is one)
    retries: int = 0
    limit_hits: int = 0  # 429 / QUERY_LIMIT_EXCEEDED answers
    downloads: int = 0  # download attempts
    download_bytes: int = 0
    per_method: Counter[str] = field(default_factory=Counter)
    batch_commands: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

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
                "downloads": self.downloads,
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


def _as_dict(value: Any) -> dict[str, Any]:
    # PHP encodes an empty associative array as [], so batch sections may be lists.
    return value if isinstance(value, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
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


def _snippet(data: bytes) -> str:
    return repr(data[:120].decode("utf-8", "replace"))


def _looks_html(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml"))


class Bitrix24Client:
    """Thread-safe client: one httpx connection pool, one rate limiter, one `stats`."""

    def __init__(
        self,
        *,
        webhook_url: str = "",
        oauth_token: str = "",
        portal_url: str = "",
        requests_per_second: float = 2.0,
        retry_waits: Sequence[float] = DEFAULT_RETRY_WAITS,
        retry_wait_scale: float = 1.0,
        timeout_sec: float = 30.0,
        limiter: RateLimiter | None = None,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if webhook_url:
            self._base = webhook_url.rstrip("/") + "/"
            self._auth: list[tuple[str, str]] = []
        elif oauth_token and portal_url:
            self._base = portal_url.rstrip("/") + "/rest/"
            self._auth = [("auth", oauth_token)]
        else:
            raise ValueError("Bitrix24 needs webhook_url, or oauth_token together with portal_url")
        self._secrets = [s for s in (oauth_token, *webhook_url.rstrip("/").split("/")[-1:]) if s]
        self.retry_waits = list(retry_waits)
        self.retry_wait_scale = retry_wait_scale
        self.timeout_sec = timeout_sec
        self._sleep = sleep  # retry waits; tests record them instead of sleeping
        self.stats = ClientStats()
        # Low-rate mode windows shrink with the waits, so tests stay fast by configuration.
        self.limiter = limiter or RateLimiter(
            requests_per_second,
            low_rate_window=60.0 * max(retry_wait_scale, 1e-3),
            low_rate_hold=300.0 * max(retry_wait_scale, 1e-3),
        )
        self._http = http_client or httpx.Client(timeout=httpx.Timeout(timeout_sec))
        install_log_masking("httpx", "httpcore")  # httpx logs each request URL at INFO

    def describe(self) -> str:
        return f"Bitrix24 at {mask_url(self._base)}"

    def close(self) -> None:
        self._http.close()

    def _mask(self, text: str) -> str:
        return mask_text(text, self._secrets)

    # -- REST --------------------------------------------------------------------------

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One REST method; returns the whole answer (`result`, `next`, `total`, `time`)."""
        return self._post(method, flatten_params(params or {}))

    def batch(
        self,
        commands: Mapping[str, str | tuple[str, Mapping[str, Any]]],
        *,
        halt: bool = False,
    ) -> BatchResult:
        """Up to 50 commands in one request; a command is `"method?query"` or
        `(method, params)`. Later commands may use `$result[name][index][FIELD]`."""
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch takes at most {MAX_BATCH} commands, got {len(commands)}")
        pairs = [("halt", "1" if halt else "0")]
        methods = []
        for name, command in commands.items():
            text = command if isinstance(command, str) else encode_command(*command)
            pairs.append((f"cmd[{name}]", text))
            methods.append(text.partition("?")[0])
        self.stats.count_commands(methods)
        inner = _as_dict(self._post("batch", pairs).get("result"))
        return BatchResult(
            result=_as_dict(inner.get("result")),
            result_error=_as_dict(inner.get("result_error")),
            result_total=_as_dict(inner.get("result_total")),
            result_next=_as_dict(inner.get("result_next")),
            result_time=_as_dict(inner.get("result_time")),
        )

    def list_calls(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every statistic row with CALL_START_DATE in [start, end), each once, in ID order."""
        return [row for rows in self.iter_call_batches(start, end) for row in rows]

    def iter_call_batches(self, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
        """The rows of `list_calls`, one `batch` request (up to 2,500 rows) at a time, so a
        long period is never held in memory whole.

        Keyset pagination (`SORT=ID`, `FILTER[>ID]=<last ID>`, `start=-1`: no deep offsets,
        no count) with up to 50 pages per `batch` request: page k's filter is
        `$result[p{k-1}][49][ID]`, the last ID of the page before it. The pages are read in
        order up to the first short page (< 50 rows), which ends the listing; the commands
        after it are ignored, whether the portal failed them (unresolvable reference) or
        ran them with an empty filter. A failed command after a full page is an error.
        0-49 rows and 50 x 50-1 rows take one request; 2,600 rows take two.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("list_calls needs aware datetimes (the portal compares instants)")
        if end <= start:
            return
        base = {
            "FILTER": {">=CALL_START_DATE": start.isoformat(), "<CALL_START_DATE": end.isoformat()},
            "SORT": "ID",
            "ORDER": "ASC",
            "start": -1,
        }
        last_id = 0
        while True:
            commands = {}
            for k in range(MAX_BATCH):
                floor = str(last_id) if k == 0 else f"$result[p{k - 1}][{PAGE_SIZE - 1}][ID]"
                params = {**base, "FILTER": {**base["FILTER"], ">ID": floor}}
                commands[f"p{k}"] = encode_command(STAT_METHOD, params)
            answer = self.batch(commands)
            rows: list[dict[str, Any]] = []
            for k in range(MAX_BATCH):
                page = self._page(answer, f"p{k}", last_id)
                rows.extend(page)
                if page:
                    last_id = int(page[-1]["ID"])
                if len(page) < PAGE_SIZE:
                    yield self._in_range(rows, start, end)
                    return
            yield self._in_range(rows, start, end)

    def _page(self, answer: BatchResult, name: str, after_id: int) -> list[dict[str, Any]]:
        if name in answer.result_error:
            error = answer.result_error[name]
            raise Bitrix24Error(
                f"{STAT_METHOD} page {name} failed inside batch: "
                f"{error.get('error')}: {error.get('error_description')}",
                method=STAT_METHOD,
                code=str(error.get("error") or "batch_command_failed")[:64],
            )
        page = answer.result.get(name)
        if not isinstance(page, list):
            raise Bitrix24Error(
                f"{STAT_METHOD} page {name} missing from the batch answer", method=STAT_METHOD
            )
        previous = after_id
        for row in page:
            try:
                stat_id = int(row["ID"])
            except (KeyError, TypeError, ValueError):
                raise Bitrix24Error(
                    f"{STAT_METHOD} row without a numeric ID in page {name}",
                    method=STAT_METHOD,
                    code="bad_row",
                ) from None
            # Keyset paging is only gap-free if the portal really sorted by ID ascending.
            if stat_id <= previous:
                raise Bitrix24Error(
                    f"{STAT_METHOD} paging out of order (ID {stat_id} after {previous}): "
                    "the portal ignored SORT=ID/FILTER[>ID]",
                    method=STAT_METHOD,
                    code="paging_inconsistent",
                )
            previous = stat_id
        return page

    @staticmethod
    def _in_range(
        rows: list[dict[str, Any]], start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        kept = []
        for row in rows:
            try:
                started = datetime.fromisoformat(str(row.get("CALL_START_DATE")))
            except ValueError:
                kept.append(row)  # call_from_row rejects it with a reason downstream
                continue
            if started.tzinfo is None or start <= started < end:
                kept.append(row)
        if len(kept) != len(rows):
            log.warning(
                "dropped %d statistic rows outside [%s, %s) the portal returned",
                len(rows) - len(kept),
                start.isoformat(),
                end.isoformat(),
            )
        return kept

    def _post(self, method: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        url = f"{self._base}{method}.json"
        body = urlencode(pairs + self._auth)

        def attempt() -> dict[str, Any]:
            self.limiter.acquire()
            self.stats.count_request(method)
            try:
                response = self._http.post(url, content=body, headers=_FORM)
            except httpx.UnsupportedProtocol as exc:
                raise Bitrix24Error(self._mask(f"{method}: bad portal URL: {exc}")) from None
            except httpx.TimeoutException as exc:
                raise _Transient(
                    f"timeout after {self.timeout_sec:g} s ({type(exc).__name__})", code="timeout"
                ) from None
            except httpx.TransportError as exc:
                raise _Transient(
                    self._mask(f"connection error: {type(exc).__name__}: {exc}"),
                    code="connect_error",
                ) from None
            return self._parse(method, response)

        return self._with_retries(method, url, attempt)

    def _parse(self, method: str, response: httpx.Response) -> dict[str, Any]:
        status, data = response.status_code, response.content
        retryable = status == 429 or status >= 500
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            kind = "HTML" if _looks_html(data) else "a non-JSON body"
            message = (
                f"portal answered {kind} instead of JSON (status {status}): "
                f"first bytes {_snippet(data)}"
            )
            if status in (401, 403):
                raise Bitrix24AuthError(
                    self._mask(f"{method}: HTTP {status}: {message}"), method=method, status=status
                )
            if retryable:  # a proxy's error page in front of a struggling portal
                raise _Transient(
                    self._mask(message),
                    code="html_response",
                    status=status,
                    retry_after=_retry_after(response),
                )
            raise Bitrix24Error(
                self._mask(f"{method}: {message}"),
                method=method,
                code="html_response",
                status=status,
            )
        error = payload.get("error")
        if error is None and status < 400:
            return payload
        code = str(error or f"http_{status}")
        description = str(payload.get("error_description") or "")
        hint = _AUTH_HINTS.get(code.lower())
        if status in (401, 403) or hint:
            hint = hint or (
                _AUTH_HINTS["insufficient_scope"] if status == 403 else _AUTH_HINTS["invalid_token"]
            )
            raise Bitrix24AuthError(
                self._mask(f"{hint} ({method}: {code}: {description}, HTTP {status})"),
                method=method,
                code=code[:64],
                status=status,
            )
        if status == 429 or code in _LIMIT_ERRORS:
            self.stats.add("limit_hits")
            self.limiter.note_limit_hit()
            log.warning("Bitrix24 limit hit on %s: HTTP %s %s", method, status, code)
            retryable = True
        if retryable:
            raise _Transient(
                self._mask(f"HTTP {status} {code}: {description}"),
                code=code[:64],
                status=status,
                retry_after=_retry_after(response),
            )
        raise Bitrix24Error(
            self._mask(f"{method}: {code}: {description} (HTTP {status})"),
            method=method,
            code=code[:64],
            status=status,
        )

    def _with_retries(self, what: str, url: str, attempt: Callable[[], T]) -> T:
        attempts = 0

        def counted() -> T:
            nonlocal attempts
            attempts += 1
            return attempt()

        def on_retry(number: int, exc: BaseException, delay: float) -> None:
            self.stats.add("retries")
            log.warning(
                "Bitrix24 %s attempt %d failed (%s); retrying in %.2f s [%s]",
                what,
                number,
                exc,
                delay,
                mask_url(url),
            )

        policy = retry_policy(
            self.retry_waits, scale=self.retry_wait_scale, on_retry=on_retry, sleep=self._sleep
        )
        try:
            return policy(counted)
        except _Transient as exc:
            raise Bitrix24Error(
                f"Bitrix24 {what} failed after {attempts} attempts: {exc} [{mask_url(url)}]",
                method=what,
                code=exc.code,
                status=exc.status,
                attempts=attempts,
            ) from exc
        except Bitrix24Error as exc:
            exc.attempts = attempts
            raise

    # -- recordings --------------------------------------------------------------------

    def download(self, url: str, sink: Sink) -> DownloadResult:
        """Stream a recording into `sink` (a callable taking chunks, or a binary file).

        Never holds the file in memory. A body shorter than its Content-Length is retried
        by the same policy; a retry re-reads the file from the start and skips the bytes
        the sink already has, after checking they are the same (sha256 of the prefix), so
        the sink needs no rewind. 404/410 -> `RecordingMissing`; HTML -> `Bitrix24Error`.
        Recordings come from the portal's file server: no REST rate limit applies.
        """
        write: Callable[[bytes], Any] = sink.write if hasattr(sink, "write") else sink  # type: ignore[union-attr,assignment]
        state = _Progress(hashlib.sha256())
        result = self._with_retries("download", url, lambda: self._download_once(url, write, state))
        log.debug("downloaded %d bytes from %s", result.bytes, mask_url(url))
        return result

    def _download_once(
        self, url: str, write: Callable[[bytes], Any], state: _Progress
    ) -> DownloadResult:
        self.stats.add("downloads")
        masked = mask_url(url)
        prefix_digest = state.hasher.copy().digest()
        prefix = hashlib.sha256()
        position = 0
        try:
            with self._http.stream("GET", url, follow_redirects=True) as response:
                status = response.status_code
                self._check_download_status(response, masked)
                content_type = response.headers.get("content-type", "")
                length = response.headers.get("content-length")
                expected = int(length) if length and length.isdigit() else None
                for chunk in response.iter_bytes():  # as received: a cut leaves less to redo
                    if position == 0 and _looks_html(chunk):
                        raise Bitrix24Error(
                            self._mask(
                                f"portal answered HTML instead of audio (status {status}): "
                                f"first bytes {_snippet(chunk)} [{masked}]"
                            ),
                            method="download",
                            code="html_response",
                            status=status,
                        )
                    if position < state.delivered:  # already in the sink from a failed attempt
                        take = min(len(chunk), state.delivered - position)
                        prefix.update(chunk[:take])
                        position += take
                        chunk = chunk[take:]
                        if position == state.delivered and prefix.digest() != prefix_digest:
                            raise Bitrix24Error(
                                f"recording changed between attempts [{masked}]",
                                method="download",
                                code="changed",
                            )
                    if chunk:
                        write(chunk)
                        state.hasher.update(chunk)
                        state.delivered += len(chunk)
                        position += len(chunk)
                        self.stats.add("download_bytes", len(chunk))
        except httpx.UnsupportedProtocol as exc:
            raise Bitrix24Error(
                self._mask(f"bad recording URL {masked}: {exc}"), method="download"
            ) from None
        except httpx.TimeoutException as exc:
            raise _Transient(
                f"download timed out after {position} bytes ({type(exc).__name__})", code="timeout"
            ) from None
        except httpx.TransportError as exc:
            raise _Transient(
                self._mask(
                    f"truncated download: connection closed after {position} bytes "
                    f"({type(exc).__name__}: {exc})"
                ),
                code="truncated",
            ) from None
        if expected is not None and position != expected:
            raise _Transient(
                f"truncated download: received {position} of {expected} bytes", code="truncated"
            )
        if position < state.delivered:
            raise _Transient(
                f"truncated download: {position} bytes, earlier attempt had {state.delivered}",
                code="truncated",
            )
        return DownloadResult(
            bytes=state.delivered, sha256=state.hasher.hexdigest(), content_type=content_type
        )

    def _check_download_status(self, response: httpx.Response, masked: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status in (404, 410):
            raise RecordingMissing(f"recording not found (HTTP {status}) [{masked}]", status=status)
        response.read()  # error bodies are small; the message shows their start
        detail = f"HTTP {status}: first bytes {_snippet(response.content)} [{masked}]"
        if status in (401, 403):
            raise Bitrix24AuthError(
                self._mask(f"recording download refused: {detail}"),
                method="download",
                code=f"http_{status}",
                status=status,
            )
        if status == 429 or status >= 500:
            if status == 429:
                self.stats.add("limit_hits")
            raise _Transient(
                self._mask(detail),
                code=f"http_{status}",
                status=status,
                retry_after=_retry_after(response),
            )
        raise Bitrix24Error(
            self._mask(f"recording download failed: {detail}"),
            method="download",
            code=f"http_{status}",
            status=status,
        )


@dataclass
class _Progress:
    hasher: Any  # hashlib sha256 of the bytes handed to the sink
    delivered: int = 0


class Bitrix24Resource(dg.ConfigurableResource):
    """Bitrix24 telephony access: a webhook URL, or an OAuth token with the portal URL."""

    webhook_url: str = ""  # https://portal/rest/<user_id>/<code>/ (secret: from dg.EnvVar)
    oauth_token: str = ""
    portal_url: str = ""  # with oauth_token: https://portal
    requests_per_second: float = 2.0
    retry_waits: list[float] = Field(default_factory=lambda: list(DEFAULT_RETRY_WAITS))
    retry_wait_scale: float = 1.0
    timeout_sec: float = 30.0

    _client: Bitrix24Client | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def get_client(self) -> Bitrix24Client:
        """The one client of this resource instance (shared by the asset's threads)."""
        with self._lock:
            if self._client is None:
                self._client = Bitrix24Client(
                    webhook_url=self.webhook_url,
                    oauth_token=self.oauth_token,
                    portal_url=self.portal_url,
                    requests_per_second=self.requests_per_second,
                    retry_waits=self.retry_waits,
                    retry_wait_scale=self.retry_wait_scale,
                    timeout_sec=self.timeout_sec,
                )
            return self._client

    @property
    def stats(self) -> ClientStats:
        return self.get_client().stats

    def list_calls(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self.get_client().list_calls(start, end)

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.get_client().call(method, params)

    def batch(
        self, commands: Mapping[str, str | tuple[str, Mapping[str, Any]]], *, halt: bool = False
    ) -> BatchResult:
        return self.get_client().batch(commands, halt=halt)

    def download(self, url: str, sink: Sink) -> DownloadResult:
        return self.get_client().download(url, sink)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
