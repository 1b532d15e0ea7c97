"""Dialogue by roles from a model that returns no times (gpt-transcribe): each side's turns,
found by a voice activity detector on its own channel, each sent as a request of its own.

Why this shape (docs/specs/openai_models.md §5 has the measurements):
- A turn's text comes from its own channel's audio only, so it lands under its side by
  construction; it is placed at the turn's start, and turns are sent in order of start with
  the dialogue so far as `prompt` (the model continues the conversation it is told of).
- Only speech is sent: the bill is each side's speech, not the call twice over (per-channel
  mode sends both channels whole: twice the call).
- Consecutive turns of one side join into one request while the other side says nothing in
  between (a pause for breath is no reason for a request), up to `max_request_sec`: the
  number of requests is about the number of times the speaker changes, plus interjections.
- A call's requests are sent one after another (each needs the text before it); calls run
  concurrently as before, so the account's request rate, not one call, bounds the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from calltexts_assets.audio import decode as audio

# A request carries at least this much audio: OpenAI refuses clips under 0.1 s, and a VAD's
# shortest blips are clicks, not words.
MIN_TURN_SEC = 0.2
# The prompt: the end of the dialogue so far; a few hundred characters set the context.
PROMPT_CHARS = 400
TURN_RATE = 16_000  # what the channels are decoded at for the detector and the clips
# Speech detector settings: a pause this long ends a span; spans keep this much around them.
MIN_SILENCE_SEC = 0.5
PAD_SEC = 0.1

SpeechSpans = Callable[..., list[tuple[float, float]]]


@dataclass(frozen=True)
class TurnGroup:
    """One request: `side` speaking from `start` to `end` (the recording's seconds)."""

    side: int
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def plan_requests(
    spans_by_side: Sequence[Sequence[tuple[float, float]]],
    *,
    max_request_sec: float,
    min_sec: float = MIN_TURN_SEC,
) -> list[TurnGroup]:
    """Each side's speech spans as requests, in order of start. A span joins the previous
    request when it is the same side's, no span of the other side started since, and the
    request stays under `max_request_sec`; spans under `min_sec` are dropped."""
    spans = sorted(
        (start, end, side)
        for side, side_spans in enumerate(spans_by_side)
        for start, end in side_spans
        if end - start >= min_sec
    )
    groups: list[TurnGroup] = []
    for start, end, side in spans:
        last = groups[-1] if groups else None
        if last is not None and last.side == side and end - last.start <= max_request_sec:
            groups[-1] = TurnGroup(side, last.start, max(last.end, end))
            continue
        # Longer than a request may be (a monologue without a pause of MIN_SILENCE_SEC):
        # cut into equal parts; the model hears each part's end and the next one's start.
        count = max(1, int(np.ceil((end - start) / max_request_sec)))
        step = (end - start) / count
        groups += [TurnGroup(side, start + i * step, start + (i + 1) * step) for i in range(count)]
    return groups


def decode_channels(path: Path, info: audio.AudioInfo) -> np.ndarray:
    """The recording's samples at TURN_RATE, shaped (channels, n). A call of an hour is
    230 MB of float32 per channel: turns are for calls, not for recordings of days."""
    pcm = audio.iter_pcm(path, info, max_rate=TURN_RATE)
    blocks = list(pcm.blocks)
    samples = np.concatenate(blocks) if blocks else np.zeros((0, pcm.channels), np.float32)
    if pcm.rate != TURN_RATE:  # libsndfile decodes at the file's rate: bring it to ours
        n = round(len(samples) * TURN_RATE / pcm.rate)
        at = np.linspace(0, len(samples) - 1, n) if n else np.zeros(0)
        samples = np.stack(
            [np.interp(at, np.arange(len(samples)), samples[:, c]) for c in range(pcm.channels)],
            axis=1,
        ).astype(np.float32)
    return samples.T


def write_clip(channel: np.ndarray, group: TurnGroup, out: Path) -> Path:
    """The group's span of one channel as 16 kHz mono FLAC (lossless; OpenAI reads it)."""
    first, last = int(group.start * TURN_RATE), int(np.ceil(group.end * TURN_RATE))
    soundfile.write(str(out), channel[first:last], TURN_RATE, format="FLAC")
    return out


def prompt_before(texts: Sequence[str]) -> str:
    """The end of the dialogue so far, whole words, as the next request's prompt."""
    text = " ".join(t for t in texts if t)
    if len(text) <= PROMPT_CHARS:
        return text
    cut = text[-PROMPT_CHARS:]
    return cut.split(" ", 1)[1] if " " in cut else cut
