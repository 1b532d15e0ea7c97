"""The Bitrix24 REST client: authentication, pacing, retries and error mapping.

Everything that reaches a log line or an exception goes through `masking`: the webhook code
and the OAuth token never leave this package in clear.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx

from calltexts_assets.clients.bitrix24.directory import DirectoryMixin
from calltexts_assets.clients.bitrix24.errors import (
    Bitrix24AuthError,
    Bitrix24Error,
    MethodBlocked,
    TransientError,
    auth_hint,
)
from calltexts_assets.clients.bitrix24.limits import (
    BUCKET_SEC,
    LONGEST_BLOCK_SEC,
    OPERATION_TIME_LIMIT,
    OperatingBudget,
)
from calltexts_assets.clients.bitrix24.links import LinksMixin
from calltexts_assets.clients.bitrix24.oauth import OAuthSession
from calltexts_assets.clients.bitrix24.recordings import (
    DEFAULT_DOWNLOAD_DEADLINE_SEC,
    DEFAULT_MAX_RECORDING_BYTES,
    RecordingsMixin,
)
from calltexts_assets.clients.bitrix24.targets import (
    RecordingTargets,
    Resolver,
    resolve_addresses,
)
from calltexts_assets.clients.bitrix24.telephony import TelephonyMixin
from calltexts_assets.clients.bitrix24.wire import (
    DEFAULT_RETRY_WAITS,
    MAX_BATCH,
    BatchResult,
    ClientStats,
    as_dict,
    encode_command,
    flatten_params,
    looks_html,
    retry_after_seconds,
    snippet,
)
from calltexts_assets.limits.ratelimit import LOW_RATE_WINDOW_SEC, RateLimiter
from calltexts_assets.limits.retrying import retry_policy
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.runlog.masking import install_log_masking, mask_text, mask_url

log = scrubbed_logger(__name__)

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
T = TypeVar("T")


class Bitrix24Client(TelephonyMixin, LinksMixin, RecordingsMixin, DirectoryMixin):
    """Thread-safe client: one httpx connection pool, one rate limiter, one `stats`."""

    def __init__(
        self,
        *,
        webhook_url: str = "",
        oauth_token: str = "",
        portal_url: str = "",
        requests_per_second: float = 2.0,
        pace_downloads: bool = True,
        retry_waits: Sequence[float] = DEFAULT_RETRY_WAITS,
        retry_wait_scale: float = 1.0,
        timeout_sec: float = 30.0,
        limiter: RateLimiter | None = None,
        budget: OperatingBudget | None = None,
        oauth: OAuthSession | None = None,
        recording_hosts: Sequence[str] = (),  # besides the portal (settings: .voximplant.com)
        recording_networks: Sequence[str] = (),  # private networks trusted for recordings
        allow_private_addresses: bool = False,
        max_recording_bytes: int = DEFAULT_MAX_RECORDING_BYTES,
        download_deadline_sec: float = DEFAULT_DOWNLOAD_DEADLINE_SEC,
        resolve: Resolver = resolve_addresses,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._oauth = oauth  # refreshes the token; without it a token is used as given
        if webhook_url:
            self._base = webhook_url.rstrip("/") + "/"
            self._auth: list[tuple[str, str]] = []
        elif (oauth_token or oauth) and portal_url:
            self._base = portal_url.rstrip("/") + "/rest/"
            self._auth = [("auth", oauth_token)]
        else:
            raise ValueError("Bitrix24 needs webhook_url, or oauth_token together with portal_url")
        self._secrets = [s for s in (oauth_token, *webhook_url.rstrip("/").split("/")[-1:]) if s]
        parts = urlsplit(self._base)
        self.portal_origin = f"{parts.scheme}://{parts.netloc}"
        # Recordings come from the portal (Drive files) or the hosts its telephony uses.
        self.targets = RecordingTargets(
            [parts.hostname or "", *recording_hosts],
            networks=recording_networks,
            allow_private=allow_private_addresses,
            resolve=resolve,
        )
        self.max_recording_bytes = max_recording_bytes
        # Drive downloads (the portal's /rest/ path) take a token of the rate limiter: the
        # conservative answer where the docs are silent (docs/specs/bitrix24_downloads.md).
        self.pace_downloads = pace_downloads
        self.download_deadline_sec = download_deadline_sec
        self.retry_waits = list(retry_waits)
        self.retry_wait_scale = retry_wait_scale
        self.timeout_sec = timeout_sec
        self._sleep = sleep  # retry waits; tests record them instead of sleeping
        self.stats = ClientStats()
        # Low-rate mode windows shrink with the waits, so tests stay fast by configuration.
        self.limiter = limiter or RateLimiter(
            requests_per_second,
            low_rate_window=LOW_RATE_WINDOW_SEC * max(retry_wait_scale, 1e-3),
            low_rate_hold=LOW_RATE_WINDOW_SEC * max(retry_wait_scale, 1e-3),
        )
        # Waits for an announced reset are the portal's facts; only the guess is scaled.
        self.budget = budget or OperatingBudget(bucket_sec=BUCKET_SEC * retry_wait_scale)
        self._http = http_client or httpx.Client(timeout=httpx.Timeout(timeout_sec))
        install_log_masking("httpx", "httpcore")  # httpx logs each request URL at INFO

    @property
    def token_refreshes(self) -> int:
        """OAuth refreshes this client made (before expiry or after `expired_token`)."""
        return self._oauth.refreshes if self._oauth else 0

    def describe(self) -> str:
        return f"Bitrix24 at {mask_url(self._base)}"

    def close(self) -> None:
        self._http.close()

    def _mask(self, text: str) -> str:
        extra = self._oauth.secrets() if self._oauth else []
        return mask_text(text, [*self._secrets, *extra])

    def _pause(self, seconds: float) -> None:
        (self._sleep or time.sleep)(seconds)

    # -- REST --------------------------------------------------------------------------

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One REST method; returns the whole answer (`result`, `next`, `total`, `time`)."""
        return self._post(method, flatten_params(params or {}), [method])

    def batch(
        self,
        commands: Mapping[str, str | tuple[str, Mapping[str, Any]]],
        *,
        halt: bool = False,
        retry_blocked: bool = True,
    ) -> BatchResult:
        """Up to 50 commands in one request; a command is `"method?query"` or
        `(method, params)`. Later commands may use `$result[name][index][FIELD]`.

        The portal answers 200 whatever the commands did: failures are in `result_error`.
        A command failed for a missing scope stops everything (`Bitrix24AuthError` naming
        the scope). Commands refused with OPERATION_TIME_LIMIT are sent again, alone,
        after the method's reset, unless `retry_blocked` is off (commands that refer to
        one another cannot be sent apart: the caller decides).
        """
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch takes at most {MAX_BATCH} commands, got {len(commands)}")
        texts = {
            name: command if isinstance(command, str) else encode_command(*command)
            for name, command in commands.items()
        }
        merged = self._batch_once(texts, halt)
        waited = 0.0
        while retry_blocked and (blocked := merged.blocked()):
            methods = {_method_of(texts[name]) for name in blocked}
            waited = self.wait_blocked(methods, waited)
            again = self._batch_once({name: texts[name] for name in blocked}, halt)
            merged = merged.merged_with(again)
        return merged

    def _batch_once(self, texts: Mapping[str, str], halt: bool) -> BatchResult:
        pairs = [("halt", "1" if halt else "0")]
        pairs += [(f"cmd[{name}]", text) for name, text in texts.items()]
        methods = [_method_of(text) for text in texts.values()]
        self.stats.count_commands(methods)
        inner = as_dict(self._post("batch", pairs, ["batch", *methods]).get("result"))
        answer = BatchResult(
            result=as_dict(inner.get("result")),
            result_error=as_dict(inner.get("result_error")),
            result_total=as_dict(inner.get("result_total")),
            result_next=as_dict(inner.get("result_next")),
            result_time=as_dict(inner.get("result_time")),
        )
        for name, block in answer.result_time.items():
            if name in texts:
                self.budget.note(_method_of(texts[name]), block)
        for name, error in answer.result_error.items():
            code = str(as_dict(error).get("error") or "")
            if code.lower() == "insufficient_scope":
                method = _method_of(texts.get(name, ""))
                raise Bitrix24AuthError(
                    self._mask(f"{auth_hint(code, method)} (inside batch, command {name})"),
                    method=method,
                    code=code,
                )
            if code == OPERATION_TIME_LIMIT:
                self.stats.add("blocked")
        return answer

    def wait_blocked(self, methods: set[str], waited: float) -> float:
        """Wait for the reset of methods refused with OPERATION_TIME_LIMIT; returns the
        time waited so far, or fails once they have been blocked longer than the portal
        ever blocks a method (10 minutes)."""
        wait = max(self.budget.wait_after_block(m) for m in methods)
        if waited + wait > LONGEST_BLOCK_SEC:
            raise Bitrix24Error(
                f"{', '.join(sorted(methods))} refused with {OPERATION_TIME_LIMIT} for "
                f"{waited:.0f} s: the portal's running-time limit of the method is spent "
                "(other integrations on the same webhook or application?)",
                method=",".join(sorted(methods)),
                code=OPERATION_TIME_LIMIT,
            )
        log.warning(
            "Bitrix24 %s blocked (%s): waiting %.1f s for its reset",
            ", ".join(sorted(methods)),
            OPERATION_TIME_LIMIT,
            wait,
        )
        self.stats.add_wait(wait)
        self._pause(wait)
        self.budget.waited(methods)
        return waited + wait

    def _post(
        self, method: str, pairs: list[tuple[str, str]], methods: list[str]
    ) -> dict[str, Any]:
        url = f"{self._base}{method}.json"

        def attempt() -> dict[str, Any]:
            waited, renewed = 0.0, False
            while True:
                ahead = self.budget.wait_before(methods)
                if ahead:  # slow down before the portal refuses the method
                    log.info("Bitrix24 %s near its running-time limit: %.1f s pause", method, ahead)
                    self.stats.add_wait(ahead)
                    self._pause(ahead)
                    self.budget.waited(methods)
                token = self._oauth.token() if self._oauth else None
                try:
                    return self._send(method, url, pairs, token)
                except MethodBlocked:
                    waited = self.wait_blocked({method}, waited)
                except Bitrix24AuthError as exc:
                    if self._oauth is None or token is None or renewed:
                        raise
                    if exc.code.lower() != "expired_token":
                        raise
                    self._oauth.refresh(token)  # the hour is over: a new token, once
                    renewed = True

        return self._with_retries(method, url, attempt)

    def _send(
        self, method: str, url: str, pairs: list[tuple[str, str]], token: str | None
    ) -> dict[str, Any]:
        body = urlencode(pairs + ([("auth", token)] if token else self._auth))
        self.limiter.acquire()
        self.stats.count_request(method)
        try:
            response = self._http.post(url, content=body, headers=_FORM)
        except httpx.UnsupportedProtocol as exc:
            raise Bitrix24Error(self._mask(f"{method}: bad portal URL: {exc}")) from None
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"timeout after {self.timeout_sec:g} s ({type(exc).__name__})", code="timeout"
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(
                self._mask(f"connection error: {type(exc).__name__}: {exc}"),
                code="connect_error",
            ) from None
        payload = self._parse(method, response)
        self.budget.note(method, payload.get("time"))
        return payload

    def _parse(self, method: str, response: httpx.Response) -> dict[str, Any]:
        status, data = response.status_code, response.content
        retryable = status == 429 or status >= 500
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            kind = "HTML" if looks_html(data) else "a non-JSON body"
            message = (
                f"portal answered {kind} instead of JSON (status {status}): "
                f"first bytes {snippet(data)}"
            )
            if status in (401, 403):
                raise Bitrix24AuthError(
                    self._mask(f"{method}: HTTP {status}: {message}"), method=method, status=status
                )
            if retryable:  # a proxy's error page in front of a struggling portal
                raise TransientError(
                    self._mask(message),
                    code="html_response",
                    status=status,
                    retry_after=retry_after_seconds(response),
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
        if code == OPERATION_TIME_LIMIT:
            self.stats.add("blocked")
            raise MethodBlocked(
                self._mask(f"HTTP {status} {code}: {description}"), code=code, status=status
            )
        hint = auth_hint(code, method)
        if status in (401, 403) or hint:
            hint = hint or auth_hint("invalid_token" if status == 401 else "access_denied", method)
            raise Bitrix24AuthError(
                self._mask(f"{hint} ({method}: {code}: {description}, HTTP {status})"),
                method=method,
                code=code[:64],
                status=status,
            )
        if status == 429 or code == "QUERY_LIMIT_EXCEEDED":
            self.stats.add("limit_hits")
            self.limiter.note_limit_hit()
            log.warning("Bitrix24 limit hit on %s: HTTP %s %s", method, status, code)
            retryable = True
        if retryable:
            raise TransientError(
                self._mask(f"HTTP {status} {code}: {description}"),
                code=code[:64],
                status=status,
                retry_after=retry_after_seconds(response),
            )
        raise Bitrix24Error(
            self._mask(f"{method}: {code}: {description} (HTTP {status})"),
            method=method,
            code=code[:64],
            status=status,
        )

    def _with_retries(
        self, what: str, url: str, attempt: Callable[[], T], *, deadline: float | None = None
    ) -> T:
        """`attempt` under the retry policy; with a `deadline` (monotonic time) no wait
        goes past it, so the attempt after the wait can tell the time is up."""
        attempts = 0
        sleep = self._sleep
        if deadline is not None:
            pause = self._pause

            def sleep(seconds: float) -> None:
                pause(max(0.0, min(seconds, deadline - time.monotonic())))

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
                self._mask(url),  # the literal secrets too: a code need not look like one
            )

        policy = retry_policy(
            self.retry_waits, scale=self.retry_wait_scale, on_retry=on_retry, sleep=sleep
        )
        try:
            return policy(counted)
        except TransientError as exc:
            raise Bitrix24Error(
                f"Bitrix24 {what} failed after {attempts} attempts: {exc} [{self._mask(url)}]",
                method=what,
                code=exc.code,
                status=exc.status,
                attempts=attempts,
            ) from exc
        except Bitrix24Error as exc:
            exc.attempts = attempts
            raise


def _method_of(command: str) -> str:
    return command.partition("?")[0].strip().lower().removesuffix(".json")
