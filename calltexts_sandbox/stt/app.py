"""An OpenAI-compatible speech-to-text (and chat) server for the sandbox.

It really listens to what it is sent: the uploaded audio is decoded a block at a time
(libsndfile, else ffmpeg) and the tones of `tones.py` are turned back into words, so the
text depends on what the client actually uploaded (which span, which channels), as it would
with real Whisper. A stereo file is heard downmixed, as Whisper hears it; the emulator also
knows which channel each word sounds on (the sandbox's ground truth of who said it).

It answers as the servers users run (`stt_answers.py`): OpenAI (whisper-1, the gpt-4o
family, gpt-transcribe, gpt-4o-transcribe-diarize), a speaches server, a LocalAI server;
chosen by `flavour` or by the model id. It counts what each request would be billed.

    emulator = SttEmulator(api_key="sk-test", faults=Faults(rate_limit=1))
    with serve_in_thread(emulator.app) as server:  # base_url = server.url + "/v1"
        ...
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from calltexts_assets.audio.decode import AudioError
from calltexts_assets.clients.chat import is_reasoning_model
from calltexts_assets.files.recording_formats import SNIFF_BYTES, sniff_format
from calltexts_sandbox.server import RunningServer, serve_in_thread
from calltexts_sandbox.stt import answers as answers
from calltexts_sandbox.stt.answers import Refusal, refusal
from calltexts_sandbox.stt.hearing import Heard, HeardCache, listen
from calltexts_sandbox.stt.summary import summary_reply

# What OpenAI reads by file name (§1.1); compatible servers read the content.
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
MAX_FILE_BYTES = 25 * 1024 * 1024  # 26,214,400: over it OpenAI answers 413 (§3.1)
# Extensions naming the same container as files.recording_formats' names.
_SAME_FORMAT = {"mpeg": "mp3", "mpga": "mp3", "oga": "ogg", "mp4": "m4a"}


@dataclass
class Faults:
    """Failures to inject; counts are consumed by the next matching requests in order."""

    rate_limit: int = 0  # answer 429 with retry-after this many times
    retry_after_sec: float = 1.0
    server_error: int = 0  # 500
    unavailable: int = 0  # 503
    timeout: int = 0  # hang (longer than the client's timeout), then 504
    hang_sec: float = 30.0
    bad_request_on: set[int] = field(default_factory=set)  # 1-based request numbers -> 400
    quota_exhausted: int = 0  # 429 insufficient_quota (billing: a client must not retry)
    quota_code: str = "insufficient_quota"  # or credit_balance_exhausted, *_spend_limit_exceeded
    hallucinate: int = 0  # Whisper writes on the silence of the next N transcriptions
    bad_answer: int = 0  # answer 200 with `bad_answer_kind` (BAD_ANSWERS) N times
    bad_answer_kind: str = "html"
    misreport_seconds: float = 0.0  # > 0: every answer's duration and usage.seconds say this
    # model -> the next N of its transcriptions come back unsure: every segment's avg_logprob
    # -1.35, below Whisper's -1 ("consider the logprobs failed", stt_wire §2.3), as on noise
    unsure: dict[str, int] = field(default_factory=dict)

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        coerced = {}  # JSON from /_sandbox/faults is untyped; all or nothing is applied
        for name, value in changes.items():
            current = getattr(self, name)
            coerced[name] = (
                {int(v) for v in value} if isinstance(current, set) else type(current)(value)
            )
        if coerced.get("bad_answer_kind", "html") not in BAD_ANSWERS:
            raise ValueError(f"bad_answer_kind is one of {sorted(BAD_ANSWERS)}")
        for name, value in coerced.items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["bad_request_on"] = sorted(self.bad_request_on)
        return data


# 200 answers that are no transcription: what a proxy or a broken server may send back.
BAD_ANSWERS: dict[str, tuple[str, str]] = {
    "html": (  # a proxy's login page (CHATGPT_PROXY_URL)
        "text/html; charset=utf-8",
        "<!DOCTYPE html><html><head><title>Sign in</title></head>"
        "<body><form action='/login'>Proxy authentication required</form></body></html>",
    ),
    "truncated": ("application/json", '{"text": "hello", "segments": ['),
    "null_text": ("application/json", '{"text": null}'),
    "wrong_types": (
        "application/json",
        '{"task": "transcribe", "language": "russian", "duration": "40.0", '
        '"text": "hello", "segments": "none"}',
    ),
    "missing_fields": ("application/json", '{"text": "hello", "segments": []}'),
}


def _misreported(answer: answers.Answer, seconds: float) -> answers.Answer:
    """The answer claiming `seconds` of audio: its duration and its bill (usage.seconds)."""
    if not isinstance(answer.body, dict):
        return answer
    body = dict(answer.body)
    if "duration" in body:
        body["duration"] = seconds
    usage = body.get("usage")
    if not (isinstance(usage, dict) and usage.get("type") == "duration"):
        return replace(answer, body=body)
    billed = math.ceil(seconds)
    return replace(
        answer, body={**body, "usage": {**usage, "seconds": billed}}, billed_seconds=billed
    )


def _unsure(answer: answers.Answer) -> answers.Answer:
    """The answer with every segment's avg_logprob at -1.35 (a json answer has none)."""
    if not isinstance(answer.body, dict) or not answer.body.get("segments"):
        return answer
    segments = [{**seg, "avg_logprob": -1.35} for seg in answer.body["segments"]]
    return replace(answer, body={**answer.body, "segments": segments})


