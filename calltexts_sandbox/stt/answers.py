"""What the sandbox STT answers, server by server and model by model: the bodies (and errors)
of OpenAI's whisper-1, gpt-4o-transcribe family, gpt-transcribe and gpt-4o-transcribe-diarize,
of a speaches server and of a LocalAI server, built from the words the emulator heard.

Every shape is a documented one (docs/specs/stt_wire.md §2, §4, §5; payloads in
docs/specs/payloads/stt/). Where the documentation is silent the emulator's choice is
written next to it: gpt-4o models silently cut their text at the 2,000-token output cap;
tokens are counted as one per 3 characters of text.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from calltexts_assets.clients.languages import ENGLISH_NAMES
from calltexts_assets.clients.stt_models import GPT4O_MAX_SEC
from calltexts_sandbox.calls.tones import HeardWord

OPENAI, SPEACHES, LOCALAI = "openai", "speaches", "localai"
FLAVOURS = (OPENAI, SPEACHES, LOCALAI)
WHISPER_1, DIARIZE, GPT_TRANSCRIBE = "whisper-1", "gpt-4o-transcribe-diarize", "gpt-transcribe"
TOKEN_MODELS = frozenset({
    "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-mini-transcribe-2025-03-20",
})  # fmt: skip
OPENAI_MODELS = TOKEN_MODELS | {WHISPER_1, GPT_TRANSCRIBE, DIARIZE}
FORMATS = {
    WHISPER_1: ("json", "text", "verbose_json"),
    DIARIZE: ("json", "text", "diarized_json"),
    **{model: ("json", "text") for model in (*TOKEN_MODELS, GPT_TRANSCRIBE)},
}
# GET /v1/models' `shutdown_date` as OpenAI's deprecations page announces it
# (docs/specs/openai_models.md §2); None: no date announced (the field is null).
_TRANSCRIBE_SHUTDOWN, _CHAT_SHUTDOWN = "2027-02-26", "2027-01-14"
SHUTDOWN_DATES: dict[str, str | None] = {
    **{model: _TRANSCRIBE_SHUTDOWN for model in (*TOKEN_MODELS, WHISPER_1, DIARIZE)},
    GPT_TRANSCRIBE: None,
    "gpt-4o-mini": _CHAT_SHUTDOWN,
    "gpt-4o-mini-2024-07-18": _CHAT_SHUTDOWN,
    "gpt-6-luna": None,
}
COMPATIBLE_MODELS = {SPEACHES: ("Systran/faster-whisper-small",), LOCALAI: ("ggml-whisper-base",)}
MAX_OUTPUT_TOKENS = 2000
DIARIZE_CHUNKING_FROM_SEC = 30.0  # chunking_strategy is required above this (§3.3)
SEGMENT_PAUSE_SEC = 0.6  # longer than any gap inside a scripted turn, shorter than a pause
SEGMENT_MAX_SEC = 30.0  # Whisper works in 30 s windows; no segment is longer
DEFAULT_LANGUAGE = "ru"
# Whisper on silence (§6.1): the classic Russian line, and a credit appended to real speech.
SILENCE_TEXT = "Продолжение следует..."
APPENDED_CREDIT = "Субтитры создавал DimaTorzok"


def flavour_of(model: str, default: str) -> str:
    """speaches serves faster-whisper models by their Hugging Face ids, LocalAI its ggml files;
    anything else is the configured flavour."""
    if model.startswith("Systran/"):
        return SPEACHES
    if model.startswith("ggml-"):
        return LOCALAI
    return default


class Refusal(Exception):
    """An error answer: status and the body the server would send."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def refusal(
    flavour: str,
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> Refusal:
    if flavour == SPEACHES:  # FastAPI's HTTPException
        return Refusal(status, {"detail": message})
    if flavour == LOCALAI:  # schema.APIError: an integer code, an empty type
        return Refusal(status, {"error": {"code": status, "message": message, "type": ""}})
    return Refusal(
        status, {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


@dataclass(frozen=True)
class Request:
    flavour: str
    model: str
    response_format: str
    granularities: tuple[str, ...]
    language: str  # the ISO code asked for, "" when none
    chunking_strategy: str
    prompt: str
    languages: tuple[str, ...] = ()  # gpt-transcribe's hint (`languages[]`)
    keywords: tuple[str, ...] = ()  # gpt-transcribe's literal terms (`keywords[]`)


def model_list(flavour: str, shutdowns: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """The `data` of GET /v1/models: OpenAI's entries carry `shutdown_date` (§1), compatible
    servers' do not."""
    if flavour != OPENAI:
        return [
            {"id": model, "object": "model", "created": 0, "owned_by": flavour}
            for model in COMPATIBLE_MODELS[flavour]
        ]
    return [
        {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "system",
         "shutdown_date": date}
        for model, date in sorted(shutdowns.items())
    ]  # fmt: skip


def check_request(req: Request) -> None:
    """What a server refuses before it listens (model, format, parameters); raises Refusal."""
    if req.flavour != OPENAI:
        return  # compatible servers take any format they know and ignore the rest
    if req.model not in OPENAI_MODELS:
        message = f"The model `{req.model}` does not exist or you do not have access to it."
        raise refusal(OPENAI, 404, message, code="model_not_found")
    formats = FORMATS[req.model]
    if req.response_format not in formats:
        message = (
            f"response_format '{req.response_format}' is not compatible with model "
            f"'{req.model}'. Use 'json' or 'text' instead."
        )
        raise refusal(OPENAI, 400, message, code="unsupported_value", param="response_format")
    if req.model == WHISPER_1 and req.granularities and req.response_format != "verbose_json":
        message = "timestamp_granularities requires response_format=verbose_json"
        raise refusal(OPENAI, 400, message, param="timestamp_granularities")
    if req.model == DIARIZE and req.prompt:
        raise refusal(OPENAI, 400, "Prompt is not supported for diarization models")
    if req.model == GPT_TRANSCRIBE:
        _check_hints(req)


# A keyword is a single-line literal without `<` or `>` (openai-cookbook, "Migrate from
# Whisper to GPT-Transcribe" §3); anything else rejects the whole request.
KEYWORD_FORBIDDEN = re.compile(r"[<>\r\n]")


def _check_hints(req: Request) -> None:
    """gpt-transcribe's `languages` / `keywords` (docs/specs/openai_models.md §3). The
    cookbook says what is refused, not in which words: the messages are the emulator's."""
    if req.language and req.languages:
        message = "Specify either 'language' or 'languages', not both."
        raise refusal(OPENAI, 400, message, code="invalid_value", param="languages")
    for code in req.languages:
        if not re.fullmatch(r"[a-z]{2}", code):
            message = f"Invalid language '{code}'. Languages must be given in ISO-639-1 format."
            raise refusal(OPENAI, 400, message, code="invalid_value", param="languages")
    for keyword in req.keywords:
        if not keyword.strip() or KEYWORD_FORBIDDEN.search(keyword):
            message = (
                f"Invalid keyword {keyword!r}: keywords must be single-line literals without "
                "'<' or '>'."
            )
            raise refusal(OPENAI, 400, message, code="invalid_value", param="keywords")


def check_heard(req: Request, duration: float) -> None:
    """What a server refuses once it knows the audio's length."""
    if req.flavour != OPENAI:
        return
    if (req.model in TOKEN_MODELS or req.model == DIARIZE) and duration > GPT4O_MAX_SEC:
        message = (
            f"audio duration {duration} seconds is longer than {GPT4O_MAX_SEC:g} seconds which "
            "is the maximum for this model"
        )
        raise refusal(OPENAI, 400, message, code="invalid_value")
    if req.model == DIARIZE and duration > DIARIZE_CHUNKING_FROM_SEC and not req.chunking_strategy:
        message = "chunking_strategy is required for diarization models"
        raise refusal(OPENAI, 400, message, code="invalid_value", param="chunking_strategy")


def group_segments(words: Sequence[HeardWord]) -> list[list[HeardWord]]:
    """Words into segments: a new one at each pause, and before 30 s are exceeded."""
    groups: list[list[HeardWord]] = []
    reach = -math.inf  # end of the latest word so far (cross-talk: words overlap)
    for word in words:
        if (
            not groups
            or word.start - reach >= SEGMENT_PAUSE_SEC
            or word.end - groups[-1][0].start > SEGMENT_MAX_SEC
        ):
            groups.append([word])
        else:
            groups[-1].append(word)
        reach = max(reach, word.end)
    return groups


def output_tokens(text: str) -> int:
    """The emulator's token count: one per 3 characters (o200k takes ~3-4 of Cyrillic)."""
    return math.ceil(len(text) / 3)


def _capped(words: Sequence[HeardWord]) -> list[HeardWord]:
    """The words whose text fits MAX_OUTPUT_TOKENS: a gpt-4o model stops there, silently."""
    kept, length = [], -1
    for word in words:
        length += len(word.text) + 1
        if output_tokens("x" * length) > MAX_OUTPUT_TOKENS:
            break
        kept.append(word)
    return kept


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any] | str
    billed_seconds: int | None  # usage {type: duration}
    tokens: tuple[int, int] | None  # usage {type: tokens}
    text: str
    invented: tuple[str, ...] = ()  # lines written over non-speech (speech calls)


def _segment(
    i: int, group: Sequence[HeardWord], text: str, *, silence: bool = False
) -> dict[str, Any]:
    return {
        "id": i,
        "seek": int(group[0].start // SEGMENT_MAX_SEC * 3000),  # 10 ms frames of its window
        "start": group[0].start,
        "end": max(w.end for w in group),
        "text": " " + text,  # Whisper's leading space
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": -1.35 if silence else -0.25,
        "compression_ratio": 0.8 if silence else 1.1,
        "no_speech_prob": 0.93 if silence else 0.01,
    }


def _hallucinated(duration: float, words: Sequence[HeardWord]) -> HeardWord:
    """Where Whisper would write on silence: the longest pause, else the tail."""
    edges = [0.0, *[e for w in words for e in (w.start, w.end)], duration]
    gaps = [(b - a, a, b) for a, b in zip(edges[::2], edges[1::2], strict=False)]
    _, start, end = max(gaps, default=(0.0, 0.0, duration))
    return HeardWord(round(start, 3), round(max(end, start), 3), SILENCE_TEXT, None)


# Whisper over the non-speech it is sent (speech calls; docs/specs/sandbox_call_content.md §3):
# over a stretch of INVENT_MIN_SEC or more without words, a line. Over sound (music,
# ring-back, line noise) Whisper is sure of it (it does not take it for silence), in turn: a
# music tag, a subtitle credit, a repetition loop of the last words heard, the Russian
# closing line; over quiet, the silence line with Whisper's own doubt.
INVENT_MIN_SEC = 3.0
LOUD_MIN_SEC = 1.0  # of sound inside the stretch to call it sound, not silence
MUSIC_TAG = "ДИНАМИЧНАЯ МУЗЫКА"
CREDIT = "Субтитры сделал DimaTorzok"
LOOP_REPEATS = 3
_OVER_SOUND = ("tag", "credit", "loop", "closing")


@dataclass(frozen=True)
class Invention:
    start: float
    end: float
    text: str
    silence: bool  # Whisper's own signs of silence (no_speech_prob 0.93, avg_logprob -1.35)


def inventions(
    words: Sequence[HeardWord], duration: float, noises: Sequence[tuple[float, float]]
) -> list[Invention]:
    """The lines a Whisper-like model writes over the stretches without words it is sent."""
    words = sorted(words, key=lambda w: (w.start, w.end))
    edges = [0.0, *[e for w in words for e in (w.start, w.end)], duration]
    made: list[Invention] = []
    for gap_start, gap_end in zip(edges[::2], edges[1::2], strict=False):
        # Whisper decodes 30 s windows: a line per window of the stretch
        a = gap_start
        while gap_end - a >= INVENT_MIN_SEC:
            b = min(gap_end, a + WINDOW_SEC)
            made.append(_invented(a, b, words, noises, duration))
            a = b
    return made


WINDOW_SEC = 30.0


def _invented(
    a: float,
    b: float,
    words: Sequence[HeardWord],
    noises: Sequence[tuple[float, float]],
    duration: float,
) -> Invention:
    sound = sum(max(0.0, min(b, y) - max(a, x)) for x, y in noises)
    start, end = round(a + 0.5, 3), round(min(b - 0.5, a + 3.0), 3)
    if sound < LOUD_MIN_SEC:
        return Invention(start, end, SILENCE_TEXT, True)
    # which habit: a pure function of where the stretch lies, so answers repeat exactly
    turn = int.from_bytes(hashlib.sha256(f"{a:.2f}:{duration:.2f}".encode()).digest()[:2], "big")
    kind = _OVER_SOUND[turn % len(_OVER_SOUND)]
    before = [w.text for w in words if w.end <= a][-3:]
    if kind == "loop" and before:
        return Invention(start, end, " ".join([" ".join(before)] * LOOP_REPEATS), False)
    text = {"tag": MUSIC_TAG, "closing": SILENCE_TEXT}.get(kind, CREDIT)
    return Invention(start, end, text, False)


def transcription(
    req: Request,
    words: Sequence[HeardWord],
    duration: float,
    *,
    hallucinate: bool,
    noises: Sequence[tuple[float, float]] | None = None,
) -> Answer:
    """The answer to a transcription request, `words` being what the audio holds; with
    `noises` (speech calls) a Whisper-like model also invents over non-speech."""
    words = sorted(words, key=lambda w: (w.start, w.end))
    whisper_like = req.model in (WHISPER_1,) or req.flavour != OPENAI
    if noises is not None:
        made = inventions(words, duration, noises) if whisper_like else []
        return _with_inventions(req, words, duration, made)
    groups = [[w.text for w in g] for g in group_segments(words)]
    texts = [" ".join(g) for g in groups]
    silent_stretch = None
    if whisper_like and (hallucinate or not words):  # Whisper writes on silence
        silent_stretch = _hallucinated(duration, words)
        if hallucinate and texts:
            texts[-1] += f" {APPENDED_CREDIT}"
    text = " ".join(texts + ([SILENCE_TEXT] if silent_stretch else []))
    billed = math.ceil(duration)
    language = req.language or (req.languages[0] if req.languages else DEFAULT_LANGUAGE)
    if req.flavour == LOCALAI:
        return Answer(_localai(req, words, texts, text, silent_stretch), None, None, text)
    if req.flavour == SPEACHES:
        return Answer(
            _speaches(req, words, texts, text, duration, silent_stretch), None, None, text
        )
    if req.model in TOKEN_MODELS:
        capped = " ".join(w.text for w in _capped(words))
        tokens = (math.ceil(duration * 10), output_tokens(capped))
        usage = {"type": "tokens", "input_tokens": tokens[0], "output_tokens": tokens[1],
                 "total_tokens": sum(tokens),
                 "input_token_details": {"audio_tokens": tokens[0], "text_tokens": 0}}  # fmt: skip
        body: dict[str, Any] | str = {"text": capped, "usage": usage}
        return Answer(capped if req.response_format == "text" else body, None, tokens, capped)
    usage = {"type": "duration", "seconds": billed}
    if req.response_format == "text":
        return Answer(text + "\n", billed, None, text)
    if req.model == DIARIZE and req.response_format == "diarized_json":
        return Answer(_diarized(words, duration, usage), billed, None, text)
    if req.response_format == "json":
        body = {"text": text, "usage": usage}
        if req.model == GPT_TRANSCRIBE:
            body["languages"] = [{"code": language}] if words else []
        return Answer(body, billed, None, text)
    segments = _segments(words, texts, silent_stretch)
    body = {
        "task": "transcribe",
        "language": ENGLISH_NAMES.get(language, language),  # whisper-1 names it
        "duration": round(duration, 3),
        "text": text,
        "segments": segments,
        "usage": usage,
    }
    if "word" in req.granularities:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in words]
    return Answer(body, billed, None, text)


def _with_inventions(
    req: Request, words: Sequence[HeardWord], duration: float, made: Sequence[Invention]
) -> Answer:
    """The answer with invented lines among the heard ones, in time order: as text, as
    segments (the invented with their own signs) and as words spread over their stretch."""
    spoken = [(g[0].start, " ".join(w.text for w in g), g, False) for g in group_segments(words)]
    fake = []
    for line in made:
        tokens = line.text.split()
        step = (line.end - line.start) / len(tokens)
        group = [
            HeardWord(
                round(line.start + i * step, 3), round(line.start + (i + 1) * step, 3), t, None
            )
            for i, t in enumerate(tokens)
        ]
        fake.append((line.start, line.text, group, line.silence))
    lines = sorted([*spoken, *fake], key=lambda line: line[0])
    text = " ".join(line[1] for line in lines)
    invented = tuple(line.text for line in made)
    plain = transcription(req, words, duration, hallucinate=False)
    if not isinstance(plain.body, dict) or "text" not in plain.body or req.flavour != OPENAI:
        if isinstance(plain.body, str):
            return Answer(text + ("\n" if req.response_format == "text" else ""),
                          plain.billed_seconds, plain.tokens, text, invented)  # fmt: skip
        body = dict(plain.body)
        body["text"] = text
        if "segments" in body:
            body["segments"] = _invented_segments(lines, localai=req.flavour == LOCALAI)
        if body.get("words") is not None:
            body["words"] = [
                {"word": (" " if req.flavour == SPEACHES else "") + w.text, "start": w.start,
                 "end": w.end}
                for line in lines for w in line[2]
            ]  # fmt: skip
        return Answer(body, plain.billed_seconds, plain.tokens, text, invented)
    body = dict(plain.body)
    body["text"] = text
    if "segments" in body:
        body["segments"] = _invented_segments(lines, localai=False)
    if "words" in body:
        body["words"] = [
            {"word": w.text, "start": w.start, "end": w.end} for line in lines for w in line[2]
        ]
    return Answer(body, plain.billed_seconds, plain.tokens, text, invented)


def _invented_segments(lines: Sequence[Any], *, localai: bool) -> list[dict[str, Any]]:
    segments = [
        _segment(i, group, text, silence=silence)
        for i, (_, text, group, silence) in enumerate(lines)
    ]
    if localai:
        return [
            {"id": s["id"], "start": round(s["start"] * 1e9), "end": round(s["end"] * 1e9),
             "text": s["text"], "tokens": []}
            for s in segments
        ]  # fmt: skip
    return segments


def _segments(
    words: Sequence[HeardWord], texts: Sequence[str], silent: HeardWord | None
) -> list[dict[str, Any]]:
    segments = [
        _segment(i, g, t) for i, (g, t) in enumerate(zip(group_segments(words), texts, strict=True))
    ]
    if silent is not None:
        segments.append(_segment(len(segments), [silent], SILENCE_TEXT, silence=True))
        segments.sort(key=lambda s: s["start"])
        for i, segment in enumerate(segments):
            segment["id"] = i
    return segments


def _speaches(
    req: Request,
    words: Sequence[HeardWord],
    texts: Sequence[str],
    text: str,
    duration: float,
    silent: HeardWord | None,
) -> dict[str, Any] | str:
    """speaches (§5.1): openai-python's types dumped by pydantic; the language a code."""
    if req.response_format == "text":
        return text
    if req.response_format != "verbose_json":
        return {"text": text, "logprobs": None, "usage": None}
    with_words = "word" in req.granularities
    return {
        "language": req.language or DEFAULT_LANGUAGE,
        "duration": round(duration, 3),
        "text": text,
        "segments": _segments(words, texts, silent),
        "words": [{"word": " " + w.text, "start": w.start, "end": w.end} for w in words]
        if with_words
        else None,
        "usage": None,
    }


def _localai(
    req: Request,
    words: Sequence[HeardWord],
    texts: Sequence[str],
    text: str,
    silent: HeardWord | None,
) -> dict[str, Any] | str:
    """LocalAI <= 4.1 (§5.2): segments with Go durations (integer nanoseconds), no language,
    no duration; `json` the text alone."""
    if req.response_format == "text":
        return text
    if req.response_format == "json":
        return {"text": text}
    segments = [
        {"id": s["id"], "start": round(s["start"] * 1e9), "end": round(s["end"] * 1e9),
         "text": s["text"], "tokens": []}
        for s in _segments(words, texts, silent)
    ]  # fmt: skip
    return {"segments": segments, "text": text}


def _diarized(words: Sequence[HeardWord], duration: float, usage: dict[str, Any]) -> dict[str, Any]:
    """diarized_json (§2.5): speakers A, B... in order of appearance; a stereo upload's side
    is a voice, a mono one is heard as one voice (the sandbox's tones all sound alike)."""
    labels: dict[int | None, str] = {}
    segments: list[dict[str, Any]] = []
    for group in group_segments(words):
        for word in group:
            label = labels.setdefault(word.side, "ABCDEFGH"[len(labels)])
            last = segments[-1] if segments else None
            if (
                last is not None
                and last["speaker"] == label
                and word.start - last["end"] < SEGMENT_PAUSE_SEC
            ):
                last["text"] += " " + word.text
                last["end"] = max(last["end"], word.end)
                continue
            number = f"seg_{len(segments) + 1:03d}"
            segments.append(
                {"type": "transcript.text.segment", "id": number, "start": word.start,
                 "end": word.end, "text": word.text, "speaker": label}
            )  # fmt: skip
    text = "\n".join(f"{s['speaker']}: {s['text']}" for s in segments)
    return {
        "task": "transcribe",
        "duration": round(duration, 3),
        "text": text,
        "segments": segments,
        "usage": usage,
    }
