"""A transcription answer, whatever the server: OpenAI `verbose_json` / `json` /
`diarized_json`, speaches, LocalAI (old and new), whisper.cpp; as one `SttResult`.

Shapes: docs/specs/stt_wire.md §2 (OpenAI) and §5 (compatible servers), payloads in
docs/specs/payloads/stt/. Pure functions of the parsed JSON body.

An answer is taken only in the format asked for (`check_answer`): a JSON object whose fields
have the types the format gives them, `text` always a string, and, from OpenAI's own models,
the fields OpenAI's format promises (§2.1-2.5). Anything else (a proxy's HTML page, cut-off
JSON, `{"text": null}`) is a `BadAnswer`: never a transcript, never billed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calltexts_assets.clients.languages import first_code, iso_code

# LocalAI <= 4.1 answers Go durations: integer nanoseconds (§5.2). No call lasts 11 days,
# so a time past a million "seconds" is one.
_NANOSECONDS_ABOVE = 1e6


class BadAnswer(ValueError):
    """A 200 answer that is not the transcription asked for."""


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
    # The body as the server answered it (parsed JSON, or text): kept with the recording.
    body: Any = field(default=None, compare=False, repr=False)


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


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _expect(body: Mapping[str, Any], key: str, check: Any, what: str, where: str = "") -> None:
    if key in body and body[key] is not None and not check(body[key]):
        raise BadAnswer(f"{where}{key!r} is {_kind(body[key])}, not {what}")


def _is_number(value: Any) -> bool:
    return _number(value) is not None


def _check_items(body: Mapping[str, Any], key: str, timed: bool) -> None:
    items = body.get(key)
    if items is None:
        return
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise BadAnswer(f"{key!r} is {_kind(items)}, not a list of objects")
    for n, item in enumerate(items):
        where = f"{key}[{n}]."
        if timed:  # whisper.cpp may leave a word untimed; a segment always has its times
            for edge in ("start", "end"):
                if not _is_number(item.get(edge)):
                    raise BadAnswer(f"{where}{edge} is {_kind(item.get(edge))}, not a number")
        for name in ("start", "end"):
            _expect(item, name, _is_number, "a number", where)
        for name in ("text", "word"):
            _expect(item, name, lambda v: isinstance(v, str), "a string", where)


# What OpenAI's formats promise besides `text` (§2.1-2.5); compatible servers leave some out
# (LocalAI <= 4.1 has no duration or language, §5.4), so these hold for OpenAI's models only.
_PROMISED = {"verbose_json": ("duration", "language"), "diarized_json": ("duration", "segments")}


def check_answer(body: Any, response_format: str, *, openai_model: bool) -> Mapping[str, Any]:
    """`body` (the decoded JSON) if it is a transcription in `response_format`; BadAnswer
    naming what is wrong if not."""
    if not isinstance(body, Mapping):
        raise BadAnswer(f"a transcription answer is a JSON object, not {_kind(body)}")
    if not isinstance(body.get("text"), str):
        raise BadAnswer(f"'text' is {_kind(body.get('text'))}, not a string")
    missing = [k for k in _PROMISED.get(response_format, ()) if body.get(k) is None]
    if openai_model and missing:
        raise BadAnswer(f"{response_format} without {', '.join(map(repr, missing))}")
    _expect(body, "duration", lambda v: _is_number(v) and v >= 0, "a duration in seconds")
    _expect(body, "language", lambda v: isinstance(v, str), "a string")
    _expect(body, "usage", lambda v: isinstance(v, Mapping), "an object")
    _expect(body, "languages", lambda v: isinstance(v, list), "a list")
    _check_items(body, "segments", timed=True)
    _check_items(body, "words", timed=False)
    usage = body.get("usage") or {}
    if usage.get("type") == "duration":
        _expect(usage, "seconds", lambda v: _is_number(v) and v >= 0, "seconds", "usage.")
    for name in ("input_tokens", "output_tokens"):
        _expect(usage, name, _is_number, "a number", "usage.")
    return body


def parse_transcription(body: Any, *, duration_hint: float | None = None) -> SttResult:
    """`body` is the decoded JSON (or the text of a `text` answer). `duration_hint` (the
    audio's length from its header) spans an answer without times."""
    if isinstance(body, str):
        body = {"text": body}
    if not isinstance(body, Mapping):
        raise BadAnswer(f"a transcription answer is a JSON object, not {_kind(body)}")
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
