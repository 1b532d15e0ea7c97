"""One call's recording -> a dialogue transcript.

Stereo recordings are split by channel (Bitrix24: left = operator, right = client) and each
channel transcribed on its own, so every line has its speaker; channels (and files) over
the API limits are cut into chunks at pauses and the segments shifted back by the chunk's
offset; the two channels are then interleaved by time. Mono has one speaker label.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydub import AudioSegment

from calltexts_assets import audio
from calltexts_assets.resources.whisper import SttResult

MONO_ROLE = "speaker"
WORKING_RATE = 16_000  # Whisper resamples to 16 kHz anyway; decoding to it saves memory
CHUNK_BITRATE = "64k"  # mono chunks: 8 KB/s, 7.2 MB for 15 minutes


class SpeechToText(Protocol):
    """What transcription needs of WhisperResource (tests may pass a stand-in)."""

    model: str
    language: str
    max_file_bytes: int
    max_chunk_seconds: float

    def transcribe_file(self, path: str | Path) -> SttResult: ...


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


def _transcribe_stream(
    segment: AudioSegment,
    speaker: str,
    whisper: SpeechToText,
    workdir: Path,
    tally: _Tally,
    bitrate: str,
) -> list[DialogueLine]:
    """Chunk one decoded stream by the API limits and transcribe the chunks with speech."""
    info = audio.AudioInfo(segment.duration_seconds, segment.channels, segment.frame_rate, 0)
    spans = audio.plan_chunks(
        info,
        whisper.max_file_bytes,
        whisper.max_chunk_seconds,
        bytes_per_sec=audio.bitrate_bytes_per_sec(bitrate) * segment.channels,
    )
    chunks = audio.export_chunks(segment, spans, workdir, stem=speaker, bitrate=bitrate)
    lines: list[DialogueLine] = []
    for chunk in chunks:
        if chunk.silent:  # a muted side of the line: nothing to pay for
            continue
        result = whisper.transcribe_file(chunk.path)
        tally.add(result)
        lines += _lines(result, chunk.start, speaker)
    return lines


def transcribe_call(
    audio_path: str | Path,
    whisper: SpeechToText,
    *,
    stereo_roles: Sequence[str] = ("operator", "client"),
    mono_role: str = MONO_ROLE,
    split_stereo: bool = True,
    chunk_bitrate: str = CHUNK_BITRATE,
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
        result = whisper.transcribe_file(path)
        if result.duration:  # the STT decoded the file: it must have found all of it
            check_decoded_length(result.duration, info.duration_sec)
        tally.add(result)
        lines = _lines(result, 0.0, mono_role)
    else:
        with tempfile.TemporaryDirectory(prefix="calltexts-chunks-", dir=workdir) as tmp:
            decoded = audio.load(path, sample_rate=min(info.sample_rate, WORKING_RATE))
            check_decoded_length(decoded.duration_seconds, info.duration_sec)
            if decoded.channels >= 2 and split_stereo and not audio.channels_identical(decoded):
                left, right = audio.split_channels(decoded)[:2]
                streams = list(zip(stereo_roles, (left, right), strict=True))
            else:
                # Dual-mono "stereo" would transcribe every word twice: treat it as mono.
                streams = [(mono_role, decoded.set_channels(1))]
            for speaker, stream in streams:
                lines += _transcribe_stream(
                    stream, speaker, whisper, Path(tmp), tally, chunk_bitrate
                )
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
