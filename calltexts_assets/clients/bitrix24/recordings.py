"""Recording downloads: streamed into a sink, resumed after a cut, checked end to end."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from calltexts_assets.clients.bitrix24.errors import (
    Bitrix24AuthError,
    Bitrix24Error,
    RecordingMissing,
    TransientError,
)
from calltexts_assets.clients.bitrix24.wire import (
    ClientStats,
    DownloadResult,
    Sink,
    looks_html,
    retry_after_seconds,
    snippet,
)
from calltexts_assets.core.masking import mask_url
from calltexts_assets.core.runlog import scrubbed_logger

log = scrubbed_logger(__name__)
T = TypeVar("T")


class RecordingsMixin:
    """Part of `Bitrix24Client`: recording downloads over its connection pool and retries."""

    _http: httpx.Client
    stats: ClientStats

    def _mask(self, text: str) -> str: ...

    def _with_retries(self, what: str, url: str, attempt: Callable[[], T]) -> T: ...

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

    def _check_download_status(self, response: httpx.Response, masked: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status in (404, 410):
            raise RecordingMissing(f"recording not found (HTTP {status}) [{masked}]", status=status)
        response.read()  # error bodies are small; the message shows their start
        detail = f"HTTP {status}: first bytes {snippet(response.content)} [{masked}]"
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
