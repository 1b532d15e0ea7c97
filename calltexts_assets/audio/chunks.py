"""A recording as the pieces an STT accepts: the original file when it fits the model's
limits; else pieces cut in pauses, the MP3 at frame boundaries (bytes copied, no second
lossy generation), any other format re-encoded as FLAC. Silent pieces are flagged so that
nobody pays for them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calltexts_assets.audio.decode import FLAC_RATE, AudioError, AudioInfo, encode_flac_piece
from calltexts_assets.audio.envelope import Envelope
from calltexts_assets.audio.mp3_cut import cut_mp3
from calltexts_assets.audio.mp3_frames import Mp3FrameError

SNAP_SECONDS = 5.0  # how far a cut may move back to land in a pause instead of a word
# 16 kHz mono 16-bit: FLAC of speech is about half of it, never more.
FLAC_BYTES_PER_SEC = 2.0 * FLAC_RATE


@dataclass(frozen=True)
class Limits:
    """What one STT request may carry."""

    max_bytes: int
    max_seconds: float


@dataclass(frozen=True)
class Piece:
    path: Path
    offset: float  # seconds of the recording at the piece's first decoded sample
    start: float  # where the piece's own audio starts (a cut), >= offset
    end: float
    silent: bool  # no speech above the floor: not worth a request
    channel: int | None = None  # the one channel it carries (per-channel mode)
    part: int = 1  # 1-based, of `parts` pieces of the recording (or of the channel)
    parts: int = 1
    # Speech stretches joined into one file (STT_SEND=speech): (second in the file, start and
    # end in the recording) of each; empty for a piece that is one stretch of the recording.
    joins: tuple[tuple[float, float, float], ...] = ()

    def to_recording(self, t: float) -> float:
        """A time of the piece's file as the recording's second."""
        if not self.joins:
            return t + self.offset
        at, start, end = self.joins[0]
        for at_next, start_next, end_next in self.joins[1:]:
            if t < at_next:
                break
            at, start, end = at_next, start_next, end_next
        return start + min(max(t - at, 0.0), end - start)

    @property
    def label(self) -> str:
        """ "" for a recording sent whole, "/2" for its second piece (speaker labels of a
        diarizing model start over in each piece)."""
        return "" if self.parts == 1 else f"/{self.part}"

    @property
    def duration(self) -> float:
        """The audio the STT hears (and bills), lead-in frames of a cut MP3 included."""
        return self.end - self.offset


def fits(info: AudioInfo, limits: Limits) -> bool:
    return info.size_bytes <= limits.max_bytes and info.duration_sec <= limits.max_seconds


def plan_cuts(
    duration: float,
    bytes_per_sec: float,
    limits: Limits,
    *,
    slack_sec: float = SNAP_SECONDS,
) -> list[float]:
    """Inner cut times dividing `duration` into equal spans under both limits.

    Spans are `slack_sec` shorter than the limits allow, so that a cut may move back into a
    pause without pushing the next piece over them.
    """
    if duration <= 0 or (
        duration * bytes_per_sec <= limits.max_bytes and duration <= limits.max_seconds
    ):
        return []
    # 2 %: container overhead and a VBR stretch denser than the average.
    limit_sec = min(limits.max_seconds, 0.98 * limits.max_bytes / bytes_per_sec) - slack_sec
    if limit_sec <= slack_sec:
        raise AudioError(
            f"limits too small to cut: {limits.max_bytes} bytes at {bytes_per_sec:.0f} B/s"
        )
    count = math.ceil(duration / limit_sec)
    return [duration * i / count for i in range(1, count)]


def _spans(cuts: Sequence[float], duration: float) -> list[tuple[float, float]]:
    return list(itertools.pairwise([0.0, *cuts, duration]))


def _is_silent(envelope: Envelope, start: float, end: float, channel: int | None) -> bool:
    speech = envelope.speech(start, end)
    return not bool(speech[channel] if channel is not None else speech.any())


def _mp3_pieces(
    path: Path, info: AudioInfo, envelope: Envelope, limits: Limits, out_dir: Path, stem: str
) -> list[Piece]:
    """The MP3 cut at frame boundaries in pauses (Mp3FrameError: it is no MP3 we can cut)."""
    duration = envelope.duration_sec or info.duration_sec
    planned = plan_cuts(duration, info.size_bytes / max(duration, 1e-9), limits)
    cuts = [envelope.pause_near(c, SNAP_SECONDS) for c in planned]
    cut = cut_mp3(path, cuts, out_dir, max_bytes=limits.max_bytes, stem=stem)
    return [
        Piece(
            p.path,
            p.offset,
            p.start,
            p.end,
            _is_silent(envelope, p.start, p.end, None),
            part=i,
            parts=len(cut),
        )
        for i, p in enumerate(cut, start=1)
    ]


def _flac_pieces(
    path: Path, envelope: Envelope, limits: Limits, out_dir: Path, stem: str, channel: int | None
) -> list[Piece]:
    """Spans cut in pauses, each encoded as FLAC (of one channel, or mixed down)."""
    cuts = [
        envelope.pause_near(c, SNAP_SECONDS)
        for c in plan_cuts(envelope.duration_sec, FLAC_BYTES_PER_SEC, limits)
    ]
    spans = _spans(cuts, envelope.duration_sec)
    pieces: list[Piece] = []
    for i, (start, end) in enumerate(spans, start=1):
        silent = _is_silent(envelope, start, end, channel)
        out = out_dir / f"{stem}_{i:03d}.flac"
        if not silent:  # a silent span is never sent: no need to encode it
            encode_flac_piece(path, out, start=start, duration=end - start, channel=channel)
        pieces.append(Piece(out, start, start, end, silent, channel, part=i, parts=len(spans)))
    return pieces


def cut_recording(
    path: Path,
    info: AudioInfo,
    envelope: Envelope,
    limits: Limits,
    out_dir: Path,
    *,
    channel: int | None = None,
    stem: str = "piece",
) -> list[Piece]:
    """The pieces to send for one recording (or for one of its channels): the file itself
    when it fits, else the MP3 cut by frames, else FLAC."""
    if channel is None and fits(info, limits):
        # The file as it is: its length is the headers' (what the service bills), not the
        # decoder's sample count, which counts an MP3's padding on some library versions.
        return [Piece(path, 0.0, 0.0, info.duration_sec, envelope.silent())]
    if channel is None:
        try:
            return _mp3_pieces(path, info, envelope, limits, out_dir, stem)
        except Mp3FrameError:
            pass  # not an MP3 we can cut by frames: re-encoded below
    return _flac_pieces(path, envelope, limits, out_dir, stem, channel)
