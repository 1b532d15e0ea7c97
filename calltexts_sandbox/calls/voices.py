"""Spoken words for the sandbox's speech calls: each vocabulary word said by espeak-ng's
Russian voice, and where a word's voice lies in audio (the STT emulator's ear).

Tones carry their word in their pitch, but no voice activity detector calls a tone speech;
these calls hold real speech, so the product's detector (Silero VAD) treats them as it treats
a real call. The emulator still knows the ground truth: a word is found by the normalised
cross-correlation of its voice (both low-passed to the telephone band) with the audio, among
the few words whose spectral envelope is closest (a cheap shortlist).

Only words whose voice survives the sandbox's 32 kbps MP3 (correlation >= MIN_CODEC_NCC after
a round trip) are said: espeak-ng's fricatives ("счёт", "цвет") come back too smeared to be
told apart by waveform. The check runs once per process (about 2 s with the voices).
"""

from __future__ import annotations

import functools
import io
import itertools
import shutil
import subprocess

import numpy as np
import soundfile

from calltexts_sandbox.calls.script import VOCABULARY

RATE = 16_000  # the voices' own rate; other rates are resampled from it
PEAK = 0.5  # about -20 dBFS RMS over a word: a telephone level
TRIM_RMS = 0.01  # espeak-ng's leading and trailing silence is cut at this 10 ms frame level
BAND_HZ = 3_000  # both sides of the correlation are low-passed here (the codec's band is wider)
MIN_CODEC_NCC = 0.9
SHORTLIST = 12
_FRAME_SEC = 0.01


class VoiceError(RuntimeError):
    """espeak-ng is missing: speech calls cannot be rendered."""


def _say(text: str) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        raise VoiceError(
            "the sandbox's speech calls need espeak-ng (apt-get install espeak-ng); "
            "or seed the sandbox with content='tones'"
        )
    wav = subprocess.run(
        ["espeak-ng", "-v", "ru", "--stdout", text], check=True, capture_output=True
    ).stdout
    x, sr = soundfile.read(io.BytesIO(wav), dtype="float32")
    x = resample(x, sr, RATE)
    frame = int(RATE * _FRAME_SEC)
    n = len(x) // frame
    rms = np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1))
    loud = np.flatnonzero(rms > TRIM_RMS * np.max(np.abs(x)) / PEAK)
    x = x[loud[0] * frame : (loud[-1] + 1) * frame]
    return (PEAK * x / np.max(np.abs(x))).astype(np.float32)


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    """Linear resampling after an FFT low-pass below the lower Nyquist (sandbox use only)."""
    if rate == to:
        return np.asarray(x, dtype=np.float32)
    x = lowpass(x, rate, 0.45 * min(rate, to))
    t = np.arange(int(len(x) * to / rate)) / to
    return np.interp(t, np.arange(len(x)) / rate, x).astype(np.float32)


