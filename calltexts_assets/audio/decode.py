"""Reading recordings: find ffmpeg, read headers, decode to PCM.

Headers are read by libsndfile, else mutagen, never with ffprobe (the imageio-ffmpeg wheel
ships none), and audio is decoded only when a split or a channel separation needs the
samples; then in-process by libsndfile where it can, since an ffmpeg process per call and
per chunk cost more CPU than the decoding itself.
"""

from __future__ import annotations

import functools
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


class AudioError(ValueError):
    """The file is not audio we can read (no header, ffmpeg cannot decode it)."""


@dataclass(frozen=True)
class AudioInfo:
    duration_sec: float
    channels: int
    sample_rate: int
    size_bytes: int


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


def mono_float(ints: np.ndarray) -> np.ndarray:
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


def encode_pcm(
    raw: bytes, sample_rate: int, channels: int, out: Path, *, bitrate: str = "64k"
) -> Path:
    """Write 16-bit PCM as MP3 (libmp3lame) to `out` (a file: ffmpeg then writes the
    Xing header with the exact length). Other suffixes use ffmpeg's default codec."""
    codec = ["-c:a", "libmp3lame", "-b:a", bitrate] if out.suffix == ".mp3" else []
    pcm_in = ["-f", "s16le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0"]
    run_ffmpeg([*pcm_in, *codec, "-y", str(out)], raw)
    return out
