"""Sandbox audio that carries its own ground truth: one tone per word of a call script.

A word's tone frequency indexes it in the vocabulary, so `decode_words` recovers the
words (and their times) from whatever audio it is given. The STT emulator uses it: a
pipeline that splits, offsets or swaps channels wrongly then gets wrong text back,
exactly as it would from real Whisper.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

from calltexts_assets.audio import decode as audio
from calltexts_assets.audio.decode import encode_pcm
from calltexts_assets.sandbox.script import VOCABULARY, CallScript

SAMPLE_RATE = 16_000
BITRATE = "32k"
# 400 Hz + 32 Hz steps: 80 words end below 3 kHz, well inside what a 32 kbps MP3 at
# 16 kHz keeps; 32 Hz is ~13 FFT bins apart even for the shortest word.
BASE_HZ = 400.0
STEP_HZ = 32.0
AMPLITUDE = 0.3  # per channel; mono mixes never overlap, so no clipping
RAMP_SEC = 0.01  # fade in/out: a hard edge would splash energy over all frequencies

# Decoder settings.
FRAME_SEC = 0.01
ACTIVE_RMS = 0.02  # ~-34 dBFS; tones sit at ~-13 dBFS (-19 dBFS when a stereo file is downmixed)
MERGE_GAP_SEC = 0.04  # codec wobble inside a word, far below the 0.12 s gap between words
MIN_WORD_SEC = 0.10  # shorter bursts are artefacts (or a word cut by a careless split)
TOLERANCE_HZ = STEP_HZ * 0.35
ANALYSIS_SEC = 0.128  # of each word's middle, for its pitch


def word_frequency(index: int) -> float:
    return BASE_HZ + STEP_HZ * index


@functools.lru_cache(maxsize=4096)
def _tone(index: int, samples: int, sample_rate: int) -> np.ndarray:
    t = np.arange(samples, dtype=np.float64) / sample_rate
    wave = np.sin(2 * np.pi * word_frequency(index) * t)
    ramp = max(1, min(int(RAMP_SEC * sample_rate), samples // 2))
    envelope = np.ones(samples)
    envelope[:ramp] = np.linspace(0.0, 1.0, ramp)
    envelope[-ramp:] = np.linspace(1.0, 0.0, ramp)
    tone = (wave * envelope * AMPLITUDE * 32767).astype(np.int16)
    tone.flags.writeable = False  # shared through the cache
    return tone


def render_pcm(script: CallScript, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """int16 samples shaped (n, channels): operator left, client right; mono mixes both."""
    channels = 2 if script.stereo else 1
    pcm = np.zeros((int(script.duration_sec * sample_rate), channels), dtype=np.int16)
    for turn in script.turns:
        column = turn.channel if script.stereo else 0
        for word in turn.words:
            a, b = round(word.start * sample_rate), round(word.end * sample_rate)
            pcm[a:b, column] = _tone(word.index, b - a, sample_rate)
    return pcm


def encode(pcm: np.ndarray, sample_rate: int, *, fmt: str = "mp3", bitrate: str = BITRATE) -> bytes:
    """Encode int16 (n, channels) samples with ffmpeg (libmp3lame for mp3)."""
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    with tempfile.TemporaryDirectory(prefix="calltexts-tones-") as tmp:
        out = Path(tmp) / f"out.{fmt}"
        raw = np.ascontiguousarray(pcm).tobytes()
        return encode_pcm(raw, sample_rate, channels, out, bitrate=bitrate).read_bytes()


def render_mp3(
    script: CallScript, *, bitrate: str = BITRATE, bank_dir: Path | None = None
) -> bytes:
    """The call recording as MP3 bytes (16 kHz, 32 kbps by default).

    Joined from pre-encoded frames (mp3_frames.py; `bank_dir` keeps its bank on disk), as
    the sandbox must serve thousands of audio minutes fast. A script whose words are off the
    36 ms frame grid (call_script never makes one) is encoded whole instead.
    """
    # Imported here: mp3_frames draws its bank with this module's tones.
    from calltexts_assets.sandbox import mp3_frames

    try:
        return mp3_frames.render(script, bitrate=bitrate, cache_dir=bank_dir)
    except mp3_frames.NotSpliceable:
        return encode(render_pcm(script), SAMPLE_RATE, fmt="mp3", bitrate=bitrate)


def render_wav(script: CallScript, sample_rate: int = SAMPLE_RATE) -> bytes:
    """The call recording as 16-bit WAV (large files cheaply: 64 KB/s stereo at 16 kHz)."""
    return encode(render_pcm(script, sample_rate), sample_rate, fmt="wav")


def decode_pcm(data: bytes, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    """Decode audio bytes to int16 samples (n, channels); AudioError if ffmpeg can't."""
    raw = audio.decode_pcm(data, sample_rate=sample_rate, channels=channels)
    return np.frombuffer(raw, dtype=np.int16).reshape(-1, channels)


