"""Sandbox audio that carries its own ground truth: one tone per word of a call script.

A word's tone frequency indexes it in the vocabulary, so `decode_words` recovers the
words (and their times) from whatever audio it is given. The STT emulator uses it: a
pipeline that splits, offsets or swaps channels wrongly then gets wrong text back,
exactly as it would from real Whisper.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calltexts_assets.audio import decode as audio
from calltexts_assets.audio.decode import encode_pcm
from calltexts_sandbox.calls.script import VOCABULARY, CallScript

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
# A burst longer than one word, or with a second pitch this strong (-12 dB), is cross-talk:
# two words at once, separated by their frequencies.
SINGLE_BURST_SEC = 0.62
OTHER_TONE = 0.25
MAX_BURST_SEC = 30.0  # sound this long without a pause is no word: decode what it holds


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
    for turn in script.all_turns:
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


def render_wav(script: CallScript, sample_rate: int = SAMPLE_RATE) -> bytes:
    """The call recording as 16-bit WAV (large files cheaply: 64 KB/s stereo at 16 kHz)."""
    return encode(render_pcm(script, sample_rate), sample_rate, fmt="wav")


def decode_pcm(data: bytes, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    """Decode audio bytes to int16 samples (n, channels); AudioError if ffmpeg can't."""
    raw = audio.decode_pcm(data, sample_rate=sample_rate, channels=channels)
    return np.frombuffer(raw, dtype=np.int16).reshape(-1, channels)


def mono_float(pcm: np.ndarray) -> np.ndarray:
    """float32 mono in [-1, 1]: channels averaged, as Whisper downmixes."""
    x = np.asarray(pcm)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]  # one channel: no mean to take (it would copy the whole block)
    scale = np.float32(1 / 32768 if x.dtype == np.int16 else 1.0)
    if x.ndim == 2 and x.shape[1] == 2:  # a strided mean over two columns is 10x slower
        return (x[:, 0].astype(np.float32) + x[:, 1]) * (scale / 2)
    x = x.astype(np.float32) * scale
    return x.mean(axis=1) if x.ndim == 2 else x


@functools.lru_cache(maxsize=256)
def _window(length: int) -> np.ndarray:
    window = np.hanning(length)
    window.flags.writeable = False  # shared through the cache
    return window


def _active_runs(rms: np.ndarray, frame_sec: float) -> list[tuple[int, int]]:
    """Runs of frames above ACTIVE_RMS, merged across gaps shorter than MERGE_GAP_SEC."""
    active = np.concatenate(([False], rms > ACTIVE_RMS, [False]))
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))
    runs: list[tuple[int, int]] = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if runs and (a - runs[-1][1]) * frame_sec < MERGE_GAP_SEC:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs


