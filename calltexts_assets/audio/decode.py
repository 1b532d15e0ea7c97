"""Audio tooling: find ffmpeg, read headers, decode, split by channel and by size/duration.

Headers are read by libsndfile, else mutagen, never with ffprobe (the imageio-ffmpeg wheel
ships none), and audio is decoded only when a split or a channel separation needs the samples; then
in-process by libsndfile where it can, since an ffmpeg process per call and per chunk
cost more CPU than the decoding itself.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mutagen
import numpy as np
import soundfile

MAX_FILE_BYTES = 25 * 1024 * 1024  # the Whisper API limit per file
MAX_CHUNK_SECONDS = 15 * 60
SNAP_SECONDS = 5.0  # how far a cut may move back to land in a pause instead of a word
SILENCE_DBFS = -45.0  # a chunk whose loudest 50 ms stay below this holds no speech
SILENCE_STRIDE = 4  # loudness needs no full sample rate: every 4th sample is read
PAUSE_DBFS = -50.0  # quieter than this is a pause, whatever the rest of the window does


class AudioError(ValueError):
    """The file is not audio we can read (no header, ffmpeg cannot decode it)."""


@dataclass(frozen=True)
class AudioInfo:
    duration_sec: float
    channels: int
    sample_rate: int
    size_bytes: int


@dataclass(frozen=True)
class Chunk:
    path: Path
    start: float  # offset of the chunk in the source stream, seconds
    end: float
    silent: bool  # nothing above SILENCE_DBFS: not worth an STT request


@functools.cache
def ffmpeg_exe() -> str:
    """A system ffmpeg on PATH when present, else the static binary of imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: Sequence[str], data: bytes | None = None) -> bytes:
    """Run our ffmpeg quietly on `data` (stdin); its stdout, or AudioError with its stderr."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    proc = subprocess.run(cmd, input=data, capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc.stdout


_FFMPEG_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_FFMPEG_STREAM = re.compile(r"Audio: [^,]+, (\d+) Hz, (mono|stereo|(\d+) channels)")


def _probe_with_ffmpeg(path: Path) -> AudioInfo:
    """Fallback for containers mutagen does not know: `ffmpeg -i` prints the header facts."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    duration, stream = _FFMPEG_DURATION.search(proc.stderr), _FFMPEG_STREAM.search(proc.stderr)
    if not duration or not stream:
        raise AudioError(f"not a readable audio file: {path.name}")
    h, m, s = duration.groups()
    layout = stream.group(2)
    channels = 1 if layout == "mono" else 2 if layout == "stereo" else int(stream.group(3))
    return AudioInfo(
        duration_sec=int(h) * 3600 + int(m) * 60 + float(s),
        channels=channels,
        sample_rate=int(stream.group(1)),
        size_bytes=path.stat().st_size,
    )


def probe(path: str | Path) -> AudioInfo:
    """Duration, channels and sample rate from the file's headers (no decode)."""
    path = Path(path)
    # libsndfile counts MP3 frames exactly, minus the encoder's delay and padding (mutagen is
    # ~0.08 s long on LAME files), in C; mutagen knows more containers (m4a).
    try:
        sf_info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        sf_info = None
    if sf_info is not None and sf_info.frames > 0 and sf_info.samplerate and sf_info.channels:
        return AudioInfo(
            sf_info.frames / sf_info.samplerate,
            int(sf_info.channels),
            int(sf_info.samplerate),
            path.stat().st_size,
        )
    try:
        parsed = mutagen.File(path)
    except mutagen.MutagenError:
        parsed = None
    info = getattr(parsed, "info", None)
    length = getattr(info, "length", None)
    channels = getattr(info, "channels", None)
    rate = getattr(info, "sample_rate", None)
    if not (length and channels and rate):
        return _probe_with_ffmpeg(path)
    return AudioInfo(float(length), int(channels), int(rate), path.stat().st_size)