@dataclass
class SttStats:
    requests: int = 0  # every /v1 request, failed ones included
    transcriptions: int = 0  # successful transcriptions
    chat_completions: int = 0
    audio_seconds: float = 0.0  # decoded audio of successful transcriptions
    decodes: int = 0  # uploads decoded (fewer than transcriptions when some were refused)
    bytes_received: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_extension: dict[str, int] = field(default_factory=dict)  # file names' extensions sent
    in_flight: int = 0
    max_in_flight: int = 0
    # the bill: per request `usage.seconds` (whole seconds) and per started minute
    billed_seconds: int = 0
    billed_minutes: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    # what was heard: words, and of a stereo upload which channel each sounds on
    words: int = 0
    words_by_side: dict[str, int] = field(default_factory=dict)  # "0", "1", "both"
    hallucinations: int = 0  # answers with text written on silence
    # speech calls: lines invented over non-speech (answers.inventions), and their texts
    invented_lines: int = 0
    invented_texts: list[str] = field(default_factory=list)
    model_lists: int = 0  # GET /v1/models
    # model -> the heard duration of each of its successful transcriptions (what a bill per
    # request is computed from), and how many of them came back unsure
    by_model: dict[str, list[float]] = field(default_factory=dict)
    unsure_by_model: dict[str, int] = field(default_factory=dict)


def _error(status: int, message: str, type_: str, code: str | None = None, **headers: str):
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


