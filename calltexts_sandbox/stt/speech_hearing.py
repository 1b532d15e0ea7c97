"""What the emulator hears in the sandbox's speech calls (`calls/content.py`): the spoken
words, found by their voices (`calls/voices.py`), and the stretches of other sound (ring-back,
hold music, line noise), over which a Whisper-like model invents text (`answers.inventions`).

Sound is cut into bursts at pauses (the speech calls leave 0.45 s or more between words, and
espeak-ng's words pause 0.26 s at most inside); a burst no longer than a word is matched
against the voices, anything else, or a burst no voice matches, is noise. Words are found in
the downmix, as Whisper hears a stereo file; a stereo word's side is the channel loud over it.

Unlike `tones.WordListener`, the audio is held until `close` (speech calls are at most the
seed's 20 minutes: about 80 MB of 16 kHz stereo samples).
"""

from __future__ import annotations

import numpy as np

from calltexts_sandbox.calls import voices
from calltexts_sandbox.calls.tones import HeardWord, mono_float

FRAME_SEC = 0.01
BURST_RMS = 0.005  # -46 dBFS: above a quiet line's hiss (-65), below line noise (-42)
MERGE_GAP_SEC = 0.35
MIN_BURST_SEC = 0.08  # clicks are shorter
MAX_WORD_SEC = 1.2  # the longest word voice is under 0.8 s
# Searched around a burst: a word's soft onset may lie below BURST_RMS (0.2 s of "ц"), so
# further before it; the neighbours lie 0.45 s away, too far to fit in whole.
BEFORE_SEC, AFTER_SEC = 0.4, 0.15
EDGE_SEARCH_SEC = 6.0  # longer bursts (hold music, a noise-only call) are not searched


class SpeechListener:
    def __init__(self, sample_rate: int) -> None:
        self.rate = sample_rate
        self.samples = 0
        self.noises: list[tuple[float, float]] = []
        self._blocks: list[np.ndarray] = []

    @property
    def duration_sec(self) -> float:
        return self.samples / self.rate

    def feed(self, block: np.ndarray) -> None:
        x = np.asarray(block)
        if x.size:
            self._blocks.append(x.reshape(len(x), -1))
            self.samples += len(x)

    def close(self) -> list[HeardWord]:
        if not self._blocks:
            return []
        x = np.concatenate(self._blocks)
        self._blocks = []
        scale = np.float32(1 / 32768 if x.dtype == np.int16 else 1.0)
        mono = mono_float(x)
        heard: list[HeardWord] = []
        longest = int(MAX_WORD_SEC * self.rate)
        for a, b in _bursts(mono, self.rate):
            words: list[HeardWord] = []
            if b - a <= longest:
                words = [w for w in [self._word(mono, a, b, x, scale)] if w is not None]
            elif b - a <= int(EDGE_SEARCH_SEC * self.rate):
                # A stretch sent joined to another (STT_SEND=speech) may put a word within
                # the merge gap of the sound before or after it: look for one at each edge.
                words = [
                    w
                    for lo, hi in ((a, a + longest), (b - longest, b))
                    for w in [self._word(mono, lo, hi, x, scale)]
                    if w is not None
                    and a <= round(w.start * self.rate) + 1
                    and round(w.end * self.rate) <= b + int(AFTER_SEC * self.rate)
                ]
                words = list({(w.start, w.text): w for w in words}.values())
            heard += words
            if not words:
                self.noises.append((round(a / self.rate, 3), round(b / self.rate, 3)))
        heard.sort(key=lambda w: (w.start, w.end, w.text))
        return heard

    def _word(
        self, mono: np.ndarray, a: int, b: int, x: np.ndarray, scale: np.float32
    ) -> HeardWord | None:
        lo = max(0, a - int(BEFORE_SEC * self.rate))
        hi = min(len(mono), b + int(AFTER_SEC * self.rate))
        found = voices.recognise(mono[a:b], voices.lowpass(mono[lo:hi], self.rate), self.rate)
        if found is None:
            return None
        index, _, at = found
        start = lo + at
        end = min(len(mono), start + len(voices.voice(index, self.rate)))
        side = None
        if x.shape[1] >= 2:
            span = x[start:end, :2].astype(np.float32) * scale
            levels = np.einsum("ij,ij->j", span, span)
            louder = int(np.argmax(levels))
            side = louder if levels[1 - louder] < 0.25 * levels[louder] else None
        return HeardWord(
            round(start / self.rate, 3), round(end / self.rate, 3), voices.VOCABULARY[index], side
        )


def _bursts(mono: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """Sample ranges of sound, merged across pauses shorter than MERGE_GAP_SEC."""
    frame = max(1, int(rate * FRAME_SEC))
    n = len(mono) // frame
    if n == 0:
        return []
    rms = np.sqrt(np.mean(np.square(mono[: n * frame].reshape(n, frame)), axis=1))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], (rms > BURST_RMS).astype(np.int8), [0]))))
    runs: list[tuple[int, int]] = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if runs and (a - runs[-1][1]) * FRAME_SEC < MERGE_GAP_SEC:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return [(a * frame, b * frame) for a, b in runs if (b - a) * FRAME_SEC >= MIN_BURST_SEC]
