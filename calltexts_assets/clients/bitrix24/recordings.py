"""Recording downloads: streamed into a sink, resumed after a cut, checked end to end, and
bounded: allowed hosts on public addresses only, each redirect checked, a size cap and a
deadline for the whole download."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx

from calltexts_assets.clients.bitrix24.errors import (
    Bitrix24Error,
    DownloadDeadline,
    RecordingMissing,
    RecordingRefused,
    RecordingTooLarge,
    TransientError,
)
from calltexts_assets.clients.bitrix24.targets import RecordingTargets
from calltexts_assets.clients.bitrix24.wire import (
    ClientStats,
    DownloadResult,
    Sink,
    looks_html,
    retry_after_seconds,
    snippet,
)
from calltexts_assets.limits.ratelimit import RateLimiter
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.runlog.masking import mask_url

log = scrubbed_logger(__name__)
T = TypeVar("T")

MAX_REDIRECTS = 5
DEFAULT_MAX_RECORDING_BYTES = 1024 * 2**20
DEFAULT_DOWNLOAD_DEADLINE_SEC = 600.0
# The docs ask downloads to look like a named integration (without them the cloud may
# answer an nginx 404 page): docs/specs/bitrix24_wire.md §2 "Downloading".
USER_AGENT = "calltexts/0.1 (Bitrix24 call export)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class RecordingsMixin:
    """Part of `Bitrix24Client`: recording downloads over its connection pool and retries."""

    _http: httpx.Client
    stats: ClientStats
    limiter: RateLimiter
    timeout_sec: float
    targets: RecordingTargets
    portal_origin: str
    max_recording_bytes: int
    download_deadline_sec: float
    pace_downloads: bool

    def _mask(self, text: str) -> str: ...

    def _with_retries(
        self, what: str, url: str, attempt: Callable[[], T], *, deadline: float | None = None
    ) -> T: ...

    def download(self, url: str, sink: Sink) -> DownloadResult:
        """Stream a recording into `sink` (a callable taking chunks, or a binary file).

        Never holds the file in memory. A body shorter than its Content-Length is retried
        by the same policy; a retry re-reads the file from the start and skips the bytes
        the sink already has, after checking they are the same (sha256 of the prefix), so
        the sink needs no rewind. 404/410 -> `RecordingMissing`; 401/403, a host or an
        address not allowed -> `RecordingRefused` (another link may work); over the size
        cap -> `RecordingTooLarge`; past the deadline -> `DownloadDeadline`; HTML ->
        `Bitrix24Error`.
        """
        write: Callable[[bytes], Any] = sink.write if hasattr(sink, "write") else sink  # type: ignore[union-attr,assignment]
        state = _Progress(hashlib.sha256())
        deadline = time.monotonic() + self.download_deadline_sec
        result = self._with_retries(
            "download",
            url,
            lambda: self._download_once(url, write, state, deadline),
            deadline=deadline,
        )
        log.debug("downloaded %d bytes from %s", result.bytes, mask_url(url))
        return result

    def _past_deadline(self, deadline: float, position: int, masked: str) -> None:
        if time.monotonic() >= deadline:
            raise DownloadDeadline(
                f"download not finished after {self.download_deadline_sec:g} s "
                f"(CALLTEXTS_DOWNLOAD_DEADLINE_SEC), {position} bytes received [{masked}]",
                method="download",
                code="deadline",
            )

    def _too_large(self, size: int, masked: str) -> RecordingTooLarge:
        cap = self.max_recording_bytes
        return RecordingTooLarge(
            f"recording of {size} bytes or more is over the {cap // 2**20} MB cap "
            f"(CALLTEXTS_MAX_RECORDING_MB) [{masked}]",
            method="download",
            code="too_large",
        )

    def _download_once(
        self, url: str, write: Callable[[bytes], Any], state: _Progress, deadline: float
    ) -> DownloadResult:
        masked = mask_url(url)
        self._past_deadline(deadline, state.delivered, masked)
        self.stats.add("downloads")
        prefix_digest = state.hasher.copy().digest()
        prefix = hashlib.sha256()
        position = 0
        try:
            response = self._open(url, deadline)
            try:
                status = response.status_code
                self._check_download_status(response, masked)
                content_type = response.headers.get("content-type", "")
                length = response.headers.get("content-length")
                expected = int(length) if length and length.isdigit() else None
                if expected is not None and expected > self.max_recording_bytes:
                    raise self._too_large(expected, masked)  # before a byte of it is read
                for chunk in response.iter_bytes():  # as received: a cut leaves less to redo
                    if position == 0 and looks_html(chunk):
                        raise Bitrix24Error(
                            self._mask(
                                f"portal answered HTML instead of audio (status {status}): "
                                f"first bytes {snippet(chunk)} [{masked}]"
                            ),
                            method="download",
                            code="html_response",
                            status=status,
                        )
                    if position + len(chunk) > self.max_recording_bytes:
                        raise self._too_large(position + len(chunk), masked)
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
                    self._past_deadline(deadline, position, masked)
            finally:
                response.close()
        except httpx.UnsupportedProtocol as exc:
            raise Bitrix24Error(
                self._mask(f"bad recording URL {masked}: {exc}"), method="download"
            ) from None
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"download timed out after {position} bytes ({type(exc).__name__})", code="timeout"
            ) from None
        except httpx.TransportError as exc:
            raise TransientError(
                self._mask(
                    f"truncated download: connection closed after {position} bytes "
                    f"({type(exc).__name__}: {exc})"
                ),
                code="truncated",
            ) from None
        if expected is not None and position != expected:
            raise TransientError(
                f"truncated download: received {position} of {expected} bytes", code="truncated"
            )
        if position < state.delivered:
            raise TransientError(
                f"truncated download: {position} bytes, earlier attempt had {state.delivered}",
                code="truncated",
            )
        return DownloadResult(
            bytes=state.delivered, sha256=state.hasher.hexdigest(), content_type=content_type
        )

    def _open(self, url: str, deadline: float) -> httpx.Response:
        """The response to GET `url`, redirects followed by hand: each hop is checked like
        the link itself, so a redirect cannot lead a download where a link may not."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            self.targets.check(current)
            if self._is_portal_rest(current):  # the portal's download method is REST
                if self.pace_downloads:
                    self.limiter.acquire()
                self.stats.add("rest_downloads")
            remaining = max(deadline - time.monotonic(), 0.001)
            request = self._http.build_request(
                "GET",
                current,
                headers=self._download_headers(current),
                timeout=httpx.Timeout(min(self.timeout_sec, remaining)),
            )
            response = self._http.send(request, stream=True, follow_redirects=False)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            response.close()
            current = urljoin(current, location)
        raise RecordingRefused(
            f"more than {MAX_REDIRECTS} redirects [{mask_url(url)}]",
            method="download",
            code="too_many_redirects",
        )

    def _is_portal_rest(self, url: str) -> bool:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" == self.portal_origin and parts.path.startswith(
            "/rest/"
        )

    def _download_headers(self, url: str) -> dict[str, str]:
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "audio/*, */*;q=0.8",
            "Accept-Language": "ru, en;q=0.8",
        }
        if url.startswith(self.portal_origin + "/"):
            headers["Referer"] = self.portal_origin + "/"
        return headers

    def _check_download_status(self, response: httpx.Response, masked: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status in (404, 410):
            raise RecordingMissing(f"recording not found (HTTP {status}) [{masked}]", status=status)
        response.read()  # error bodies are small; the message shows their start
        detail = f"HTTP {status}: first bytes {snippet(response.content)} [{masked}]"
        if status in (401, 403):
            # The recording's host, not the REST API: a stale token in the link, a storage
            # gateway's own rules. Another link may work; the run goes on.
            raise RecordingRefused(
                self._mask(f"recording link refused: {detail}"),
                method="download",
                code=f"http_{status}",
                status=status,
            )
        if status == 429 or status >= 500:
            if status == 429:
                self.stats.add("limit_hits")
            raise TransientError(
                self._mask(detail),
                code=f"http_{status}",
                status=status,
                retry_after=retry_after_seconds(response),
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
