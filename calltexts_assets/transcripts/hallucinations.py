"""Whisper's text on silence: dropped before it reaches a transcript, and counted.

Three rules (sources: docs/specs/stt_wire.md §6):
- Whisper's own: a segment with `no_speech_prob` > 0.6 and `avg_logprob` < -1.0 is silence
  (openai/whisper transcribe.py; whisper.cpp and faster-whisper use the same 0.6).
- The recording's: a segment over audio in which no channel reaches the speech floor
  (with half a second of margin for imprecise times) has nothing to transcribe.
- Known phrases. Subtitle credits and the like no caller says are removed wherever they
  appear (Whisper often appends one to a real utterance); short phrases a caller may well
  say ("Спасибо.") only when they are a whole segment Whisper itself doubts (`no_speech_prob`
  over 0.6).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from calltexts_assets.clients.whisper import Segment

NO_SPEECH_PROB = 0.6
LOGPROB_THRESHOLD = -1.0
QUIET_MARGIN_SEC = 0.5

# From public Whisper blocklists (Vexa-ai/vexa ru.txt and others, §6.1) and server markers
# (whisper.cpp's "[BLANK_AUDIO]" in LocalAI's answers, its " [SPEAKER_TURN]").
CREDITS = (
    "Продолжение следует",
    "Субтитры создавал DimaTorzok", "Субтитры сделал DimaTorzok", "Субтитры делал DimaTorzok",
    "Субтитры добавил DimaTorzok", "Субтитры подогнал «Симон»",
    "Спасибо за субтитры Алексею Дубровскому", "Спасибо за субтитры",
    "Редактор субтитров А.Синецкая Корректор А.Егорова",
    "Редактор субтитров А.Семкин Корректор А.Егорова",
    "Редактор субтитров А.Синецкая Корректор А.Кулакова",
    "Субтитры в Киеве", "Спасибо за просмотр", "Подписывайтесь на канал",
    "ДИНАМИЧНАЯ МУЗЫКА",
    "Thanks for watching", "Thank you for watching", "Please subscribe to our channel",
    "Subtitles by the Amara.org community", "Sottotitoli creati dalla comunità Amara.org",
    "[BLANK_AUDIO]", "[SPEAKER_TURN]",
)  # fmt: skip
AMBIGUOUS = ("Спасибо", "Спасибо за внимание", "Пока", "Удачи", "и")


def _normal(text: str) -> str:
    """Lower case, ё as е (one character for one: positions stay those of the text)."""
    return text.lower().replace("ё", "е")


def _pattern(phrase: str) -> str:
    tokens = re.findall(r"\w+", _normal(phrase))
    return r"(?<!\w)" + r"\W+".join(map(re.escape, tokens)) + r"(?!\w)"


_CREDITS = re.compile(r"[\s«\[(]*(?:" + "|".join(map(_pattern, CREDITS)) + r")[\s.!…»\])]*")
_AMBIGUOUS = re.compile(r"\W*(?:" + "|".join(map(_pattern, AMBIGUOUS)) + r")\W*")
_WORDLESS = re.compile(r"\W*")


@dataclass(frozen=True)
class Filtered:
    segments: tuple[Segment, ...]
    dropped: int  # segments dropped plus phrases removed from kept ones


def strip_credits(text: str) -> tuple[str, int]:
    """`text` without the known credit phrases, and how many were removed."""
    found = list(_CREDITS.finditer(_normal(text)))
    if not found:
        return text, 0
    kept, at = [], 0
    for match in found:
        kept.append(text[at : match.start()])
        at = match.end()
    kept.append(text[at:])
    return " ".join(part.strip() for part in kept if part.strip()), len(found)


def _doubted(segment: Segment) -> bool:
    return segment.no_speech_prob is not None and segment.no_speech_prob > NO_SPEECH_PROB


def _whisper_silence(segment: Segment) -> bool:
    return (
        _doubted(segment)
        and segment.avg_logprob is not None
        and segment.avg_logprob < LOGPROB_THRESHOLD
    )


def drop_hallucinations(
    segments: Sequence[Segment], *, quiet: Callable[[float, float], bool] | None = None
) -> Filtered:
    """The segments worth keeping. `quiet(start, end)` says whether the recording holds no
    speech there (None: times are not to be trusted, e.g. a json answer's one segment)."""
    kept: list[Segment] = []
    dropped = 0
    for segment in segments:
        if _whisper_silence(segment) or (
            quiet is not None
            and quiet(segment.start - QUIET_MARGIN_SEC, segment.end + QUIET_MARGIN_SEC)
        ):
            dropped += 1
            continue
        text, removed = strip_credits(segment.text)
        dropped += removed
        whole = _normal(text)
        if _WORDLESS.fullmatch(whole) or (_doubted(segment) and _AMBIGUOUS.fullmatch(whole)):
            dropped += not removed  # a segment that was only credits counts once
            continue
        kept.append(replace(segment, text=text) if removed else segment)
    return Filtered(tuple(kept), dropped)
