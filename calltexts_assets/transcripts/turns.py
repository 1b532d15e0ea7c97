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

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from calltexts_assets.audio import decode as audio

# A request carries at least this much audio: OpenAI refuses clips under 0.1 s, and a VAD's
# shortest blips are clicks, not words.
MIN_TURN_SEC = 0.2
# Speech is kept this much before and after what the detector calls a span, so that no
# word's soft edge is cut from its clip (the detector's own default is 0.1 s).
PAD_SEC = 0.1
# The prompt: the end of the dialogue so far; a few hundred characters set the context.
PROMPT_CHARS = 400
# Clips are cut from the call decoded once in memory (16 kHz int16: 3.8 MB per stereo
# minute) up to this length; a longer call's clips are each cut by ffmpeg from the file.
IN_MEMORY_SEC = 1800.0
CLIP_RATE = 16_000


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
    request when it is the same side's, the other side said nothing after that request's
    end, and the request stays under `max_request_sec`; spans under `min_sec` are dropped."""
    spans = sorted(
        (start, end, side)
        for side, side_spans in enumerate(spans_by_side)
        for start, end in side_spans
        if end - start >= min_sec
    )
    spoke_until = [0.0] * len(spans_by_side)  # the end of each side's latest speech so far
    groups: list[TurnGroup] = []
    for start, end, side in spans:
        last = groups[-1] if groups else None
        others_since = any(
            until > last.end for other, until in enumerate(spoke_until) if other != side
        ) if last else True  # fmt: skip
        spoke_until[side] = max(spoke_until[side], end)
        if last and last.side == side and not others_since and end - last.start <= max_request_sec:
            groups[-1] = TurnGroup(side, last.start, max(last.end, end))
            continue
        # Longer than a request may be (a monologue without a pause): cut into equal parts.
        count = max(1, math.ceil((end - start) / max_request_sec))
        step = (end - start) / count
        groups += [TurnGroup(side, start + i * step, start + (i + 1) * step) for i in range(count)]
    return groups


def clips(
    path: Path, info: audio.AudioInfo, groups: Sequence[TurnGroup], out_dir: Path
) -> Iterator[tuple[TurnGroup, Path]]:
    """Each group's span of its own channel as 16 kHz mono FLAC (lossless), one at a time:
    cut in process from the call decoded once, or by ffmpeg for a call of hours."""
    if info.duration_sec > IN_MEMORY_SEC:
        for number, group in enumerate(groups):
            out = out_dir / f"turn_{number:04d}.flac"
            channel = group.side
            yield (
                group,
                audio.encode_flac_piece(
                    path, out, start=group.start, duration=group.duration, channel=channel
                ),
            )
        return
    raw = audio.decode_pcm(path, sample_rate=CLIP_RATE, channels=2)
    samples = np.frombuffer(raw, dtype=np.int16).reshape(-1, 2)
    for number, group in enumerate(groups):
        first, last = int(group.start * CLIP_RATE), math.ceil(group.end * CLIP_RATE)
        out = out_dir / f"turn_{number:04d}.flac"
        soundfile.write(str(out), samples[first:last, group.side], CLIP_RATE, format="FLAC")
        yield group, out


def prompt_before(texts: Sequence[str]) -> str:
    """The end of the dialogue so far, whole words, as the next request's prompt."""
    text = " ".join(t for t in texts if t)
    if len(text) <= PROMPT_CHARS:
        return text
    cut = text[-PROMPT_CHARS:]
    return cut.split(" ", 1)[1] if " " in cut else cut