@dataclass(frozen=True)
class Pcm:
    """Decoded audio: int16 samples shaped (n, channels) and their rate."""

    samples: np.ndarray
    rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_sec(self) -> float:
        return len(self.samples) / self.rate

    def channel(self, index: int) -> Pcm:
        """One channel as mono (a view: no copy of a long call's samples)."""
        return Pcm(self.samples[:, index : index + 1], self.rate)

    def downmix(self) -> Pcm:
        mixed = self.samples.mean(axis=1, dtype=np.float32, keepdims=True)
        return Pcm(mixed.astype(np.int16), self.rate)


def load(path: str | Path, *, max_rate: int | None = None) -> Pcm:
    """Decode a recording to 16-bit PCM.

    Files at or below `max_rate` decode in-process with libsndfile (MP3 via mpg123, FLAC,
    WAV, Ogg): no ffmpeg process per call. Higher rates, and formats libsndfile cannot
    read, go through ffmpeg, which also resamples to `max_rate` (Whisper works at 16 kHz).
    """
    path = Path(path)
    info = probe(path)
    rate = min(info.sample_rate, max_rate or info.sample_rate)
    ints = _read_in_process(path) if rate == info.sample_rate else None
    if ints is None or ints.shape[1] != info.channels:
        raw = decode_pcm(path, sample_rate=rate, channels=info.channels)
        ints = np.frombuffer(raw, dtype=np.int16).reshape(-1, info.channels)
    return Pcm(ints, rate)


def _read_in_process(path: Path) -> np.ndarray | None:
    """int16 samples shaped (n, channels), or None when libsndfile cannot read the file."""
    try:
        ints, _ = soundfile.read(path, dtype="int16", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None
    return ints


def decode_pcm(source: bytes | Path, *, sample_rate: int, channels: int) -> bytes:
    """Any audio ffmpeg reads (a file, or bytes piped in) as 16-bit little-endian PCM."""
    data = source if isinstance(source, bytes) else None
    src = "pipe:0" if data is not None else str(source)
    pcm_out = ["-f", "s16le", "-acodec", "pcm_s16le", "-ar", str(sample_rate), "-ac", str(channels)]
    raw = run_ffmpeg(["-i", src, *pcm_out, "pipe:1"], data)
    if not raw and data:
        raise AudioError("ffmpeg decoded no audio")
    return raw[: len(raw) - len(raw) % (2 * channels)]


def _mono_float(ints: np.ndarray) -> np.ndarray:
    x = ints.astype(np.float32) / 32768.0
    return x.mean(axis=1) if x.ndim == 2 else x


def channels_identical(pcm: Pcm, tolerance_db: float = 40.0) -> bool:
    """True when a 'stereo' file carries the same signal on both channels (dual mono)."""
    if pcm.channels < 2:
        return True
    # Every 7th frame is plenty to tell a copy from two voices, at a seventh of the cost.
    x = pcm.samples[::7, :2].astype(np.float32) / 32768.0
    total = float(np.sqrt(np.mean(np.square(x[:, 0] + x[:, 1])))) + 1e-12
    diff = float(np.sqrt(np.mean(np.square(x[:, 0] - x[:, 1]))))
    return diff == 0.0 or 20 * math.log10(total / diff) >= tolerance_db


def plan_chunks(
    info: AudioInfo,
    max_bytes: int = MAX_FILE_BYTES,
    max_seconds: float = MAX_CHUNK_SECONDS,
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
    rms = _frame_rms(_mono_float(ints[lo:hi]), frame)
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


def encode_pcm(
    raw: bytes, sample_rate: int, channels: int, out: Path, *, bitrate: str = "64k"
) -> Path:
    """Write 16-bit PCM as MP3 (libmp3lame) to `out` (a file: ffmpeg then writes the
    Xing header with the exact length). Other suffixes use ffmpeg's default codec."""
    codec = ["-c:a", "libmp3lame", "-b:a", bitrate] if out.suffix == ".mp3" else []
    pcm_in = ["-f", "s16le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0"]
    run_ffmpeg([*pcm_in, *codec, "-y", str(out)], raw)
    return out


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
        silent = is_silent(_mono_float(ints[a:b:SILENCE_STRIDE]), rate // SILENCE_STRIDE)
        chunks.append(Chunk(path, a / rate, b / rate, silent))
    return chunks
