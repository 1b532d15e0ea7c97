"""A transcription answer, whatever the server: OpenAI `verbose_json` / `json` /
`diarized_json`, speaches, LocalAI (old and new), whisper.cpp; as one `SttResult`.

Shapes: docs/specs/stt_wire.md §2 (OpenAI) and §5 (compatible servers), payloads in
docs/specs/payloads/stt/. Pure functions of the parsed JSON body.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from calltexts_assets.clients.languages import first_code, iso_code

# LocalAI <= 4.1 answers Go durations: integer nanoseconds (§5.2). No call lasts 11 days,
# so a time past a million "seconds" is one.
_NANOSECONDS_ABOVE = 1e6


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    no_speech_prob: float | None = None
    avg_logprob: float | None = None
    speaker: str | None = None  # diarized_json


@dataclass(frozen=True)
class SttResult:
    text: str
    language: str  # ISO 639-1 ("ru"), or "" when the server gave none we know
    duration: float | None  # as the server reports it
    segments: tuple[Segment, ...]
    words: tuple[Word, ...] = ()
    timed: bool = True  # segment/word times came from the server (json: one guessed span)
    billed_seconds: float | None = None  # usage {type: duration}: what the server bills
    tokens: tuple[int, int] | None = None  # usage {type: tokens}: (input, output)
    attempts: int = 1  # HTTP requests spent, retries included
    model: str = ""
    response_format: str = ""
    # gpt-transcribe answered `languages` (possibly []: no reliable detection, which is an
    # answer, not a gap for the hint to fill; openai_models.md §3)
    languages_reported: bool = False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _times(items: Iterable[Mapping[str, Any]]) -> list[float]:
    return [
        t for item in items for key in ("start", "end") if (t := _number(item.get(key))) is not None
    ]


def _time_scale(values: list[float]) -> float:
    return 1e-9 if values and max(values) > _NANOSECONDS_ABOVE else 1.0


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _words(items: list[Mapping[str, Any]], scale: float) -> list[Word]:
    words = []
    for item in items:
        start, end = _number(item.get("start")), _number(item.get("end"))
        text = str(item.get("word") if item.get("word") is not None else item.get("text") or "")
        if start is None or end is None or not text.strip():
            continue  # whisper.cpp may leave a word untimed: no use for roles
        words.append(Word(start * scale, max(end, start) * scale, text.strip()))
    return words


def _segments(items: list[Mapping[str, Any]], scale: float) -> list[Segment]:
    segments = []
    for item in items:
        start, end = _number(item.get("start")), _number(item.get("end"))
        text = str(item.get("text") or "").strip()
        if start is None or end is None or not text:
            continue
        speaker = item.get("speaker")
        segments.append(
            Segment(
                start * scale,
                max(end, start) * scale,
                text,
                no_speech_prob=_number(item.get("no_speech_prob")),
                avg_logprob=_number(item.get("avg_logprob")),
                speaker=str(speaker) if speaker not in (None, "") else None,
            )
        )
    return segments


def _usage(body: Mapping[str, Any]) -> tuple[float | None, tuple[int, int] | None]:
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return None, None
    if usage.get("type") == "duration":
        return _number(usage.get("seconds")), None
    if usage.get("type") == "tokens":
        input_tokens, output_tokens = (
            _number(usage.get("input_tokens")),
            _number(usage.get("output_tokens")),
        )
        if input_tokens is not None and output_tokens is not None:
            return None, (int(input_tokens), int(output_tokens))
    return None, None


def parse_transcription(body: Any, *, duration_hint: float | None = None) -> SttResult:
    """`body` is the decoded JSON (or the text of a `text` answer). `duration_hint` (the
    audio's length from its header) spans an answer without times."""
    if isinstance(body, str):
        body = {"text": body}
    if not isinstance(body, Mapping):
        raise ValueError(f"a transcription answer is a JSON object, got {type(body).__name__}")
    text = str(body.get("text") or "").strip()
    raw_segments = _dicts(body.get("segments"))
    raw_words = _dicts(body.get("words")) or [
        w for s in raw_segments for w in _dicts(s.get("words"))
    ]
    scale = _time_scale(_times(raw_segments) + _times(raw_words))
    segments = _segments(raw_segments, scale)
    words = _words(raw_words, scale)
    duration = _number(body.get("duration"))
    # An answer without any text has nothing to time: no speech is no missing word times.
    timed = bool(segments or words) or not text
    if not segments and not words and text:  # json: the text spans the audio
        span = duration if duration is not None else duration_hint or 0.0
        segments = [Segment(0.0, float(span), text)]
    languages = body.get("languages")
    codes = [str(item.get("code") or "") for item in _dicts(languages)]
    billed, tokens = _usage(body)
    return SttResult(
        text=text,
        language=iso_code(str(body.get("language") or "")) or first_code(codes),
        duration=duration,
        segments=tuple(segments),
        words=tuple(words),
        timed=timed,
        billed_seconds=billed,
        tokens=tokens,
        languages_reported=isinstance(languages, list),
    )
