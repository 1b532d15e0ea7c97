"""Dialogue lines from what the STT answered: a new line wherever the speaker changes, and
at every segment of the answer.

Roles come from words (their times are precise), text from segments: Whisper's words carry
no punctuation or case, its segments do. Each segment's text is matched token by token to
the words that fall in it, so every token takes the role of its word.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from calltexts_assets.clients.whisper import Segment, Word

WORD_SLACK_SEC = 0.5  # a word this close to a segment belongs to it


@dataclass(frozen=True)
class DialogueLine:
    start: float  # seconds from the start of the recording
    speaker: str  # role key: "operator", "client", "speaker" or "speaker:<label>"
    text: str
    end: float = 0.0


def _norm(token: str) -> str:
    return re.sub(r"\W+", "", token.lower().replace("ё", "е"))


def segment_lines(segments: Sequence[Segment], roles: Sequence[str]) -> list[DialogueLine]:
    """One line per segment, `roles[i]` speaking segment i."""
    return [
        DialogueLine(round(s.start, 3), role, s.text, round(s.end, 3))
        for s, role in zip(segments, roles, strict=True)
    ]


def _words_by_segment(segments: Sequence[Segment], words: Sequence[Word]) -> list[list[int]]:
    """Indices of the words whose middle lies in each segment (or within WORD_SLACK_SEC of
    it; segments sorted by start); a word belongs to one segment at most."""
    owned: list[list[int]] = [[] for _ in segments]
    starts = [s.start for s in segments]
    for k, word in enumerate(words):
        middle = (word.start + word.end) / 2
        at = bisect.bisect_right(starts, middle)
        near = range(max(0, at - 2), min(len(segments), at + 1))
        distance, best = min(
            ((max(segments[i].start - middle, middle - segments[i].end, 0.0), i) for i in near),
            default=(float("inf"), -1),
        )
        if distance <= WORD_SLACK_SEC:
            owned[best].append(k)
    return owned


def _token_words(tokens: list[str], words: list[str]) -> list[int | None]:
    """For each text token, the index of the word it is (None: no word matched it)."""
    matched: list[int | None] = [None] * len(tokens)
    matcher = SequenceMatcher(None, tokens, words, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for offset in range(i2 - i1):
                matched[i1 + offset] = j1 + offset
    return matched


def _segment_split(
    segment: Segment, own_role: str, words: Sequence[Word], roles: Sequence[str]
) -> list[DialogueLine]:
    """One segment's text as lines, `words` (with their `roles`) being the segment's."""
    tokens = segment.text.split()
    matched = _token_words([_norm(t) for t in tokens], [_norm(w.text) for w in words])
    role = next((roles[m] for m in matched if m is not None), own_role)
    groups: list[tuple[str, list[str], list[Word]]] = []
    for token, m in zip(tokens, matched, strict=True):
        role = roles[m] if m is not None else role
        if not groups or groups[-1][0] != role:
            groups.append((role, [], []))
        groups[-1][1].append(token)
        if m is not None:
            groups[-1][2].append(words[m])
    lines: list[DialogueLine] = []
    edge = segment.start
    for role, texts, timed in groups:
        start = timed[0].start if timed else edge
        end = timed[-1].end if timed else segment.end
        lines.append(DialogueLine(round(start, 3), role, " ".join(texts), round(end, 3)))
        edge = end
    return lines


def word_lines(
    segments: Sequence[Segment],
    segment_roles: Sequence[str],
    words: Sequence[Word],
    word_roles: Sequence[str],
) -> list[DialogueLine]:
    """Lines of segment text, split where the speaker of its words changes. A token no word
    matched takes the role of the token before it (the first: the first matched word's, or
    the segment's own role)."""
    lines: list[DialogueLine] = []
    owners = _words_by_segment(segments, words)
    for segment, own_role, owned in zip(segments, segment_roles, owners, strict=True):
        seg_words = [words[k] for k in owned]
        seg_roles = [word_roles[k] for k in owned]
        lines += _segment_split(segment, own_role, seg_words, seg_roles)
    return lines
