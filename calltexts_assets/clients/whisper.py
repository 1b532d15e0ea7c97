"""Speech-to-text through the OpenAI transcription API (or a compatible server).

One file in, one `SttResult` out. What to ask for comes from the model's profile
(`stt_models.py`): whisper-1 and unknown models `verbose_json` with word and segment times,
the gpt-4o family `json`, the diarizing model `diarized_json`. A server that refuses
`verbose_json` is asked for `json` instead, once for the client's lifetime. The answer is
read as JSON whatever the server (`stt_response.py`), not through the SDK's types.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

from calltexts_assets.clients.openai_base import (
    OpenAIApiError,
    OpenAIConnection,
    OpenAIService,
    QuotaExhausted,
    UnusableAnswer,
)
from calltexts_assets.clients.stt_models import (
    DIARIZED,
    JSON,
    SLOWEST_SEC_PER_AUDIO_SEC,
    VERBOSE,
    model_profile,
)
from calltexts_assets.clients.stt_response import (
    BadAnswer,
    Segment,
    SttResult,
    Word,
    check_answer,
    parse_transcription,
)
from calltexts_assets.files.recording_formats import content_type
from calltexts_assets.runlog.log import scrubbed_logger

__all__ = ["Segment", "SttResult", "TranscriptionError", "WhisperClient", "Word"]

log = scrubbed_logger(__name__)
_FORMAT_PARAMS = ("response_format", "timestamp_granularities")
# A 200 that is not the transcription asked for: the call's error, never its text.
BAD_ANSWER = "stt_bad_answer"


class TranscriptionError(OpenAIApiError):
    """The file could not be transcribed (rejected, or retries exhausted)."""


def _refuses_format(exc: OpenAIApiError) -> bool:
    """A 400/422 about the response format or the timestamps (OpenAI names the param;
    other servers only say it in the message)."""
    if exc.code not in ("400", "422"):
        return False
    if exc.param and exc.param.split("[")[0] in _FORMAT_PARAMS:
        return True
    text = exc.message.lower()
    return any(word in text for word in (*_FORMAT_PARAMS, VERBOSE))


class WhisperClient(OpenAIService):
    """Transcribes one file per call. Splitting happens in `audio/` and `transcripts/`; the
    limits it splits by live here because they are the model's."""

    def __init__(
        self,
        connection: OpenAIConnection,
        *,
        model: str = "whisper-1",
        language: str = "",  # ISO-639-1 hint ("ru"); empty: let the model detect it
        keywords: tuple[str, ...] = (),  # gpt-transcribe's literal terms (settings-checked)
        max_file_bytes: int | None = None,  # None: the model's own limits
        max_request_sec: float | None = None,
    ) -> None:
        super().__init__(connection)
        self.model = model
        self.language = language
        self.keywords = keywords
        self.profile = model_profile(model)
        self.max_file_bytes = max_file_bytes or self.profile.max_file_bytes
        self.max_request_sec = max_request_sec or self.profile.max_request_sec
        self._format = self.profile.response_format
        self._format_lock = threading.Lock()
        # Once the account is out of money no request can succeed: the calls still in the
        # workers stop without sending theirs.
        self._out_of_quota: QuotaExhausted | None = None

    @property
    def response_format(self) -> str:
        return self._format

    @property
    def timestamps(self) -> bool:
        """Whether answers carry times (verbose_json or diarized_json), as far as known."""
        return self._format != JSON

    @property
    def diarizes(self) -> bool:
        return self._format == DIARIZED

    def _options(self, response_format: str, prompt: str) -> dict[str, Any]:
        options: dict[str, Any] = {"model": self.model, "response_format": response_format}
        if response_format == VERBOSE:
            options["timestamp_granularities"] = ["word", "segment"]
        if response_format == DIARIZED:
            options["chunking_strategy"] = "auto"  # required over 30 s (§3.3)
        if self.profile.language_list:  # never both fields (openai_models.md §3)
            if self.language:
                options["languages"] = [self.language]
            if self.keywords:
                options["keywords"] = list(self.keywords)
        elif self.language:
            options["language"] = self.language
        if prompt and self.profile.takes_prompt:
            options["prompt"] = prompt
        return options

    def _send(
        self, path: Path, response_format: str, duration_sec: float | None, prompt: str = ""
    ) -> tuple[Any, int]:
        options = self._options(response_format, prompt)
        # A long piece takes the STT long: its timeout grows with the audio it carries.
        options["timeout"] = self.connection.timeout_sec + SLOWEST_SEC_PER_AUDIO_SEC * (
            duration_sec or 0.0
        )

        # The server reads the format from the part's file name: name and type say the truth
        # (a stored recording's extension is its sniffed format).
        kind = content_type(path.suffix)

        def request() -> Any:
            # Reopened per attempt (a retry re-sends it all); an open file is streamed by
            # httpx from disk, never read into memory whole.
            with path.open("rb") as audio:
                raw = self.client().audio.transcriptions.with_raw_response.create(
                    file=(path.name, audio, kind), **options
                )
            answer = raw.http_response
            try:  # JSON whatever the content type (OpenAI's own types are not always right)
                return check_answer(answer.json(), response_format, openai_model=self.profile.known)
            except (json.JSONDecodeError, UnicodeDecodeError, BadAnswer) as exc:
                kind_answered = answer.headers.get("content-type", "no content type")
                raise UnusableAnswer(
                    BAD_ANSWER,
                    f"the answer is not the {response_format} asked for ({kind_answered}, "
                    f"{len(answer.content)} bytes): {exc}",
                ) from None

        return self.call_with_retry(
            f"transcription of {path.name}", request, error=TranscriptionError
        )

    def transcribe_file(
        self, path: str | Path, duration_sec: float | None = None, *, prompt: str = ""
    ) -> SttResult:
        """`duration_sec`: the file's length, for servers that do not report it; `prompt`:
        text that comes before the audio (the call so far), to continue it."""
        path = Path(path)
        size = path.stat().st_size
        if size > self.max_file_bytes:  # the API would answer 413 after a long upload
            raise TranscriptionError(
                "413", f"{path.name} is {size} bytes, over the {self.max_file_bytes} limit"
            )
        if self._out_of_quota is not None:
            raise self._out_of_quota
        try:
            body, attempts, response_format = self._send_asking_for_json_if_refused(
                path, duration_sec, prompt
            )
        except QuotaExhausted as exc:
            self._out_of_quota = exc
            raise
        result = parse_transcription(body, duration_hint=duration_sec)
        return dataclasses.replace(
            result,
            attempts=attempts,
            model=self.model,
            response_format=response_format,
            body=body,
        )

    def _send_asking_for_json_if_refused(
        self, path: Path, duration_sec: float | None, prompt: str
    ) -> tuple[Any, int, str]:
        """(body, requests spent, format answered). A server that refuses the format asked
        for is asked for json, from then on."""
        response_format = self._format
        try:
            body, attempts = self._send(path, response_format, duration_sec, prompt)
        except TranscriptionError as exc:
            if response_format == JSON or not _refuses_format(exc):
                raise
            with self._format_lock:
                self._format = JSON
            log.warning(
                "%s refuses %s for %s (%s): asking for json from now on, without times",
                self.describe(), response_format, self.model, self.scrub(exc.message),
            )  # fmt: skip
            body, attempts = self._send(path, JSON, duration_sec, prompt)
            return body, attempts + exc.attempts, JSON
        return body, attempts, response_format
