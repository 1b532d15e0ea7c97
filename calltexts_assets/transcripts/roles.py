"""Who said it: each word (or segment) of a stereo call given to a side by the energy of the
two channels over its time span. Bitrix24 records the operator on the left, the client on
the right; the file goes to the STT once, as it is, and the STT's times are laid over the
channels' loudness measured here.

The rule, per span (a word, or a segment when the server gives no words):
1. Its *own* time is its span minus the spans of the other words that overlap it. Over its
   own time the louder channel said it. Echo of one side on the other channel is quieter
   than the side itself, so it never wins.
2. A word with no own time lies wholly inside another (cross-talk: "да" while the other side
   talks). If both channels carry speech over it (each within CROSSTALK_DB of the louder),
   it belongs to the side the enclosing word does not; if only one does, to that one.
3. A word over which no channel reaches the speech floor (times a little off, or a word the
   filters let through) takes the side of the word before it (else the one after).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from calltexts_assets.audio.envelope import SPEECH_FLOOR_DBFS, Envelope

CROSSTALK_DB = 12.0  # a channel this far below the louder one is echo or leakage, not a voice
MIN_OWN_SEC = 0.03  # less of its own time than this: the word lies inside another


class Timed(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


def overlapping(spans: Sequence[Timed]) -> list[list[int]]:
    """For each span (sorted by start), the indices of the other spans that overlap it.

    Scans only the neighbourhood: forward while spans start before this one ends, backward
    while some earlier span (the running maximum of ends says) may still reach it."""
    reach = list(itertools.accumulate((s.end for s in spans), max))
    found: list[list[int]] = []
    for i, s in enumerate(spans):
        near = []
        j = i - 1
        while j >= 0 and reach[j] > s.start:
            if spans[j].end > s.start:
                near.append(j)
            j -= 1
        j = i + 1
        while j < len(spans) and spans[j].start < s.end:
            if spans[j].end > s.start:
                near.append(j)
            j += 1
        found.append(near)
    return found


def _own_parts(spans: Sequence[Timed], i: int, near: Sequence[int]) -> list[tuple[float, float]]:
    """[start, end) of span i minus the spans `near` it."""
    parts = [(spans[i].start, spans[i].end)]
    for a, b in sorted((spans[j].start, spans[j].end) for j in near):
        parts = [
            piece
            for lo, hi in parts
            for piece in ((lo, min(hi, a)), (max(lo, b), hi))
            if piece[1] - piece[0] > 1e-9
        ]
    return parts


def _levels(envelope: Envelope, parts: Sequence[tuple[float, float]]) -> np.ndarray:
    """dBFS per channel over the union of `parts` (power weighted by length)."""
    total = sum(b - a for a, b in parts)
    power = sum((envelope.power(a, b) * (b - a) for a, b in parts), np.zeros(envelope.channels))
    return 10 * np.log10(np.maximum(power / max(total, 1e-9), 1e-12))


def _overlap(a: Timed, b: Timed) -> float:
    return min(a.end, b.end) - max(a.start, b.start)


def attribute(
    spans: Sequence[Timed], envelope: Envelope, roles: Sequence[str] = ("operator", "client")
) -> list[str]:
    """The role of each span (sorted by start), channel c being `roles[c]`."""
    near = overlapping(spans)
    decided: list[str | None] = [None] * len(spans)
    inside: list[int] = []
    for i in range(len(spans)):
        parts = _own_parts(spans, i, near[i])
        if sum(b - a for a, b in parts) < MIN_OWN_SEC:
            inside.append(i)
            continue
        levels = _levels(envelope, parts)
        if levels.max() > SPEECH_FLOOR_DBFS:
            decided[i] = roles[int(np.argmax(levels[: len(roles)]))]
    for i in inside:
        levels = _levels(envelope, [(spans[i].start, spans[i].end)])[: len(roles)]
        active = (levels > SPEECH_FLOOR_DBFS) & (levels >= levels.max() - CROSSTALK_DB)
        if active.all():
            enclosing = sorted(near[i], key=lambda j: -_overlap(spans[i], spans[j]))
            around = [decided[j] for j in enclosing if decided[j] is not None]
            decided[i] = next((r for r in roles if around and r != around[0]), None)
        elif active.any():
            decided[i] = roles[int(np.argmax(levels))]
    return _fill(decided, roles[0])


def _fill(decided: list[str | None], default: str) -> list[str]:
    """Undecided spans take the previous decided role, else the next, else `default`."""
    out: list[str] = []
    last: str | None = None
    for i, role in enumerate(decided):
        if role is None:
            role = last or next((r for r in decided[i + 1 :] if r is not None), default)
        out.append(role)
        last = role
    return out