def lowpass(x: np.ndarray, rate: int, hz: float = BAND_HZ) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    spectrum[np.fft.rfftfreq(len(x), 1 / rate) > hz] = 0
    return np.fft.irfft(spectrum, len(x)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def voices() -> tuple[np.ndarray, ...]:
    """Every vocabulary word's voice at RATE (index = VOCABULARY index)."""
    return tuple(_say(word) for word in VOCABULARY)


def voice(index: int, rate: int) -> np.ndarray:
    return _voice_at(index, rate)


@functools.lru_cache(maxsize=512)
def _voice_at(index: int, rate: int) -> np.ndarray:
    x = resample(voices()[index], RATE, rate)
    x.flags.writeable = False
    return x


def ncc_best(segment: np.ndarray, template: np.ndarray) -> tuple[float, int]:
    """The best normalised cross-correlation of `template` inside `segment`, and where."""
    if len(segment) < len(template):
        segment = np.concatenate([segment, np.zeros(len(template) - len(segment), np.float32)])
    size = 1 << (len(segment) + len(template)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(segment, size) * np.conj(np.fft.rfft(template, size)), size)
    corr = corr[: len(segment) - len(template) + 1]
    sums = np.concatenate(([0.0], np.cumsum(np.square(segment, dtype=np.float64))))
    energy = sums[len(template) :] - sums[: len(segment) - len(template) + 1]
    score = corr / np.sqrt(energy * float(template @ template) + 1e-12)
    at = int(np.argmax(score))
    return float(score[at]), at


@functools.lru_cache(maxsize=1)
def spoken_vocabulary() -> tuple[int, ...]:
    """The vocabulary indices the speech calls say: those that survive the MP3 round trip."""
    from calltexts_sandbox.calls.tones import decode_pcm, encode

    gap = int(0.6 * RATE)
    spans, parts, at = [], [], gap
    for x in voices():
        parts += [np.zeros(gap, np.float32), x]
        spans.append((at, at + len(x)))
        at += len(x) + gap
    audio = np.concatenate([*parts, np.zeros(gap, np.float32)])
    pcm = (audio * 32767).astype(np.int16)[:, None]
    heard = decode_pcm(encode(pcm, RATE), RATE)[:, 0].astype(np.float32) / 32768
    heard = lowpass(heard, RATE)
    kept = []
    margin = int(0.05 * RATE)
    for index, (a, b) in enumerate(spans):
        score, _ = ncc_best(heard[a - margin : b + margin], _band_voice(index, RATE))
        if score >= MIN_CODEC_NCC:
            kept.append(index)
    return tuple(kept)


@functools.lru_cache(maxsize=512)
def _band_voice(index: int, rate: int) -> np.ndarray:
    x = lowpass(voice(index, rate), rate)
    x.flags.writeable = False
    return x


# -- the shortlist: spectral envelopes ---------------------------------------------------------

_BANDS, _STEPS = 20, 24


def envelope(x: np.ndarray, rate: int) -> np.ndarray:
    """Log band energies (150-3800 Hz) over time resampled to _STEPS, mean-removed and
    scaled to unit length: independent of level, near for the same word."""
    n, hop = int(rate * 0.025), int(rate * 0.01)
    frames = max(1, (len(x) - n) // hop + 1)
    index = np.minimum(np.arange(n)[None, :] + hop * np.arange(frames)[:, None], len(x) - 1)
    power = np.abs(np.fft.rfft(x[index] * np.hanning(n), axis=1)) ** 2
    hz = np.fft.rfftfreq(n, 1 / rate)
    edges = np.geomspace(150, 3800, _BANDS + 1)
    bands = np.stack(
        [power[:, (hz >= lo) & (hz < hi)].sum(axis=1) for lo, hi in itertools.pairwise(edges)],
        axis=1,
    )
    logs = np.log(bands + 1e-9)
    t = np.linspace(0, frames - 1, _STEPS)
    steps = np.stack([np.interp(t, np.arange(frames), logs[:, k]) for k in range(_BANDS)], axis=1)
    steps -= steps.mean()
    return (steps / (np.linalg.norm(steps) + 1e-9)).ravel()


@functools.lru_cache(maxsize=8)
def _envelopes(rate: int) -> tuple[np.ndarray, tuple[int, ...]]:
    said = spoken_vocabulary()
    return np.stack([envelope(voice(i, rate), rate) for i in said]), said


def recognise(burst: np.ndarray, around: np.ndarray, rate: int) -> tuple[int, float, int] | None:
    """The word of a burst of sound: (vocabulary index, score, its start inside `around`,
    the burst with margins, low-passed), or None when no word's voice matches it. The
    shortlist first; every word when it finds none (a burst that caught only part of its word
    has an envelope far from the word's; and sounds that are no word)."""
    table, said = _envelopes(rate)
    ranked = np.argsort(-(table @ envelope(burst, rate)))
    found = _best(around, rate, [said[k] for k in ranked[:SHORTLIST]])
    if found is None:
        found = _best(around, rate, [said[k] for k in ranked[SHORTLIST:]])
    return found


def _best(around: np.ndarray, rate: int, candidates: list[int]) -> tuple[int, float, int] | None:
    best: tuple[float, int, int] | None = None
    for index in candidates:
        score, at = ncc_best(around, _band_voice(index, rate))
        if best is None or score > best[0]:
            best = (score, index, at)
    if best is None or best[0] < MIN_MATCH:
        return None
    return best[1], best[0], best[2]


MIN_MATCH = 0.8  # a word found through the codec scores >= 0.9; other sounds under 0.6
