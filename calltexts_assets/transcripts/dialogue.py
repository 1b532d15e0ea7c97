"""One call's recording -> a dialogue transcript.

Stereo recordings are split by channel (Bitrix24: left = operator, right = client) and each
channel transcribed on its own, so every line has its speaker; channels (and files) over
the API limits are cut into chunks at pauses and the segments shifted back by the chunk's
offset; the two channels are then interleaved by time. Mono has one speaker label.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from calltexts_assets.audio import chunks
from calltexts_assets.audio import decode as audio
from calltexts_assets.clients.whisper import SttResult

MONO_ROLE = "speaker"
WORKING_RATE = 16_000  # Whisper resamples to 16 kHz anyway; decoding to it saves memory
# Decoding is CPU-bound and a 20-minute stereo call takes ~80 MB as PCM: more decodes at once
# than cores gain nothing, and the bound keeps peak memory independent of the concurrency.
_DECODE_SLOTS = threading.BoundedSemaphore(os.cpu_count() or 2)
# A long call's PCM and its working copies take up to a few hundred MB: one such decode at a
# time, so that peak memory does not depend on how many long calls a period has in flight at
# once. 16 MiB of PCM: over ~8 min mono or ~4 min stereo at 16 kHz, ~3 % of calls.
LARGE_DECODE_BYTES = 16 * 2**20
_LARGE_DECODE = threading.Lock()


@contextmanager
def decode_slot(info: audio.AudioInfo) -> Iterator[None]:
    """Hold while decoding the recording `info` describes (PCM at WORKING_RATE)."""
    pcm_bytes = info.duration_sec * min(info.sample_rate, WORKING_RATE) * info.channels * 2
    with _LARGE_DECODE if pcm_bytes > LARGE_DECODE_BYTES else nullcontext(), _DECODE_SLOTS:
        yield


class SpeechToText(Protocol):
    """What transcription needs of WhisperResource (tests may pass a stand-in)."""

    model: str
    language: str
    max_file_bytes: int
    max_chunk_seconds: float

    def transcribe_file(self, path: str | Path, duration_sec: float | None = None) -> SttResult: ...


class RequestsInFlight:
    """A SpeechToText that has at most `limit` requests in flight at once. Given more workers
    than that, the others decode their next call meanwhile, so that the STT is never left
    waiting on a decode while the concurrency setting still bounds what it is sent."""

    def __init__(self, stt: SpeechToText, limit: int) -> None:
        self._stt = stt
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self.model = stt.model
        self.language = stt.language
        self.max_file_bytes = stt.max_file_bytes
        self.max_chunk_seconds = stt.max_chunk_seconds

    def transcribe_file(self, path: str | Path, duration_sec: float | None = None) -> SttResult:
        with self._slots:
            return self._stt.transcribe_file(path, duration_sec)


@dataclass(frozen=True)
class DialogueLine:
    start: float  # seconds from the start of the recording
    speaker: str  # role key: "operator", "client" or "speaker"
    text: str
    end: float = 0.0


@dataclass(frozen=True)
class Transcript:
    language: str
    duration_sec: float
    lines: tuple[DialogueLine, ...]
    model: str
    requests: int  # STT requests spent on the call, retries included
    chunks: int = 0  # files sent (silent chunks are not sent)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def words(self, speaker: str | None = None) -> list[str]:
        return [
            w for line in self.lines if speaker in (None, line.speaker) for w in line.text.split()
        ]


@dataclass
class _Tally:
    requests: int = 0
    chunks: int = 0
    languages: Counter[str] = field(default_factory=Counter)

    def add(self, result: SttResult) -> None:
        self.requests += result.attempts
        self.chunks += 1
        if result.language and result.segments:
            self.languages[result.language] += len(result.segments)


# MP3 encoder padding and Bitrix24's whole seconds make small differences normal; a recording
# that decodes to much less than its header announces is damaged (zeroed or cut frames).
_LENGTH_TOLERANCE = 0.9
_LENGTH_SLACK_SEC = 1.0


def check_decoded_length(decoded_sec: float, header_sec: float) -> None:
    """Raise AudioError when the audio is much shorter than its header says."""
    if decoded_sec < header_sec * _LENGTH_TOLERANCE - _LENGTH_SLACK_SEC:
        raise audio.AudioError(
            f"corrupt recording: its frames decode to {decoded_sec:.1f} s of the "
            f"{header_sec:.1f} s its header announces"
        )


def _lines(result: SttResult, offset: float, speaker: str) -> list[DialogueLine]:
    return [
        DialogueLine(round(s.start + offset, 3), speaker, s.text, round(s.end + offset, 3))
        for s in result.segments
    ]


def _write_chunks(
    pcm: audio.Pcm, speaker: str, whisper: SpeechToText, workdir: Path
) -> list[chunks.Chunk]:
    """One decoded stream cut by the API limits into WAV files."""
    info = audio.AudioInfo(pcm.duration_sec, pcm.channels, pcm.rate, 0)
    spans = chunks.plan_chunks(
        info,
        whisper.max_file_bytes,
        whisper.max_chunk_seconds,
        bytes_per_sec=chunks.chunk_bytes_per_sec(pcm.rate, pcm.channels),
    )
    return chunks.export_chunks(pcm, spans, workdir, stem=speaker)


def _decode_to_chunks(
    path: Path,
    info: audio.AudioInfo,
    whisper: SpeechToText,
    workdir: Path,
    *,
    stereo_roles: Sequence[str],
    mono_role: str,
    split_stereo: bool,
) -> list[tuple[str, chunks.Chunk]]:
    """(speaker, chunk) for every chunk of the call, stereo split by channel."""
    with decode_slot(info):
        decoded = audio.load(path, max_rate=WORKING_RATE)
        check_decoded_length(decoded.duration_sec, info.duration_sec)
        if decoded.channels >= 2 and split_stereo and not audio.channels_identical(decoded):
            streams = [(role, decoded.channel(c)) for c, role in enumerate(stereo_roles[:2])]
        else:
            # Dual-mono "stereo" would transcribe every word twice: treat it as mono.
            streams = [(mono_role, decoded.downmix() if decoded.channels > 1 else decoded)]
        return [
            (speaker, chunk)
            for speaker, pcm in streams
            for chunk in _write_chunks(pcm, speaker, whisper, workdir)
        ]


def transcribe_call(
    audio_path: str | Path,
    whisper: SpeechToText,
    *,
    stereo_roles: Sequence[str] = ("operator", "client"),
    mono_role: str = MONO_ROLE,
    split_stereo: bool = True,
    workdir: str | Path | None = None,
) -> Transcript:
    """Transcribe one recording; raises TranscriptionError / AudioError on failure."""
    path = Path(audio_path)
    info = audio.probe(path)
    tally = _Tally()
    lines: list[DialogueLine] = []
    fits = info.size_bytes <= whisper.max_file_bytes
    if (
        (info.channels == 1 or not split_stereo)
        and fits
        and info.duration_sec <= (whisper.max_chunk_seconds)
    ):
        # The common short mono call: send the file as it is, no decode.
        result = whisper.transcribe_file(path, info.duration_sec)
        if result.duration:  # the STT decoded the file: it must have found all of it
            check_decoded_length(result.duration, info.duration_sec)
        tally.add(result)
        lines = _lines(result, 0.0, mono_role)
    else:
        with tempfile.TemporaryDirectory(prefix="calltexts-chunks-", dir=workdir) as tmp:
            pieces = _decode_to_chunks(
                path,
                info,
                whisper,
                Path(tmp),
                stereo_roles=stereo_roles,
                mono_role=mono_role,
                split_stereo=split_stereo,
            )
            for speaker, chunk in pieces:
                if chunk.silent:  # a muted side of the line: nothing to pay for
                    continue
                result = whisper.transcribe_file(chunk.path, chunk.end - chunk.start)
                tally.add(result)
                lines += _lines(result, chunk.start, speaker)
    order = {speaker: i for i, speaker in enumerate((*stereo_roles, mono_role))}
    lines.sort(key=lambda line: (line.start, order.get(line.speaker, len(order))))
    language = tally.languages.most_common(1)[0][0] if tally.languages else ""
    return Transcript(
        language=language,
        duration_sec=info.duration_sec,
        lines=tuple(lines),
        model=whisper.model,
        requests=tally.requests,
        chunks=tally.chunks,
    )