class SttEmulator:
    def __init__(
        self,
        *,
        api_key: str = "",
        max_file_bytes: int = MAX_FILE_BYTES,
        latency_per_audio_min_sec: float = 0.0,
        fixed_latency_sec: float = 0.0,
        faults: Faults | None = None,
        flavour: str = answers.OPENAI,
        heard_cache: HeardCache | None = None,
        shutdowns: dict[str, str | None] | None = None,
        hearing: str = "tones",
    ) -> None:
        """`hearing`: "tones" (the tone calls' words) or "speech" (the speech calls' voices;
        then Whisper-like models invent text over non-speech: `answers.inventions`)."""
        if hearing not in ("tones", "speech"):
            raise ValueError(f"hearing must be 'tones' or 'speech', got {hearing!r}")
        self.hearing = hearing
        if flavour not in answers.FLAVOURS:
            raise ValueError(f"flavour must be one of {answers.FLAVOURS}, got {flavour!r}")
        self.flavour = flavour
        self.heard_cache = heard_cache
        # model id -> `shutdown_date` of GET /v1/models (the deprecations page's by default)
        self.shutdowns = dict(answers.SHUTDOWN_DATES if shutdowns is None else shutdowns)
        self.api_key = api_key
        self.max_file_bytes = max_file_bytes
        self.latency_per_audio_min_sec = latency_per_audio_min_sec
        self.fixed_latency_sec = fixed_latency_sec
        self.faults = faults or Faults()
        self._stats = SttStats()
        self._lock = threading.Lock()  # the Python API is called from other threads
        self.app = Starlette(
            routes=[
                Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/_sandbox/faults", self._faults_endpoint, methods=["GET", "POST"]),
                Route("/_sandbox/stats", self._stats_endpoint, methods=["GET"]),
                Route("/_sandbox/reset", self._reset_endpoint, methods=["POST"]),
            ]
        )
        self.app.state.emulator = self

    # --- Python control API -------------------------------------------------------------

    def set_faults(self, **changes: Any) -> None:
        with self._lock:
            self.faults.update(changes)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self._stats)

    def reset(self) -> None:
        """Zero the counters and clear the faults (the decode cache stays)."""
        with self._lock:
            self._stats = SttStats()
            self.faults = Faults()

    def serve(self) -> RunningServer:
        return serve_in_thread(self.app)

    # --- request plumbing ---------------------------------------------------------------

    def _count(self, status: int) -> None:
        with self._lock:
            key = str(status)
            self._stats.by_status[key] = self._stats.by_status.get(key, 0) + 1

    def _admit(self, request: Request) -> tuple[int, Response | None, str | None]:
        """Number the request; the fault (or auth failure) it draws, if any."""
        with self._lock:
            self._stats.requests += 1
            number = self._stats.requests
            if self.api_key:
                auth = request.headers.get("authorization", "")
                if auth != f"Bearer {self.api_key}":
                    shown = auth.removeprefix("Bearer ")[-4:]
                    message = f"Incorrect API key provided: ...{shown}."
                    error = _error(401, message, "invalid_request_error", "invalid_api_key")
                    return number, error, None
            f = self.faults
            if number in f.bad_request_on:
                message = "Sandbox: injected bad request."
                return number, _error(400, message, "invalid_request_error"), None
            if f.quota_exhausted > 0:  # the documented body; no Retry-After (§4.1, §4.2)
                f.quota_exhausted -= 1
                message = (
                    "You exceeded your current quota, please check your plan and billing "
                    "details. For more information on this error, read the docs: "
                    "https://platform.openai.com/docs/guides/error-codes/api-errors."
                )
                return number, _error(429, message, "insufficient_quota", f.quota_code), None
            if f.timeout > 0:
                f.timeout -= 1
                return number, None, "hang"
            if f.rate_limit > 0:
                f.rate_limit -= 1
                retry_after = f"{f.retry_after_sec:g}"
                message = "Rate limit reached for requests. Please try again later."
                error = _error(429, message, "requests", "rate_limit_exceeded")
                error.headers["retry-after"] = retry_after
                return number, error, None
            if f.server_error > 0:
                f.server_error -= 1
                message = "The server had an error while processing your request."
                return number, _error(500, message, "server_error"), None
            if f.unavailable > 0:
                f.unavailable -= 1
                message = "The engine is currently overloaded, please try again later."
                return number, _error(503, message, "server_error"), None
        return number, None, None

    async def _hang(self, request: Request) -> Response:
        deadline = time.monotonic() + self.faults.hang_sec
        while time.monotonic() < deadline and not await request.is_disconnected():
            await asyncio.sleep(0.02)
        return _error(504, "Sandbox: injected timeout.", "server_error")

    async def _guarded(self, request: Request, handler: Any) -> Response:
        _, response, action = self._admit(request)
        with self._lock:
            self._stats.in_flight += 1
            self._stats.max_in_flight = max(self._stats.max_in_flight, self._stats.in_flight)
        try:
            if response is None:
                response = await (self._hang(request) if action == "hang" else handler(request))
        finally:
            with self._lock:
                self._stats.in_flight -= 1
        self._count(response.status_code)
        return response

    # --- transcriptions -----------------------------------------------------------------

    async def _transcriptions(self, request: Request) -> Response:
        return await self._guarded(request, self._transcribe)

    def _listen(self, path: Path) -> Heard:
        heard = listen(path, speech=self.hearing == "speech")
        with self._lock:
            self._stats.decodes += 1
        return heard

    def _request(self, form: Any, flavour: str) -> answers.Request:
        model = str(form.get("model") or "")
        flavour = answers.flavour_of(model, flavour)
        # LocalAI answers its segment shape when no format is asked for (§5.2); others json.
        default_format = "" if flavour == answers.LOCALAI else "json"
        return answers.Request(
            flavour=flavour,
            model=model,
            response_format=str(form.get("response_format") or default_format),
            # the SDK sends `timestamp_granularities[]`; LocalAI also reads it without brackets
            granularities=tuple(
                str(g)
                for name in ("timestamp_granularities[]", "timestamp_granularities")
                for g in form.getlist(name)
            ),
            language=str(form.get("language") or ""),
            chunking_strategy=str(form.get("chunking_strategy") or ""),
            prompt=str(form.get("prompt") or ""),
            languages=tuple(str(v) for v in form.getlist("languages[]")),
            keywords=tuple(str(v) for v in form.getlist("keywords[]")),
        )

    def _bad_answer(self) -> Response | None:
        with self._lock:
            if self.faults.bad_answer <= 0:
                return None
            self.faults.bad_answer -= 1
            kind = self.faults.bad_answer_kind
        media_type, body = BAD_ANSWERS[kind]
        return Response(body, status_code=200, media_type=media_type)

    async def _transcribe(self, request: Request) -> Response:
        bad = self._bad_answer()
        if bad is not None:
            return bad
        started = time.monotonic()
        form = await request.form()
        upload = form.get("file")
        req = self._request(form, self.flavour)
        try:
            if not isinstance(upload, UploadFile):
                raise refusal(req.flavour, 400, "Missing required parameter: 'file'.", param="file")
            size = upload.size if upload.size is not None else len(await upload.read())
            with self._lock:
                self._stats.bytes_received += size
            if size > self.max_file_bytes:  # the whole body, as OpenAI counts it
                limit = self.max_file_bytes
                message = f"Maximum content size limit ({limit}) exceeded ({size} bytes read)"
                raise refusal(req.flavour, 413, message, "server_error")
            answers.check_request(req)
            if req.language and not re.fullmatch(r"[a-z]{2}", req.language):
                message = (
                    f"Invalid language '{req.language}'. "
                    "Language parameter must be specified in ISO-639-1 format."
                )
                raise refusal(
                    req.flavour, 400, message, code="invalid_language_format", param="language"
                )
            suffix = (upload.filename or "").rsplit(".", 1)[-1].lower()
            if req.flavour == answers.OPENAI and suffix not in AUDIO_EXTENSIONS:
                message = f"Unsupported file format {suffix}"
                raise refusal(req.flavour, 400, message, code="unsupported_value", param="file")
            with self._lock:
                self._stats.by_extension[suffix] = self._stats.by_extension.get(suffix, 0) + 1
            # The server decodes by the name's extension (stt_wire §1.1): bytes of another
            # format under it do not decode (emulator: refused as the service refuses junk).
            upload.file.seek(0)
            sniffed = sniff_format(upload.file.read(SNIFF_BYTES))
            if sniffed is not None and sniffed != _SAME_FORMAT.get(suffix, suffix):
                message = "Audio file might be corrupted or unsupported"
                raise refusal(req.flavour, 400, message, code="invalid_value", param="file")
            heard = await run_in_threadpool(self._heard, upload, suffix, req.flavour)
            answers.check_heard(req, heard.duration)
        except Refusal as exc:
            return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers or None)

        # The configured latency is the service's time to answer: the emulator's own reading
        # and listening are part of it, as a real server's processing is of its latency.
        latency = self.fixed_latency_sec + self.latency_per_audio_min_sec * heard.duration / 60
        remaining = latency - (time.monotonic() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        with self._lock:
            hallucinate = self.faults.hallucinate > 0
            self.faults.hallucinate -= hallucinate
            claimed = self.faults.misreport_seconds
            unsure = self.faults.unsure.get(req.model, 0) > 0
            if unsure:
                self.faults.unsure[req.model] -= 1
        answer = answers.transcription(
            req,
            heard.words,
            heard.duration,
            hallucinate=hallucinate,
            noises=heard.noises if self.hearing == "speech" else None,
        )
        if claimed > 0:
            answer = _misreported(answer, claimed)
        if unsure:
            answer = _unsure(answer)
        self._account(heard, answer, hallucinated=hallucinate or not heard.words)
        with self._lock:
            self._stats.by_model.setdefault(req.model, []).append(heard.duration)
            if unsure:
                counts = self._stats.unsure_by_model
                counts[req.model] = counts.get(req.model, 0) + 1
        if isinstance(answer.body, str):
            return PlainTextResponse(answer.body)
        return JSONResponse(answer.body)

    def _heard(self, upload: UploadFile, suffix: str, flavour: str) -> Heard:
        """Listen to an upload from a file of its own (Starlette spools big ones to disk)."""
        upload.file.seek(0)
        digest = hashlib.sha256()
        with tempfile.NamedTemporaryFile(
            prefix="calltexts-stt-", suffix=f".{suffix or 'bin'}"
        ) as tmp:
            while chunk := upload.file.read(1 << 20):
                tmp.write(chunk)
                digest.update(chunk)
            tmp.flush()
            cached = self.heard_cache.get(digest.hexdigest()) if self.heard_cache else None
            if cached is not None:
                return cached
            try:
                return self._listen(Path(tmp.name))
            except AudioError:
                message = "Audio file might be corrupted or unsupported"
                raise refusal(flavour, 400, message, code="invalid_value", param="file") from None

    def _account(self, heard: Heard, answer: answers.Answer, *, hallucinated: bool) -> None:
        with self._lock:
            st = self._stats
            st.transcriptions += 1
            st.audio_seconds += heard.duration
            st.words += len(heard.words)
            for word in heard.words:
                side = "both" if word.side is None else str(word.side)
                st.words_by_side[side] = st.words_by_side.get(side, 0) + 1
            if answer.billed_seconds is not None:
                st.billed_seconds += answer.billed_seconds
                st.billed_minutes += math.ceil(answer.billed_seconds / 60)
            if answer.tokens is not None:
                st.input_tokens += answer.tokens[0]
                st.output_tokens += answer.tokens[1]
            st.hallucinations += hallucinated and answers.SILENCE_TEXT in answer.text
            st.invented_lines += len(answer.invented)
            st.invented_texts.extend(answer.invented)

    # --- chat completions ---------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        return await self._guarded(request, self._complete)

    async def _complete(self, request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body.", "invalid_request_error")
        messages = payload.get("messages") if isinstance(payload, dict) else None
        model = payload.get("model") if isinstance(payload, dict) else None
        if not model or not isinstance(messages, list) or not messages:
            message = "Missing required parameters: 'model' and 'messages'."
            return _error(400, message, "invalid_request_error")
        refused = _reasoning_refusal(str(model), payload)
        if refused is not None and self.flavour == answers.OPENAI:
            return refused
        contents = [str(m.get("content") or "") for m in messages if isinstance(m, dict)]
        user = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
        reply = summary_reply(user[-1] if user else contents[-1])
        if self.fixed_latency_sec > 0:
            await asyncio.sleep(self.fixed_latency_sec)
        with self._lock:
            self._stats.chat_completions += 1
        prompt_tokens = sum(len(c.split()) for c in contents)
        completion_tokens = len(reply.split())
        digest = hashlib.sha256("\n".join(contents).encode()).hexdigest()[:24]
        return JSONResponse(
            {
                "id": f"chatcmpl-sandbox-{digest}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": "sandbox",
            }
        )

    # --- models ---------------------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        """GET /v1/models (docs/specs/openai_models.md §1): OpenAI's models carry
        `shutdown_date` (a date, or null when none is announced); speaches and LocalAI list
        theirs without it. Counted apart: faults and `requests` number the service's work."""
        with self._lock:
            self._stats.model_lists += 1
        return JSONResponse(
            {"object": "list", "data": answers.model_list(self.flavour, self.shutdowns)}
        )

    # --- sandbox control endpoints ------------------------------------------------------

    async def _faults_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await request.json()
                self.set_faults(**changes)
            except (ValueError, TypeError) as exc:
                return _error(400, f"Sandbox: bad faults: {exc}", "invalid_request_error")
        with self._lock:
            return JSONResponse(self.faults.to_json())

    async def _stats_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})


def _reasoning_refusal(model: str, payload: dict[str, Any]) -> Response | None:
    """OpenAI's answers to a reasoning model asked with `max_tokens` or a temperature other
    than 1 (docs/specs/openai_models.md §7: the live messages, quoted by users)."""
    if not is_reasoning_model(model):
        return None
    if "max_tokens" in payload:
        message = (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
        body = {"message": message, "type": "invalid_request_error", "param": "max_tokens",
                "code": "unsupported_parameter"}  # fmt: skip
        return JSONResponse({"error": body}, status_code=400)
    temperature = payload.get("temperature", 1)
    if temperature != 1:
        message = (
            f"Unsupported value: 'temperature' does not support {temperature} with this model. "
            "Only the default (1) value is supported."
        )
        body = {"message": message, "type": "invalid_request_error", "param": "temperature",
                "code": "unsupported_value"}  # fmt: skip
        return JSONResponse({"error": body}, status_code=400)
    return None


def create_app(**options: Any) -> Starlette:
    """The ASGI app of a new emulator (`app.state.emulator` is its Python control API)."""
    return SttEmulator(**options).app
