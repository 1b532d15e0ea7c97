"""An OpenAI-compatible speech-to-text (and chat) server for the sandbox.

It really listens to what it is sent: the uploaded audio is decoded (libsndfile, else
ffmpeg) and the tones of `tones.py` are turned back into words, so the text depends on
what the client actually uploaded (which channel, which span), as it would with real Whisper.

    emulator = SttEmulator(api_key="sk-test", faults=Faults(rate_limit=1))
    with serve_in_thread(emulator.app) as server:  # base_url = server.url + "/v1"
        ...
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import re
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import soundfile
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from calltexts_assets.audio.decode import AudioError
from calltexts_assets.clients.whisper import MAX_FILE_BYTES
from calltexts_assets.core.audio_format import SNIFF_BYTES, sniff_format
from calltexts_assets.sandbox import tones
from calltexts_assets.sandbox.script import VOCABULARY
from calltexts_assets.sandbox.server import RunningServer, serve_in_thread

STT_MODELS = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"})
VERBOSE_MODELS = frozenset({"whisper-1"})
RESPONSE_FORMATS = frozenset({"json", "text", "verbose_json"})
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
# Extensions naming the same container as core.audio_format's names.
_SAME_FORMAT = {"mpeg": "mp3", "mpga": "mp3", "oga": "ogg", "mp4": "m4a"}
LANGUAGE_NAMES = {"ru": "russian", "en": "english", "uk": "ukrainian", "kk": "kazakh"}
SEGMENT_PAUSE_SEC = 0.6  # longer than any gap inside a scripted turn, shorter than a pause
SEGMENT_MAX_SEC = 30.0  # Whisper works in 30 s windows; no segment is longer
# Words of every call that say nothing about its subject; left out of sandbox summaries.
STOP_WORDS = frozenset({
    "здравствуйте", "добрый", "день", "меня", "зовут", "да", "нет", "хорошо", "понятно",
    "конечно", "спасибо", "пожалуйста", "оператор", "клиент", "договорились",
})  # fmt: skip


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
        for name, value in coerced.items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["bad_request_on"] = sorted(self.bad_request_on)
        return data


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


def _decode_upload(data: bytes) -> tuple[np.ndarray, int]:
    """Samples (stereo is downmixed by decode_words, as Whisper does) and their rate.

    libsndfile reads MP3, FLAC, WAV and Ogg in-process; anything else goes to ffmpeg.
    """
    try:
        ints, rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return tones.decode_pcm(data, tones.SAMPLE_RATE, channels=1), tones.SAMPLE_RATE
    if len(ints) == 0:
        raise AudioError("no audio frames")
    return ints, int(rate)


def _error(status: int, message: str, type_: str, code: str | None = None, **headers: str):
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def group_segments(words: list[tuple[float, float, str]]) -> list[list[tuple[float, float, str]]]:
    """Words into segments: a new one at each pause, and before 30 s are exceeded."""
    groups: list[list[tuple[float, float, str]]] = []
    for word in words:
        current = groups[-1] if groups else None
        if (
            current is None
            or word[0] - current[-1][1] >= SEGMENT_PAUSE_SEC
            or word[1] - current[0][0] > SEGMENT_MAX_SEC
        ):
            groups.append([word])
        else:
            current.append(word)
    return groups


def summary_reply(prompt: str) -> str:
    """A deterministic 'summary': the most frequent content words of the transcript."""
    match = re.search(r"<transcript>(.*?)</transcript>", prompt, re.S)
    text = (match.group(1) if match else prompt).lower()
    vocabulary = set(VOCABULARY) - STOP_WORDS
    counts = Counter(w for w in re.findall(r"[а-яё]+", text) if w in vocabulary)
    top = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    if not top:
        return "Содержательной части в разговоре нет.\n\nТеги: без темы"
    return (
        f"Клиент и оператор обсудили: {', '.join(top[:3])}. "
        f"Чаще всего звучало слово «{top[0]}».\n\n"
        f"Теги: {', '.join(top[:4])}"
    )


class SttEmulator:
    def __init__(
        self,
        *,
        api_key: str = "",
        max_file_bytes: int = MAX_FILE_BYTES,
        latency_per_audio_min_sec: float = 0.0,
        fixed_latency_sec: float = 0.0,
        faults: Faults | None = None,
    ) -> None:
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

    def _decode(self, data: bytes) -> tuple[float, list[tuple[float, float, str]]]:
        pcm, rate = _decode_upload(data)
        with self._lock:
            self._stats.decodes += 1
        return len(pcm) / rate, tones.decode_words(pcm, rate)

    async def _transcribe(self, request: Request) -> Response:
        started = time.monotonic()
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return _error(400, "Missing required parameter: 'file'.", "invalid_request_error")
        data = await upload.read()
        with self._lock:
            self._stats.bytes_received += len(data)
        if len(data) > self.max_file_bytes:
            message = (
                f"Maximum content size limit ({self.max_file_bytes}) exceeded "
                f"({len(data)} bytes read)"
            )
            return _error(413, message, "server_error")
        model = str(form.get("model") or "")
        if model not in STT_MODELS:
            message = f"Invalid model '{model}'. Use one of {sorted(STT_MODELS)}."
            return _error(400, message, "invalid_request_error", "invalid_value")
        response_format = str(form.get("response_format") or "json")
        if response_format not in RESPONSE_FORMATS:
            message = f"Sandbox supports response_format {sorted(RESPONSE_FORMATS)} only."
            return _error(400, message, "invalid_request_error")
        if response_format == "verbose_json" and model not in VERBOSE_MODELS:
            message = (
                f"response_format 'verbose_json' is not compatible with model '{model}'. "
                "Use 'json' or 'text' instead."
            )
            return _error(400, message, "invalid_request_error", "unsupported_value")
        language = str(form.get("language") or "")
        if language and not re.fullmatch(r"[a-z]{2}", language):
            message = (
                f"Invalid language '{language}'. "
                "Language parameter must be specified in ISO-639-1 format."
            )
            return _error(400, message, "invalid_request_error", "invalid_language_format")
        suffix = (upload.filename or "").rsplit(".", 1)[-1].lower()
        invalid = f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}"
        if suffix not in AUDIO_EXTENSIONS or not data:
            return _error(400, invalid, "invalid_request_error")
        with self._lock:
            self._stats.by_extension[suffix] = self._stats.by_extension.get(suffix, 0) + 1
        # The server decodes by the name's extension (stt_wire §1.1): bytes of another
        # format under it do not decode (emulator: refused as the service refuses junk).
        sniffed = sniff_format(data[:SNIFF_BYTES])
        if sniffed is not None and sniffed != _SAME_FORMAT.get(suffix, suffix):
            corrupted = "Audio file might be corrupted or unsupported"
            return _error(400, corrupted, "invalid_request_error", "invalid_value")
        try:
            duration, words = await run_in_threadpool(self._decode, data)
        except AudioError:
            return _error(400, invalid, "invalid_request_error")

        # The configured latency is the service's time to answer: the emulator's own reading
        # and listening are part of it, as a real server's processing is of its latency.
        latency = self.fixed_latency_sec + self.latency_per_audio_min_sec * duration / 60
        remaining = latency - (time.monotonic() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        with self._lock:
            self._stats.transcriptions += 1
            self._stats.audio_seconds += duration

        granularities = form.getlist("timestamp_granularities[]")
        return self._transcription_response(
            words, duration, response_format, LANGUAGE_NAMES.get(language, language or "russian"),
            with_words="word" in granularities,
        )  # fmt: skip

    @staticmethod
    def _transcription_response(
        words: list[tuple[float, float, str]],
        duration: float,
        response_format: str,
        language: str,
        *,
        with_words: bool,
    ) -> Response:
        groups = group_segments(words)
        text = " ".join(" ".join(w[2] for w in g) for g in groups)
        if response_format == "text":
            return PlainTextResponse(text + "\n")
        usage = {"type": "duration", "seconds": math.ceil(duration)}
        if response_format == "json":
            return JSONResponse({"text": text, "usage": usage})
        segments = [
            {
                "id": i,
                "seek": int(g[0][0] // SEGMENT_MAX_SEC * 3000),  # 10 ms frames of its window
                "start": g[0][0],
                "end": g[-1][1],
                "text": " " + " ".join(w[2] for w in g),  # Whisper's leading space
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": -0.25,
                "compression_ratio": 1.1,
                "no_speech_prob": 0.01,
            }
            for i, g in enumerate(groups)
        ]
        body: dict[str, Any] = {
            "task": "transcribe",
            "language": language,
            "duration": round(duration, 3),
            "text": text,
            "segments": segments,
            "usage": usage,
        }
        if with_words:
            body["words"] = [{"word": w[2], "start": w[0], "end": w[1]} for w in words]
        return JSONResponse(body)

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


def create_app(**options: Any) -> Starlette:
    """The ASGI app of a new emulator (`app.state.emulator` is its Python control API)."""
    return SttEmulator(**options).app
