"""What the transcription and chat clients share: the connection, the openai client,
retries and stats.

The SDK's own retries are off (`max_retries=0`): the spec fixes the retry waits
(10/30/60 s), and one policy (calltexts_assets.limits.retrying) applies them everywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx

if TYPE_CHECKING:
    import openai

from calltexts_assets.limits.retrying import RetryableError, retry_policy
from calltexts_assets.limits.run_errors import RunWideError
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.runlog.masking import mask_text, mask_url

log = scrubbed_logger(__name__)
T = TypeVar("T")

# The statuses the OpenAI SDK itself would retry: timeouts, lock conflicts, rate limits, 5xx.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A 429 about money, not pace: retrying does not restore access (docs/specs/stt_wire.md §4.2,
# help.openai.com/en/articles/5955604). `type` is `insufficient_quota`; `code` is that too on
# older answers, or names the limit hit.
QUOTA_CODES = frozenset({
    "insufficient_quota", "credit_balance_exhausted", "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded", "organization_usage_limit_exceeded",
})  # fmt: skip
_QUOTA_SUFFIXES = ("_spend_limit_exceeded", "_usage_limit_exceeded")


class OpenAIApiError(Exception):
    """A request that failed for good: a non-retryable status, or retries exhausted."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        attempts: int = 1,
        api_code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code  # the HTTP status as text, or "timeout" / "connection"
        self.message = message
        self.attempts = attempts
        self.api_code = api_code  # the body's error.code ("unsupported_value", ...)
        self.param = param  # the body's error.param ("response_format", ...)


class QuotaExhausted(OpenAIApiError, RunWideError):
    """Billing (429 insufficient_quota and its kin): no call can succeed until someone adds
    credit or raises a limit, so the stage stops at once, nothing retried."""


@dataclass
class ApiStats:
    """Counters of one resource instance; shared by the threads that use it."""

    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    failures: int = 0  # calls that ended in OpenAIApiError
    by_outcome: dict[str, int] = field(default_factory=dict)  # "200", "429", "timeout"...
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, outcome: str, *, retry: bool = False, failure: bool = False) -> None:
        with self._lock:
            self.requests += 1
            self.retries += int(retry)
            self.failures += int(failure)
            self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            data = asdict(self)
        data.pop("_lock", None)
        return data


class _SecretScrubber(logging.Filter):
    """Masks known secrets in records of the HTTP stack's own loggers.

    The openai SDK logs failed requests with their exception at DEBUG, and an exception
    text may carry the proxy URL; our own messages are scrubbed before they are logged.
    """

    LOGGERS = ("openai", "openai._base_client", "httpx", "httpcore", "httpcore.proxy")

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg, record.args = mask_text(record.getMessage(), self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text, self.secrets)
        return True


_scrubber = _SecretScrubber()
for _name in _SecretScrubber.LOGGERS:
    logging.getLogger(_name).addFilter(_scrubber)


class _Retryable(RetryableError):
    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}", retry_after=retry_after)
        self.code = code
        self.message = message


class UnusableAnswer(_Retryable):
    """A 200 whose body is not what was asked for (a proxy's page, a body cut off on the
    way): retried as a 5xx is, then the call's error under `code`."""


def _retry_after(response: httpx.Response | None) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value else None
    except ValueError:  # an HTTP date: rare from OpenAI, and the planned wait still applies
        return None


def _error_fields(exc: openai.APIStatusError) -> dict[str, str | None]:
    """message / type / code / param of the body's error object. Compatible servers differ:
    speaches answers `{"detail": ...}`, LocalAI an integer code, whisper.cpp a string."""
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, str):
        return {"message": error, "type": None, "code": None, "param": None}
    if not isinstance(error, dict):
        return {"message": exc.message, "type": None, "code": None, "param": None}
    fields = {key: error.get(key) for key in ("message", "type", "code", "param")}
    text = {key: str(value) if value not in (None, "") else None for key, value in fields.items()}
    text["message"] = text["message"] or (
        str(error["detail"]) if error.get("detail") else exc.message
    )
    return text


def is_quota_error(status: int, error_type: str | None, error_code: str | None) -> bool:
    code = error_code or ""
    return status == 429 and (
        error_type == "insufficient_quota" or code in QUOTA_CODES or code.endswith(_QUOTA_SUFFIXES)
    )