def _spectrum(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Magnitudes of a Hann-windowed stretch (zero-padded to at least 1/2 s) and the Hz per bin."""
    n_fft = 1 << max(int(np.ceil(np.log2(len(x)))), int(np.log2(sample_rate)) - 1)
    return np.abs(np.fft.rfft(x * _window(len(x)), n=n_fft)), sample_rate / n_fft


@functools.lru_cache(maxsize=64)
def _vocabulary_bins(n_bins: int, hz_per_bin: float) -> np.ndarray:
    """For each vocabulary word, the spectrum bins within TOLERANCE_HZ of its frequency
    (a fixed-width index matrix; bins past the spectrum's end point at its last bin)."""
    width = int(2 * TOLERANCE_HZ / hz_per_bin) + 2
    low = np.array(
        [int((word_frequency(i) - TOLERANCE_HZ) / hz_per_bin) for i in range(len(VOCABULARY))]
    )
    bins = np.minimum(low[:, None] + np.arange(width)[None, :], n_bins - 1)
    bins.flags.writeable = False  # shared through the cache
    return bins


def _vocabulary_levels(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """Spectral magnitude at each vocabulary word's frequency (the strongest bin within
    TOLERANCE_HZ of it), and the spectrum's own peak (a foreign sound may be louder)."""
    spectrum, hz_per_bin = _spectrum(x, sample_rate)
    levels = spectrum[_vocabulary_bins(len(spectrum), hz_per_bin)].max(axis=1)
    return levels, float(spectrum.max())


def _single_word(x: np.ndarray, sample_rate: int) -> int | None:
    """The word of a burst that holds one tone, None when it holds more (or none)."""
    # The middle 0.128 s pins the pitch: bins of ~4 Hz against 32 Hz between words.
    span = min(len(x), int(sample_rate * ANALYSIS_SEC))
    start = (len(x) - span) // 2
    levels, peak = _vocabulary_levels(x[start : start + span], sample_rate)
    best = int(np.argmax(levels))
    if levels[best] < 0.5 * peak:  # the burst's pitch is no word's
        return None
    # A tone leaks < 3 % into its neighbours' bands (Hann sidelobes 20 Hz off): a neighbour
    # this strong is a second word.
    others = np.delete(levels, best)
    if levels[best] <= 0 or (len(others) and others.max() >= OTHER_TONE * levels[best]):
        return None
    return best


def _tones_present(x: np.ndarray, sample_rate: int) -> list[int]:
    """Every word tone heard in a burst that holds several (cross-talk), window by window."""
    size = min(len(x), int(sample_rate * ANALYSIS_SEC))
    found: set[int] = set()
    for start in range(0, max(1, len(x) - size + 1), max(1, size // 2)):
        levels, peak = _vocabulary_levels(x[start : start + size], sample_rate)
        if peak > 0:
            found.update(np.flatnonzero(levels >= OTHER_TONE * peak).tolist())
    return sorted(found)


def _tone_amplitude(x: np.ndarray, sample_rate: int, index: int) -> np.ndarray:
    """One word's tone amplitude at each sample of `x`: demodulated and averaged over
    1/STEP_HZ s. That average is zero for any other word's tone (every vocabulary frequency
    is a whole number of STEP_HZ away), so words that overlap in time separate."""
    phase = np.exp(-2j * np.pi * word_frequency(index) * np.arange(len(x)) / sample_rate)
    width = min(len(x), max(1, round(sample_rate / STEP_HZ)))
    sums = np.concatenate(([0], np.cumsum(x * phase)))
    centred = np.clip(np.arange(len(x)) - width // 2, 0, len(x) - width)  # windows inside x
    return 2 * np.abs(sums[centred + width] - sums[centred]) / width


def _tone_spans(x: np.ndarray, sample_rate: int, index: int) -> list[tuple[int, int]]:
    """Where one word's tone sounds in `x` (sample ranges, at half its peak amplitude)."""
    amplitude = _tone_amplitude(x, sample_rate, index)
    on = amplitude >= 0.5 * amplitude.max()
    edges = np.flatnonzero(np.diff(np.concatenate(([0], on.astype(np.int8), [0]))))
    gap, shortest = int(MERGE_GAP_SEC * sample_rate), int(MIN_WORD_SEC * sample_rate)
    spans: list[tuple[int, int]] = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if spans and a - spans[-1][1] < gap:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return [(a, b) for a, b in spans if b - a >= shortest]


@dataclass(frozen=True)
class HeardWord:
    start: float
    end: float
    text: str
    side: int | None  # the channel it sounds on (stereo input); None: mono, or both alike


class WordListener:
    """Turns audio fed a block at a time into every word tone heard, holding no more than the
    burst in progress: a recording of hours needs no more memory than one of a minute.

    Words are found in the downmix, as Whisper hears a stereo file; for stereo input each
    word also says which channel it sounds on (its tone's amplitude per channel), which is
    the sandbox's ground truth of who said it. Bursts whose pitch is no vocabulary word are
    dropped, as noise would be."""

    def __init__(self, sample_rate: int) -> None:
        self.rate = sample_rate
        self.frame = max(1, int(sample_rate * FRAME_SEC))
        self.heard: list[HeardWord] = []
        self.samples = 0  # fed so far
        self._buffer = np.zeros((0, 1), dtype=np.float32)  # the channels as fed
        self._offset = 0  # sample index of the buffer's first sample

    @property
    def duration_sec(self) -> float:
        return self.samples / self.rate

    def feed(self, block: np.ndarray) -> None:
        x = np.asarray(block)
        if x.size == 0:
            return
        x = x.reshape(len(x), -1).astype(np.float32) * np.float32(
            1 / 32768 if x.dtype == np.int16 else 1.0
        )
        if len(self._buffer) == 0 and self._buffer.shape[1] != x.shape[1]:
            self._buffer = np.zeros((0, x.shape[1]), dtype=np.float32)
        self.samples += len(x)
        self._buffer = np.concatenate((self._buffer, x))
        self._listen(final=False)

    def close(self) -> list[HeardWord]:
        self._listen(final=True)
        self.heard.sort(key=lambda w: (w.start, w.end, w.text))
        return self.heard

    def _listen(self, *, final: bool) -> None:
        frame, frame_sec = self.frame, self.frame / self.rate
        n_frames = len(self._buffer) // frame
        if n_frames == 0:
            return
        mono = mono_float(self._buffer)
        framed = mono[: n_frames * frame].reshape(n_frames, frame)
        rms = np.sqrt(np.mean(np.square(framed), axis=1))
        guard = int(np.ceil(MERGE_GAP_SEC / frame_sec)) + 1
        keep_from = max(0, n_frames - guard)
        for a, b in _active_runs(rms, frame_sec):
            if not (final or b <= n_frames - guard or (b - a) * frame_sec > MAX_BURST_SEC):
                keep_from = min(keep_from, a)  # a burst still sounding: wait for its end
                break
            if (b - a) * frame_sec >= MIN_WORD_SEC:
                self._decode_burst(mono, a * frame, b * frame)
            keep_from = max(keep_from, b)
        cut = min(keep_from, n_frames) * frame
        self._buffer = self._buffer[cut:]
        self._offset += cut

    def _word(self, a: int, b: int, index: int, *, alone: bool) -> HeardWord:
        """`alone`: the only tone of its burst, so the louder channel over it is its side;
        else its own tone's amplitude per channel says."""
        side = None
        if self._buffer.shape[1] >= 2:
            x = self._buffer[a:b, :2]
            if alone:
                levels = np.array([np.dot(x[:, c], x[:, c]) for c in (0, 1)])
            else:
                levels = np.array(
                    [np.median(_tone_amplitude(x[:, c], self.rate, index)) for c in (0, 1)]
                )
            louder = int(np.argmax(levels))
            side = louder if levels[1 - louder] < 0.25 * levels[louder] else None
        start, end = (self._offset + a) / self.rate, (self._offset + b) / self.rate
        return HeardWord(round(start, 3), round(end, 3), VOCABULARY[index], side)

    def _decode_burst(self, mono: np.ndarray, a: int, b: int) -> None:
        x = mono[a:b]
        trim = self.frame * 2  # skip the ramps and codec smear at the edges of a burst
        if (b - a) / self.rate <= SINGLE_BURST_SEC and len(x) > 2 * trim + self.frame:
            index = _single_word(x[trim:-trim], self.rate)
            if index is not None:
                self.heard.append(self._word(a, b, index, alone=True))
                return
        for index in _tones_present(x, self.rate):
            self.heard += [
                self._word(a + s, a + e, index, alone=False)
                for s, e in _tone_spans(x, self.rate, index)
            ]


def decode_words(pcm: np.ndarray, sample_rate: int) -> list[tuple[float, float, str]]:
    """(start, end, word) of every tone in `pcm` (in memory: tests and short clips)."""
    listener = WordListener(sample_rate)
    listener.feed(pcm)
    return [(w.start, w.end, w.text) for w in listener.close()]
