"""Real speech for tests and benchmarks: espeak-ng's Russian voice (Debian's espeak-ng, which
.ci/run installs), and where a known utterance lies in a recording."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

# Without espeak-ng these tests skip on a developer's machine and fail in CI (never skip there).
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and not os.environ.get("CI"),
    reason="espeak-ng not installed",
)


def spoken(text: str, tmp: Path, rate: int) -> np.ndarray:
    """`text` said by espeak-ng, resampled to `rate` (float32 mono), peak 0.5: about
    -20 dBFS RMS, a telephone level. `rate` has no default: it must be the rate of the
    recording the voice goes into (16 kHz samples in an 8 kHz call play at half speed and
    pitch, with twice espeak-ng's 0.33 s trailing silence)."""
    out = tmp / "utterance.wav"
    subprocess.run(["espeak-ng", "-v", "ru", "-w", str(out), text], check=True)
    x, sr = soundfile.read(out, dtype="float32")
    t = np.arange(int(len(x) * rate / sr)) / rate
    voiced = np.interp(t, np.arange(len(x)) / sr, x).astype(np.float32)
    return 0.5 * voiced / np.max(np.abs(voiced))


def found(x: np.ndarray, voice: np.ndarray) -> int | None:
    """Where `voice` lies in `x` (sample), when it is there at half its level or more."""
    if len(x) < len(voice):
        return None
    size = 1 << (len(x) + len(voice)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(voice, size)), size)
    at = int(np.argmax(corr[: len(x) - len(voice) + 1]))
    return at if corr[at] > 0.3 * float(voice @ voice) else None


# -- what a line holds besides speech ---------------------------------------------------------


def _amplitude(dbfs: float) -> float:
    return float(10 ** (dbfs / 20))


def ring_back(seconds: float, rate: int) -> np.ndarray:
    """Russian ring-back: 425 Hz, 1 s on, 4 s off (GOST 28384), at -20 dBFS."""
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * 425 * t) * ((t % 5.0) < 1.0)
    return (_amplitude(-20) * tone).astype(np.float32)


def hold_music(seconds: float, rate: int) -> np.ndarray:
    """Chords of three tones changing every half second, at about -24 dBFS."""
    t = np.arange(int(seconds * rate)) / rate
    roots = np.array([220.0, 247.0, 262.0, 294.0, 330.0])[(t // 0.5).astype(int) % 5]
    chord = sum(np.sin(2 * np.pi * roots * k * t) for k in (1.0, 1.25, 1.5)) / 3
    return (_amplitude(-24) * chord).astype(np.float32)


def line_noise(
    seconds: float, rate: int, rng: np.random.Generator, dbfs: float = -42
) -> np.ndarray:
    """Hiss (by default -42 dBFS: above the detector's -45 dBFS floor) and a click a second."""
    x = rng.normal(0.0, _amplitude(dbfs), int(seconds * rate)).astype(np.float32)
    x[::rate] += 0.3
    return x
