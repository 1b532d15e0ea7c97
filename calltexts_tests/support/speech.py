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


def spoken(text: str, tmp: Path, rate: int = 16_000) -> np.ndarray:
    """`text` said by espeak-ng, resampled to `rate` (float32 mono), peak 0.5: about
    -20 dBFS RMS, a telephone level."""
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
