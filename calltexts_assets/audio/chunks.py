"""Cutting a decoded recording into pieces the STT accepts: planned under the API limits,
cut in pauses, silent pieces flagged so that nobody pays for them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from calltexts_assets.audio.decode import (
    AudioError,
    AudioInfo,
    Pcm,
    mono_float,
)

SNAP_SECONDS = 5.0  # how far a cut may move back to land in a pause instead of a word
SILENCE_DBFS = -45.0  # a chunk whose loudest 50 ms stay below this holds no speech
SILENCE_STRIDE = 4  # loudness needs no full sample rate: every 4th sample is read
PAUSE_DBFS = -50.0  # quieter than this is a pause, whatever the rest of the window does


@dataclass(frozen=True)
class Chunk:
    path: Path
    start: float  # offset of the chunk in the source stream, seconds
    end: float
    silent: bool  # nothing above SILENCE_DBFS: not worth an STT request


def plan_chunks(
    info: AudioInfo,
    max_bytes: int,
    max_seconds: float,
    *,
    bytes_per_sec: float | None = None,
    slack_sec: float = SNAP_SECONDS,
) -> list[tuple[float, float]]:
    """Equal spans covering the audio, each under both limits once written out.

    `bytes_per_sec` is the rate of the written chunks (default: the source's own rate).
    Spans are `slack_sec` shorter than the limit allows, so `export_chunks` may move a
    cut back into a pause without pushing the next chunk over the limit.
    """
    duration = info.duration_sec
    if duration <= 0:
        return []
    rate = bytes_per_sec or info.size_bytes / duration
    fits = info.size_bytes <= max_bytes if bytes_per_sec is None else rate * duration <= max_bytes
    if fits and duration <= max_seconds:
        return [(0.0, duration)]
    limit_sec = min(max_seconds, 0.98 * max_bytes / rate) - slack_sec  # 2 %: container overhead
    if limit_sec <= slack_sec:
        raise AudioError(f"limits too small to chunk: {max_bytes} bytes at {rate:.0f} B/s")
    count = math.ceil(duration / limit_sec)
    edges = [duration * i / count for i in range(count + 1)]
    return list(itertools.pairwise(edges))


def _frame_rms(x: np.ndarray, frame: int) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.sqrt(np.mean(np.square(x), keepdims=True)) if len(x) else np.zeros(1)
    return np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1))


def snap_to_pause(ints: np.ndarray, sample_rate: int, cut: float, window_sec: float) -> float:
    """Move `cut` back (by at most `window_sec`) into the middle of the longest pause there.

    The longest pause is the likeliest turn boundary; among equals the latest wins, which
    keeps chunks near their planned length.
    """
    frame = max(1, sample_rate // 100)
    lo = max(0, int((cut - window_sec) * sample_rate))
    hi = min(len(ints), int(cut * sample_rate))
    if hi - lo < frame * 10:
        return cut
    rms = _frame_rms(mono_float(ints[lo:hi]), frame)
    quiet = rms <= max(10 ** (PAUSE_DBFS / 20), 2 * float(np.min(rms)))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
    starts, ends = edges[::2], edges[1::2]
    lengths = ends - starts
    best = len(lengths) - 1 - int(np.argmax(lengths[::-1]))
    return (lo + (starts[best] + ends[best]) * frame / 2) / sample_rate


def is_silent(x: np.ndarray, sample_rate: int, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """Loudest 50 ms below the threshold: a mean over the whole chunk would hide one word."""
    if len(x) == 0:
        return True
    peak = float(np.max(_frame_rms(x, max(1, sample_rate // 20))))
    return peak <= 10 ** (threshold_dbfs / 20)


def chunk_bytes_per_sec(sample_rate: int, channels: int) -> float:
    """Bytes per second of a chunk: 16-bit PCM (WAV; its 44-byte header is in plan_chunks'
    2 % margin)."""
    return 2.0 * sample_rate * channels


def export_chunks(
    pcm: Pcm,
    spans: Sequence[tuple[float, float]],
    out_dir: str | Path,
    *,
    stem: str = "chunk",
    snap_sec: float = SNAP_SECONDS,
) -> list[Chunk]:
    """Write each span of a mono or stereo recording as 16-bit WAV into `out_dir`.

    WAV is what every Whisper server reads (whisper.cpp's server without ffmpeg reads only
    WAV); it is lossless, so the STT hears the recording's own samples, not a second lossy
    generation; and it costs no encoding. FLAC would halve the upload of speech for ~10 ms
    CPU per channel-minute on each side; a LAME re-encode cost ~15x that.
    Inner cuts move back to the nearest pause (within `snap_sec`) so no word is split in
    two; `plan_chunks` left room for that. Silent chunks are written but flagged.
    """
    out_dir = Path(out_dir)
    ints, rate = pcm.samples, pcm.rate
    cuts = [spans[0][0]] if spans else []
    for _, end in spans[:-1]:
        cuts.append(snap_to_pause(ints, rate, end, snap_sec) if snap_sec > 0 else end)
    if spans:
        cuts.append(spans[-1][1])
    chunks: list[Chunk] = []
    for i, (start, end) in enumerate(itertools.pairwise(cuts)):
        a, b = round(start * rate), round(end * rate)
        path = out_dir / f"{stem}_{i:03d}.wav"
        soundfile.write(path, ints[a:b], rate, format="WAV", subtype="PCM_16")
        silent = is_silent(mono_float(ints[a:b:SILENCE_STRIDE]), rate // SILENCE_STRIDE)
        chunks.append(Chunk(path, a / rate, b / rate, silent))
    return chunks
