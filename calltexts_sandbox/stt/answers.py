"""What the sandbox STT answers, server by server and model by model: the bodies (and errors)
of OpenAI's whisper-1, gpt-4o-transcribe family, gpt-transcribe and gpt-4o-transcribe-diarize,
of a speaches server and of a LocalAI server, built from the words the emulator heard.

Every shape is a documented one (docs/specs/stt_wire.md §2, §4, §5; payloads in
docs/specs/payloads/stt/). Where the documentation is silent the emulator's choice is
written next to it: gpt-4o models silently cut their text at the 2,000-token output cap;
tokens are counted as one per 3 characters of text.
"""

from __future__ import annotations

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


def transcription(
    req: Request, words: Sequence[HeardWord], duration: float, *, hallucinate: bool
) -> Answer:
    """The answer to a transcription request, `words` being what the audio holds."""
    words = sorted(words, key=lambda w: (w.start, w.end))
    whisper_like = req.model in (WHISPER_1,) or req.flavour != OPENAI
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