def _as_mono_float(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]  # one channel: no mean to take (it would copy the whole call)
    scale = np.float32(1 / 32768 if x.dtype == np.int16 else 1.0)
    x = x.astype(np.float32) * scale
    return x.mean(axis=1) if x.ndim == 2 else x


@functools.lru_cache(maxsize=256)
def _window(length: int) -> np.ndarray:
    window = np.hanning(length)
    window.flags.writeable = False  # shared through the cache
    return window


def _active_runs(rms: np.ndarray, frame_sec: float) -> list[tuple[int, int]]:
    active = np.concatenate(([False], rms > ACTIVE_RMS, [False]))
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))
    runs: list[tuple[int, int]] = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if runs and (a - runs[-1][1]) * frame_sec < MERGE_GAP_SEC:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return [(a, b) for a, b in runs if (b - a) * frame_sec >= MIN_WORD_SEC]


def _dominant_hz(x: np.ndarray, sample_rate: int) -> float:
    # The middle 0.128 s of a word pins its pitch: bins of ~4 Hz (2 Hz error at most) against
    # 32 Hz between words. The whole word and a 1 Hz grid cost 4x the FFT for nothing.
    span = min(len(x), int(sample_rate * ANALYSIS_SEC))
    start = (len(x) - span) // 2
    x = x[start : start + span]
    n_fft = 1 << max(int(np.ceil(np.log2(span))), int(np.log2(sample_rate)) - 1)
    spectrum = np.abs(np.fft.rfft(x * _window(span), n=n_fft))
    return float(np.argmax(spectrum)) * sample_rate / n_fft


def decode_words(pcm: np.ndarray, sample_rate: int) -> list[tuple[float, float, str]]:
    """(start, end, word) for every tone in the audio; stereo input is downmixed first.

    Bursts whose pitch is no vocabulary word are dropped, as noise would be.
    """
    x = _as_mono_float(pcm)
    frame = max(1, int(sample_rate * FRAME_SEC))
    frame_sec = frame / sample_rate
    n_frames = len(x) // frame
    if n_frames == 0:
        return []
    rms = np.sqrt(np.mean(np.square(x[: n_frames * frame].reshape(n_frames, frame)), axis=1))
    trim = frame * 2  # skip the ramps and codec smear at the edges of a burst
    words: list[tuple[float, float, str]] = []
    for a, b in _active_runs(rms, frame_sec):
        segment = x[a * frame + trim : b * frame - trim]
        if len(segment) < frame:
            continue
        hz = _dominant_hz(segment, sample_rate)
        index = round((hz - BASE_HZ) / STEP_HZ)
        if 0 <= index < len(VOCABULARY) and abs(hz - word_frequency(index)) <= TOLERANCE_HZ:
            words.append((round(a * frame_sec, 3), round(b * frame_sec, 3), VOCABULARY[index]))
    return words
