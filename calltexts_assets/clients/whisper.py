"""Speech-to-text through the OpenAI transcription API (or a compatible server)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calltexts_assets.clients.openai_base import OpenAIApiError, OpenAIConnection, OpenAIService
from calltexts_assets.core.audio_format import content_type

MAX_FILE_BYTES = 25 * 1024 * 1024  # the API's limit per file
MAX_CHUNK_SECONDS = 15 * 60
# Only whisper-1 answers verbose_json (segments with times); the gpt-4o models give text.
VERBOSE_MODELS = frozenset({"whisper-1"})


class TranscriptionError(OpenAIApiError):
    """The file could not be transcribed (rejected, or retries exhausted)."""


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SttResult:
    language: str
    duration: float
    text: str
    segments: tuple[Segment, ...]
    attempts: int = 1  # HTTP requests spent, retries included
    model: str = ""


class WhisperClient(OpenAIService):
    """One file in, text with segment times out. Splitting happens in `transcripts/`; the
    limits it splits by live here because they are the API's."""

    def __init__(
        self,
        connection: OpenAIConnection,
        *,
        model: str = "whisper-1",
        language: str = "",  # ISO-639-1 hint ("ru"); empty: let the model detect it
        max_file_bytes: int = MAX_FILE_BYTES,
        max_chunk_seconds: float = MAX_CHUNK_SECONDS,
    ) -> None:
        super().__init__(connection)
        self.model = model
        self.language = language
        self.max_file_bytes = max_file_bytes
        self.max_chunk_seconds = max_chunk_seconds

    def transcribe_file(self, path: str | Path, duration_sec: float | None = None) -> SttResult:
        """`duration_sec`: the file's length, for servers that do not report it."""
        path = Path(path)
        size = path.stat().st_size
        if size > self.max_file_bytes:  # the API would answer 413 after a long upload
            raise TranscriptionError(
                "413", f"{path.name} is {size} bytes, over the {self.max_file_bytes} limit"
            )
        verbose = self.model in VERBOSE_MODELS
        options: dict[str, Any] = {
            "model": self.model,
            "response_format": "verbose_json" if verbose else "json",
        }
        if verbose:
            options["timestamp_granularities"] = ["segment"]
        if self.language:
            options["language"] = self.language

        # The server reads the format from the part's file name: name and type say the truth
        # (the stored recording's extension is its sniffed format).
        kind = content_type(path.suffix)

        def request() -> Any:
            with path.open("rb") as audio:  # reopened per attempt: a retry re-sends it all
                return self.client().audio.transcriptions.create(
                    file=(path.name, audio, kind), **options
                )

        response, attempts = self.call_with_retry(
            f"transcription of {path.name}", request, error=TranscriptionError
        )
        return self._result(response, attempts, duration_sec)

    def _result(self, response: Any, attempts: int, duration_sec: float | None) -> SttResult:
        text = (getattr(response, "text", "") or "").strip()
        raw_segments = getattr(response, "segments", None)
        duration = getattr(response, "duration", None)
        if duration is None:
            duration = duration_sec or 0.0
        if raw_segments is None:  # plain json: one segment spanning the file
            segments = (Segment(0.0, float(duration), text),) if text else ()
        else:
            segments = tuple(
                Segment(float(s.start), float(s.end), s.text.strip())
                for s in raw_segments
                if s.text.strip()
            )
        language = getattr(response, "language", None) or self.language
        return SttResult(
            language=language,
            duration=float(duration),
            text=text,
            segments=segments,
            attempts=attempts,
            model=self.model,
        )
