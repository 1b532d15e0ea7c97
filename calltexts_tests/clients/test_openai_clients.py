"""WhisperClient, the chat client and the shared OpenAI plumbing against respx-mocked HTTP."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import respx

from calltexts_assets.clients.chat import ChatClient
from calltexts_assets.clients.openai_base import OpenAIConnection
from calltexts_assets.clients.whisper import TranscriptionError, WhisperClient
from calltexts_assets.summaries.prompt import SummaryError, summarise

API = "https://api.openai.com/v1"
STT_URL = f"{API}/audio/transcriptions"
PROXY = "http://proxyuser:Pr0xyS3cret@proxy.example.net:3128"
VERBOSE = {
    "task": "transcribe",
    "language": "russian",
    "duration": 12.5,
    "text": "здравствуйте заказ",
    "segments": [
        {"id": 0, "seek": 0, "start": 0.5, "end": 1.5, "text": " здравствуйте",
         "tokens": [], "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0,
         "no_speech_prob": 0.01},
        {"id": 1, "seek": 0, "start": 3.0, "end": 4.0, "text": " заказ",
         "tokens": [], "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0,
         "no_speech_prob": 0.01},
    ],
}  # fmt: skip


def _error(status: int, message: str, **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "x", "param": None, "code": None}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.fixture
def audio_file(tmp_path: Path) -> Path:
    path = tmp_path / "call.mp3"
    path.write_bytes(b"\xff\xfb" + b"\0" * 1000)  # the mock never decodes it
    return path


def _whisper(**options: object) -> WhisperClient:
    connection = OpenAIConnection(
        api_key="sk-unit-test-key",
        proxy_url=PROXY,
        retry_wait_scale=0.001,  # 10/30/60 s become 10/30/60 ms
    )
    return WhisperClient(connection, **options)  # type: ignore[arg-type]


def _chat(api_key: str = "k") -> ChatClient:
    return ChatClient(OpenAIConnection(api_key=api_key, retry_wait_scale=0.001))


@respx.mock
def test_verbose_json_becomes_segments(audio_file: Path) -> None:
    route = respx.post(STT_URL).mock(return_value=httpx.Response(200, json=VERBOSE))
    result = _whisper(language="ru").transcribe_file(audio_file)
    assert result.language == "ru" and result.duration == 12.5  # whisper-1's name as a code
    assert [(s.start, s.end, s.text) for s in result.segments] == [
        (0.5, 1.5, "здравствуйте"),
        (3.0, 4.0, "заказ"),
    ]
    assert result.attempts == 1
    form = route.calls.last.request.content.decode("latin-1")
    for part in ('name="model"', "whisper-1", "verbose_json", "timestamp_granularities[]"):
        assert part in form
    assert 'name="language"' in form
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-unit-test-key"


@respx.mock
def test_gpt4o_models_ask_for_json_and_get_one_segment(audio_file: Path) -> None:
    route = respx.post(STT_URL).mock(
        return_value=httpx.Response(200, json={"text": "да нет"}),
    )
    # the server reports no duration: the caller's (from the file's header) spans the text
    result = _whisper(model="gpt-4o-transcribe").transcribe_file(audio_file, duration_sec=7.0)
    assert [(s.start, s.end, s.text) for s in result.segments] == [(0.0, 7.0, "да нет")]
    form = route.calls.last.request.content.decode("latin-1")
    assert "verbose_json" not in form and "timestamp_granularities" not in form


@respx.mock
def test_429_then_success(audio_file: Path) -> None:
    route = respx.post(STT_URL).mock(
        side_effect=[_error(429, "Rate limit reached", **{"retry-after": "1"}),
                     httpx.Response(200, json=VERBOSE)]
    )  # fmt: skip
    whisper = _whisper()
    result = whisper.transcribe_file(audio_file)
    assert result.text == "здравствуйте заказ" and result.attempts == 2
    assert route.call_count == 2
    assert (whisper.stats.requests, whisper.stats.retries, whisper.stats.failures) == (2, 1, 0)
    assert whisper.stats.by_outcome == {"429": 1, "200": 1}


@respx.mock
def test_400_is_not_retried(audio_file: Path) -> None:
    route = respx.post(STT_URL).mock(return_value=_error(400, "Invalid file format."))
    whisper = _whisper()
    with pytest.raises(TranscriptionError) as info:
        whisper.transcribe_file(audio_file)
    assert route.call_count == 1
    assert info.value.code == "400" and info.value.attempts == 1
    assert "Invalid file format." in str(info.value)
    assert whisper.stats.failures == 1


@respx.mock
def test_500_four_times_gives_a_clear_error_after_four_attempts(audio_file: Path) -> None:
    route = respx.post(STT_URL).mock(return_value=_error(500, "The server had an error"))
    with pytest.raises(TranscriptionError) as info:
        _whisper().transcribe_file(audio_file)
    assert route.call_count == 4
    assert info.value.code == "500" and info.value.attempts == 4
    assert "failed after 4 attempts" in str(info.value)
    assert "The server had an error" in str(info.value)


@respx.mock
def test_timeouts_and_connection_errors_are_retried(audio_file: Path) -> None:
    route = respx.post(STT_URL).mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.ConnectError("refused"),
                     httpx.Response(200, json=VERBOSE)]
    )  # fmt: skip
    assert _whisper().transcribe_file(audio_file).attempts == 3
    assert route.call_count == 3


def test_oversized_file_fails_without_a_request(audio_file: Path) -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(STT_URL)
        with pytest.raises(TranscriptionError) as info:
            _whisper(max_file_bytes=100).transcribe_file(audio_file)
    assert info.value.code == "413" and route.call_count == 0


@respx.mock
def test_proxy_credentials_never_reach_logs_or_errors(
    audio_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A proxy failure whose text repeats the proxy URL, as some transports do.
    respx.post(STT_URL).mock(side_effect=httpx.ProxyError(f"cannot reach proxy {PROXY}"))
    whisper = _whisper()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TranscriptionError) as info:
        whisper.transcribe_file(audio_file)
    text = f"{info.value}\n{info.value!r}\n{caplog.text}\n{whisper.describe()}"
    assert "Pr0xyS3cret" not in text and "proxyuser" not in text
    assert "sk-unit-test-key" not in text
    assert "proxy.example.net:3128" in str(info.value)  # masked, but still useful
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "failed after 4 attempts" in str(info.value)


@respx.mock
def test_summariser_shares_the_retry_policy_and_parses_tags() -> None:
    answer = "Клиент уточнил **доставку** заказа.\n\nТеги: Доставка, заказ, #оплата"
    completion = {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": answer}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }  # fmt: skip
    route = respx.post(f"{API}/chat/completions").mock(
        side_effect=[_error(503, "overloaded"), httpx.Response(200, json=completion)]
    )
    summary = summarise(_chat(), "[00:01] Клиент: доставка", {"call_id": "c-1"})
    assert summary.markdown == "Клиент уточнил **доставку** заказа."
    assert summary.tags == ["доставка", "заказ", "оплата"]
    assert summary.attempts == 2 and route.call_count == 2
    prompt = route.calls.last.request.content.decode()
    assert "c-1" in prompt and "<transcript>" in prompt


@respx.mock
def test_reasoning_chat_models_get_max_completion_tokens_and_no_temperature() -> None:
    # openai_models.md §7: gpt-6-luna (the default) refuses `max_tokens` and temperature != 1.
    completion = {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-6-luna",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "ok"}}],
    }  # fmt: skip
    route = respx.post(f"{API}/chat/completions").mock(
        return_value=httpx.Response(200, json=completion)
    )
    assert _chat().complete([{"role": "user", "content": "x"}], what="t") == ("ok", 1)
    sent = json.loads(route.calls.last.request.content)
    assert sent["model"] == "gpt-6-luna" and sent["max_completion_tokens"] == 400
    assert sent["reasoning_effort"] == "none"
    assert "max_tokens" not in sent and "temperature" not in sent
    old = ChatClient(OpenAIConnection(api_key="k"), model="gpt-4o-mini")
    old.complete([{"role": "user", "content": "x"}], what="t")
    sent = json.loads(route.calls.last.request.content)
    assert sent["max_tokens"] == 400 and sent["temperature"] == 0.2


@respx.mock
def test_summariser_rejection_is_a_summary_error() -> None:
    respx.post(f"{API}/chat/completions").mock(return_value=_error(401, "bad key"))
    with pytest.raises(SummaryError) as info:
        summarise(_chat(), "text", {})
    assert info.value.code == "401" and info.value.attempts == 1


def test_missing_api_key_for_openai_is_a_clear_error(audio_file: Path) -> None:
    with pytest.raises(TranscriptionError, match="no API key") as info:
        WhisperClient(OpenAIConnection(api_key="")).transcribe_file(audio_file)
    assert info.value.code == "config"


@pytest.mark.parametrize(
    ("name", "kind"), [("call_1.wav", "audio/wav"), ("call_1.mp3", "audio/mpeg")]
)
@respx.mock
def test_the_file_part_names_its_real_format(tmp_path: Path, name: str, kind: str) -> None:
    """The server reads the format from the part's file name (stt_wire §1.1): a WAV
    recording goes as .wav with audio/wav, never under a fixed .mp3 name."""
    path = tmp_path / name
    path.write_bytes(b"RIFF\0\0\0\0WAVEfmt " + b"\0" * 100)
    route = respx.post(STT_URL).mock(return_value=httpx.Response(200, json=VERBOSE))
    _whisper().transcribe_file(path)
    form = route.calls.last.request.content.decode("latin-1")
    assert f'name="file"; filename="{name}"\r\nContent-Type: {kind}\r\n' in form
