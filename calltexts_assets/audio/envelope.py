"""A recording's loudness over time, per channel: what role attribution, pause finding and
the silence checks read, computed in one pass over bounded blocks of decoded audio.

Kept per 10 ms frame as float16 RMS (full scale 1.0): 4 bytes per second of stereo, 8.6 MB
for a 6-hour call, against 1.4 GB for its decoded samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calltexts_assets.audio.decode import BLOCK_SEC, AudioInfo, iter_pcm

FRAME_SEC = 0.01
# Speech peaks well above this; a side whose loudest 50 ms stay below it holds no speech
# (line noise, a muted phone). -45 dBFS.
SPEECH_FLOOR_DBFS = -45.0
PEAK_WINDOW_FRAMES = 5  # 50 ms: one short word shows, a click does not
PAUSE_DBFS = -50.0  # quieter than this is a pause, whatever the rest of the window does
_SLAB_FRAMES = 60_000  # 10 minutes of frames at a time (under 1 MB of float32 power)
# Two channels whose difference is this far below their sum carry one signal (dual mono).
DUAL_MONO_DB = 40.0
_DUAL_MONO_STRIDE = 7  # every 7th sample is plenty to tell a copy from two voices


def _db(power: float | np.ndarray) -> float | np.ndarray:
    return 10 * np.log10(np.maximum(power, 1e-12))


@dataclass(frozen=True)
class Envelope:
    rms: np.ndarray  # float16 (frames, channels)
    duration_sec: float  # decoded length
    identical_channels: bool  # stereo that carries the same signal twice (or mono)

    @property
    def channels(self) -> int:
        return int(self.rms.shape[1])

    def _frames(self, start: float, end: float) -> slice:
        a = max(0, math.floor(start / FRAME_SEC))
        b = min(len(self.rms), max(a + 1, math.ceil(end / FRAME_SEC)))
        return slice(a, b)

    def power(self, start: float, end: float) -> np.ndarray:
        """Mean square of each channel over [start, end) (float64, full scale 1.0)."""
        frames = self.rms[self._frames(start, end)].astype(np.float64)
        if not len(frames):
            return np.zeros(self.channels)
        return np.mean(np.square(frames), axis=0)

    def level_db(self, start: float, end: float) -> np.ndarray:
        """dBFS of each channel over [start, end)."""
        return _db(self.power(start, end))

    def peak_db(self, start: float, end: float) -> np.ndarray:
        """dBFS of the loudest 50 ms of each channel within [start, end), read a slab of
        frames at a time (a 6-hour span is 2 million frames: never converted at once)."""
        span = self._frames(start, end)
        width = min(PEAK_WINDOW_FRAMES, max(span.stop - span.start, 1))
        kernel = np.ones(width, dtype=np.float32) / width
        peaks = np.zeros(self.channels)
        for lo in range(span.start, max(span.stop, span.start + 1), _SLAB_FRAMES):
            hi = min(span.stop, lo + _SLAB_FRAMES + width - 1)  # windows across the seam
            power = np.square(self.rms[lo:hi].astype(np.float32))
            if len(power) >= width:
                for c in range(self.channels):
                    peaks[c] = max(peaks[c], float(np.convolve(power[:, c], kernel, "valid").max()))
        return _db(peaks)

    def speech(self, start: float = 0.0, end: float | None = None) -> np.ndarray:
        """Per channel: does its loudest 50 ms in the span reach the speech floor?"""
        stop = self.duration_sec if end is None else end
        return self.peak_db(start, stop) > SPEECH_FLOOR_DBFS

    def silent(self, start: float = 0.0, end: float | None = None) -> bool:
        """No channel holds speech in the span: nothing to pay an STT for."""
        return not bool(np.any(self.speech(start, end)))

    def mix_power(self, start: float, end: float) -> np.ndarray:
        """Per 10 ms frame of the span, the summed power of the channels (what a mono
        downmix hears, give or take phase)."""
        frames = self.rms[self._frames(start, end)].astype(np.float64)
        return np.sum(np.square(frames), axis=1)

    def pause_near(self, cut: float, window_sec: float) -> float:
        """`cut` moved back (by at most `window_sec`) into the middle of the longest pause
        there. The longest pause is the likeliest turn boundary; among equals the latest
        wins, which keeps pieces near their planned length."""
        lo = max(0.0, cut - window_sec)
        power = self.mix_power(lo, cut)
        if len(power) < 10:
            return cut
        quiet = power <= max(10 ** (PAUSE_DBFS / 10), 4 * float(np.min(power)))
        edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
        starts, ends = edges[::2], edges[1::2]
        lengths = ends - starts
        best = len(lengths) - 1 - int(np.argmax(lengths[::-1]))
        first = self._frames(lo, cut).start
        return float((first + (starts[best] + ends[best]) / 2) * FRAME_SEC)


def _frame_rms(x: np.ndarray, frame: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """RMS of each whole frame of `x` (n, channels), per channel: (n // frame, channels).

    The channels are laid out one after the other first (into `scratch`, (channels, >= n *
    frame) float32, when given: no fresh array per block), so that each frame's sum of
    squares is one contiguous dot product."""
    n = len(x) // frame
    if scratch is None:
        planar = np.ascontiguousarray(x[: n * frame].T)
    else:
        planar = scratch[: x.shape[1], : n * frame]
        np.copyto(planar, x[: n * frame].T)
    columns = planar.reshape(x.shape[1], n, frame)
    return np.sqrt(np.einsum("cij,cij->ci", columns, columns) / frame).T


class _Frames:
    """A float16 array filled frame block by frame block: sized from the header's duration,
    grown (doubled) only if the audio runs longer, so a long call never holds its envelope
    twice (a list of parts, then their concatenation)."""

    def __init__(self, expected: int, channels: int) -> None:
        self.data = np.empty((max(expected, 1), channels), dtype=np.float16)
        self.filled = 0

    def add(self, rows: np.ndarray) -> None:
        end = self.filled + len(rows)
        if end > len(self.data):
            grown = np.empty((max(end, 2 * len(self.data)), self.data.shape[1]), np.float16)
            grown[: self.filled] = self.data[: self.filled]
            self.data = grown
        self.data[self.filled : end] = rows
        self.filled = end

    def array(self) -> np.ndarray:
        return self.data[: self.filled]


def analyse(
    path: str | Path, info: AudioInfo | None = None, *, block_sec: float = BLOCK_SEC
) -> Envelope:
    """The envelope of a recording, decoded once, a block at a time (see
    `decode.iter_pcm`), into the same two working arrays whatever its length."""
    pcm = iter_pcm(path, info, block_sec=block_sec, reuse=True)
    frame = max(1, round(pcm.rate * FRAME_SEC))
    expected = math.ceil(info.duration_sec / FRAME_SEC) + 2 if info else 6000
    rms = _Frames(expected, pcm.channels)
    scratch = np.empty((pcm.channels, pcm.block_frames + frame), dtype=np.float32)
    carry = np.zeros((0, pcm.channels), dtype=np.float32)
    total = 0
    together = apart = 0.0
    for block in pcm.blocks:
        total += len(block)
        x = np.concatenate((carry, block)) if len(carry) else block
        usable = len(x) - len(x) % frame
        if usable:
            rms.add(_frame_rms(x[:usable], frame, scratch))
        carry = x[usable:].copy()  # `block` is overwritten by the next one
        if pcm.channels >= 2:
            sampled = block[::_DUAL_MONO_STRIDE, :2]
            together += float(np.sum(np.square(sampled[:, 0] + sampled[:, 1])))
            apart += float(np.sum(np.square(sampled[:, 0] - sampled[:, 1])))
    if len(carry):
        rms.add(np.sqrt(np.mean(np.square(carry), axis=0, keepdims=True)))
    identical = pcm.channels < 2 or apart == 0.0 or _db(together / apart) >= DUAL_MONO_DB
    return Envelope(rms.array(), total / pcm.rate, bool(identical))