def classify(exc: Exception) -> Exception:
    """Map an SDK exception to a retryable error or a final OpenAIApiError."""
    import openai  # loaded already: only a request through the SDK raises what is mapped here

    if isinstance(exc, openai.APITimeoutError):
        return _Retryable("timeout", "the request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return _Retryable("connection", f"{type(cause).__name__}: {cause}")
    if isinstance(exc, openai.APIStatusError):
        fields = _error_fields(exc)
        code, message = str(exc.status_code), fields["message"] or exc.message
        details = {"api_code": fields["code"], "param": fields["param"]}
        if is_quota_error(exc.status_code, fields["type"], fields["code"]):
            return QuotaExhausted(code, message, **details)
        if exc.status_code in RETRYABLE_STATUSES or exc.status_code >= 500:
            return _Retryable(code, message, _retry_after(exc.response))
        return OpenAIApiError(code, message, **details)
    return exc


@dataclass(frozen=True)
class OpenAIConnection:
    """Where and how to reach an OpenAI-compatible server."""

    api_key: str = ""
    base_url: str = "https://api.openai.com/v1"
    timeout_sec: float = 120.0
    proxy_url: str = ""  # CHATGPT_PROXY_URL; may hold credentials
    retry_waits: tuple[float, ...] = (10.0, 30.0, 60.0)
    retry_wait_scale: float = 1.0

    def secrets(self) -> list[str]:
        found = [self.proxy_url, self.api_key]
        if self.proxy_url:
            parsed = httpx.URL(self.proxy_url)
            found += [parsed.password or "", parsed.username or ""]
        return [s for s in found if s]


class OpenAIService:
    """The openai client of one service (transcription, chat) and its retrying call."""

    def __init__(self, connection: OpenAIConnection) -> None:
        self.connection = connection
        self.stats = ApiStats()
        self._client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()

    @property
    def service_name(self) -> str:
        return type(self).__name__

    def client(self) -> openai.OpenAI:
        """One client per service object (connection pool shared by threads)."""
        conn = self.connection
        with self._client_lock:
            if self._client is None:
                # Here, not at the top: a run with no call to transcribe or summarise needs
                # no SDK (0.4-0.7 s of import; a no-op re-run, issue #26).
                import openai

                self._no_key_check()
                _scrubber.secrets.update(conn.secrets())
                # openai 3.x types `http_client` as httpx2's but sends through an httpx
                # client it is given ("legacy client", openai_models.md §6): the one proxy
                # setting and the one mocking tool then cover every service.
                http_client = httpx.Client(
                    proxy=conn.proxy_url or None, timeout=conn.timeout_sec, trust_env=False
                )
                self._client = openai.OpenAI(
                    api_key=conn.api_key or "sandbox-no-key",
                    base_url=conn.base_url,
                    max_retries=0,
                    timeout=conn.timeout_sec,
                    http_client=cast(Any, http_client),
                )
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _no_key_check(self) -> None:
        if not self.connection.api_key and "api.openai.com" in self.connection.base_url:
            raise OpenAIApiError("config", "no API key is set (OPENAI_API_KEY)")

    def model_list(self) -> Any | None:
        """`GET /v1/models` as decoded JSON, one attempt; None when the server has no such
        list or does not answer it (the caller then knows nothing, and refuses nothing).

        Sent with httpx as the SDK sends it (the same client settings: proxy, timeout, no
        environment proxies; `Authorization: Bearer`, openai_models.md §1), not through the
        SDK: every run asks for the list, and one that has nothing to transcribe should not
        import the SDK for it (issue #26)."""
        conn = self.connection
        try:
            self._no_key_check()  # no key: no request
            _scrubber.secrets.update(conn.secrets())
            with httpx.Client(
                proxy=conn.proxy_url or None, timeout=conn.timeout_sec, trust_env=False
            ) as http:
                response = http.get(
                    f"{conn.base_url.rstrip('/')}/models",
                    headers={"Authorization": f"Bearer {conn.api_key or 'sandbox-no-key'}"},
                )
                response.raise_for_status()
                return response.json()  # not in `stats`: those count the service's work
        except (httpx.HTTPError, OpenAIApiError, ValueError) as exc:
            log.warning("%s: no model list (%s)", self.describe(), self.scrub(str(exc)))
            return None

    def scrub(self, text: str) -> str:
        """Text safe for logs and errors: no proxy credentials, no API key."""
        return mask_text(text, self.connection.secrets())

    def describe(self) -> str:
        proxy = self.connection.proxy_url
        via = f" via proxy {mask_url(proxy)}" if proxy else ""
        return f"{self.service_name} at {self.connection.base_url}{via}"

    def call_with_retry(
        self,
        what: str,
        request: Callable[[], T],
        *,
        error: type[OpenAIApiError] = OpenAIApiError,
    ) -> tuple[T, int]:
        """Run `request` under the retry policy; returns (result, attempts).

        Raises `error` (an OpenAIApiError) for a non-retryable status or once the retries
        are spent; its message never holds the proxy credentials or the API key.
        """
        attempts = 0
        waits = self.connection.retry_waits

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            log.warning(
                "%s: %s failed on attempt %d (%s); retrying in %.1f s",
                self.service_name, what, attempt, self.scrub(str(exc)), delay,
            )  # fmt: skip

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            retry = attempts > 1
            import openai  # every request here goes through the SDK (`client()`) anyway

            try:
                result = request()
            except openai.OpenAIError as exc:
                mapped = classify(exc)
                code = getattr(mapped, "code", type(exc).__name__)
                final = isinstance(mapped, OpenAIApiError) or attempts > len(waits)
                self.stats.count(code, retry=retry, failure=final)
                raise mapped from None  # the SDK's chain may repeat the proxy URL
            except UnusableAnswer as exc:
                self.stats.count(exc.code, retry=retry, failure=attempts > len(waits))
                raise
            self.stats.count("200", retry=retry)
            return result

        policy = retry_policy(waits, scale=self.connection.retry_wait_scale, on_retry=on_retry)
        try:
            return policy(attempt), attempts
        except QuotaExhausted as exc:
            kind = exc.api_code or "insufficient_quota"
            message = (
                f"the account is out of quota ({exc.code} {kind}, {self.describe()}): "
                f"{self.scrub(exc.message)} Add credit or raise the spend limit, then re-run."
            )
            raise QuotaExhausted(exc.code, message, attempts=attempts, api_code=kind) from None
        except OpenAIApiError as exc:
            message = f"{what} rejected ({self.describe()}): {self.scrub(exc.message)}"
            raise error(
                exc.code, message, attempts=attempts, api_code=exc.api_code, param=exc.param
            ) from None
        except _Retryable as exc:
            message = (
                f"{what} failed after {attempts} attempts ({self.describe()}); "
                f"last error: {self.scrub(exc.message)}"
            )
            raise error(exc.code, message, attempts=attempts) from None
