"""WhisperClient against the documented answers of OpenAI and compatible servers (respx,
payloads from docs/specs/payloads/stt/): what it asks for, what it reads, which errors stop
it, which it retries, when it falls back to json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from calltexts_assets.clients.openai_base import OpenAIConnection, QuotaExhausted
from calltexts_assets.clients.stt_models import MAX_UPLOAD_BYTES, model_profile
from calltexts_assets.clients.stt_response import parse_transcription
from calltexts_assets.clients.whisper import TranscriptionError, WhisperClient
from calltexts_assets.limits.run_errors import RunWideError

API = "https://api.openai.com/v1"
STT_URL = f"{API}/audio/transcriptions"
PAYLOADS = Path(__file__).resolve().parents[2] / "docs/specs/payloads/stt"


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


@pytest.fixture
def audio_file(tmp_path: Path) -> Path:
    path = tmp_path / "call.mp3"
    path.write_bytes(b"\xff\xf3" + b"\0" * 1000)  # the mock never decodes it
    return path


def client(model: str = "whisper-1", **options: Any) -> WhisperClient:
    connection = OpenAIConnection(api_key="sk-test", retry_wait_scale=0.001)
    return WhisperClient(connection, model=model, **options)


def form_of(route: respx.Route) -> str:
    return route.calls.last.request.content.decode("latin-1")


@respx.mock
def test_whisper_1_asks_for_word_and_segment_times(audio_file: Path) -> None:
    body = payload("whisper1_verbose_json_words.json")
    route = respx.post(STT_URL).mock(return_value=httpx.Response(200, json=body))
    result = client().transcribe_file(audio_file)
    form = form_of(route)
    assert form.count('name="timestamp_granularities[]"') == 2
    assert "verbose_json" in form and "word" in form and "segment" in form
    assert result.language == "en" and result.duration == pytest.approx(8.47)
    assert [w.text for w in result.words] == ["The", "volleyball"]
    assert result.billed_seconds == 9 and result.timed


@respx.mock
def test_the_timeout_grows_with_the_audio_a_request_carries(audio_file: Path) -> None:
    body = payload("whisper1_verbose_json_words.json")
    route = respx.post(STT_URL).mock(return_value=httpx.Response(200, json=body))
    client().transcribe_file(audio_file, duration_sec=600.0)
    # 120 s of the connection + 30 s per audio minute (the seed's slowest STT)
    assert route.calls.last.request.extensions["timeout"]["read"] == pytest.approx(420.0)


def test_whisper_1_segments_keep_their_silence_figures() -> None:
    result = parse_transcription(payload("whisper1_verbose_json_segments.json"))
    first = result.segments[0]
    assert first.no_speech_prob is not None and first.avg_logprob is not None
    old = parse_transcription(payload("whisper1_verbose_json_issue245_2023.json"))
    assert old.language == "en" and old.segments  # an undeclared key ("transient") is fine


def test_speaches_answers_codes_and_leading_spaces() -> None:
    result = parse_transcription(payload("speaches_verbose_json_words_derived_from_source.json"))
    assert result.language == "en" and [w.text for w in result.words] == ["When", "you"]
    assert result.billed_seconds is None  # "usage": null
    plain = parse_transcription(payload("speaches_json_derived_from_source.json"), duration_hint=4)
    assert not plain.timed and plain.segments[0].end == 4


def test_an_answer_without_speech_is_not_an_answer_without_times() -> None:
    """A verbose_json answer over line noise has no segments: that is no speech, not a
    server that gives no word times (which would make the report advise another model)."""
    quiet = {"task": "transcribe", "language": "russian", "duration": 60.0, "text": "",
             "segments": [], "words": []}  # fmt: skip
    assert parse_transcription(quiet).timed and not parse_transcription(quiet).segments
    assert parse_transcription({"text": ""}, duration_hint=60).timed  # json: nothing said
    assert not parse_transcription({"text": "да"}, duration_hint=60).timed


def test_localai_nanoseconds_become_seconds() -> None:
    result = parse_transcription(payload("localai_response.json"), duration_hint=210.0)
    assert result.language == "" and result.duration is None
    assert result.segments[0].end == pytest.approx(9.64)
    assert result.segments[-1].start == pytest.approx(196.4)


def test_gpt_transcribe_languages_and_gpt_4o_tokens() -> None:
    done = parse_transcription(payload("gpt_transcribe_stream_text_done_event.json"))
    assert done.language == "en" and done.billed_seconds == 3
    tokens = parse_transcription(payload("gpt4o_transcribe_json_usage.json"), duration_hint=12)
    assert tokens.tokens == (14, 45) and not tokens.timed
    assert parse_transcription({"text": "", "languages": []}).language == ""


@respx.mock
def test_diarize_asks_for_diarized_json_with_chunking(audio_file: Path) -> None:
    body = payload("gpt4o_transcribe_diarize_diarized_json.json")
    route = respx.post(STT_URL).mock(return_value=httpx.Response(200, json=body))
    result = client("gpt-4o-transcribe-diarize").transcribe_file(audio_file)
    form = form_of(route)
    assert "diarized_json" in form and 'name="chunking_strategy"' in form
    assert "timestamp_granularities" not in form
    assert [s.speaker for s in result.segments] == ["agent", "A", "agent"]


@respx.mock
@pytest.mark.parametrize(
    "name", ["error_insufficient_quota.json", "error_insufficient_quota_project_spend_limit.json"]
)
def test_quota_errors_stop_the_run_without_a_retry(audio_file: Path, name: str) -> None:
    route = respx.post(STT_URL).mock(return_value=httpx.Response(429, json=payload(name)))
    stt = client()
    with pytest.raises(QuotaExhausted) as info:
        stt.transcribe_file(audio_file)
    assert route.call_count == 1 and isinstance(info.value, RunWideError)
    assert payload(name)["error"]["code"] in str(info.value)
    with pytest.raises(QuotaExhausted):  # the calls still in the workers send nothing more
        stt.transcribe_file(audio_file)
    assert route.call_count == 1


@respx.mock
def test_rate_limits_are_retried(audio_file: Path) -> None:
    route = respx.post(STT_URL).mock(
        side_effect=[
            httpx.Response(429, json=payload("error_rate_limit_requests_rpm.json")),
            httpx.Response(200, json=payload("whisper1_verbose_json_words.json")),
        ]
    )
    assert client().transcribe_file(audio_file).attempts == 2 and route.call_count == 2


@respx.mock
@pytest.mark.parametrize(
    ("status", "name"),
    [(413, "error_413_content_size.json"), (404, "error_model_not_found.json"),
     (400, "error_audio_duration_too_long.json")],
)  # fmt: skip
def test_final_errors_are_not_retried(audio_file: Path, status: int, name: str) -> None:
    route = respx.post(STT_URL).mock(return_value=httpx.Response(status, json=payload(name)))
    with pytest.raises(TranscriptionError) as info:
        client().transcribe_file(audio_file)
    assert route.call_count == 1 and info.value.code == str(status)


@respx.mock
def test_a_server_that_refuses_verbose_json_is_asked_for_json_from_then_on(audio_file) -> None:
    refused = httpx.Response(400, json=payload("error_invalid_response_format.json"))
    plain = httpx.Response(200, json={"text": "да нет"})
    route = respx.post(STT_URL).mock(side_effect=[refused, plain, plain])
    stt = client("my-compatible-model")
    assert stt.timestamps  # unknown: asked for times first
    first = stt.transcribe_file(audio_file, duration_sec=5.0)
    assert first.attempts == 2 and first.response_format == "json" and not first.timed
    assert not stt.timestamps
    stt.transcribe_file(audio_file)
    assert route.call_count == 3 and "verbose_json" not in form_of(route)


@respx.mock
def test_a_compatible_server_error_without_openai_shape(audio_file: Path) -> None:
    respx.post(STT_URL).mock(return_value=httpx.Response(403, json={"detail": "Invalid API key."}))
    with pytest.raises(TranscriptionError, match="Invalid API key"):
        client().transcribe_file(audio_file)


def test_model_limits() -> None:
    assert model_profile("whisper-1").max_file_bytes == MAX_UPLOAD_BYTES < 26_214_400
    assert model_profile("whisper-1").max_request_sec == 1800  # no cap of its own: 30 min pieces
    assert model_profile("gpt-4o-mini-transcribe").max_request_sec <= 1400
    assert model_profile("gpt-4o-mini-transcribe").response_format == "json"
    assert model_profile("gpt-4o-transcribe-diarize").diarizes
    unknown = model_profile("Systran/faster-whisper-large-v3")
    assert not unknown.known and unknown.response_format == "verbose_json"
    assert client("whisper-1", max_request_sec=600).max_request_sec == 600  # STT_MAX_REQUEST_SEC


@respx.mock
def test_gpt_transcribe_takes_languages_keywords_and_a_prompt_never_language(
    audio_file: Path,
) -> None:
    # openai_models.md §3: `languages[]` (never with `language`), `keywords[]`, `prompt`.
    usage = {"type": "duration", "seconds": 3}
    body = {"text": "Заказ номер сорок два", "languages": [], "usage": usage}
    route = respx.post(STT_URL).mock(return_value=httpx.Response(200, json=body))
    stt = client("gpt-transcribe", language="ru", keywords=("AC-42", "Premium Plus"))
    result = stt.transcribe_file(audio_file, 2.4, prompt="Оператор: здравствуйте")
    form = form_of(route)
    assert form.count('name="languages[]"') == 1 and 'name="language"' not in form
    assert form.count('name="keywords[]"') == 2 and "Premium Plus" in form
    assert 'name="prompt"' in form and 'name="response_format"' in form and "json" in form
    # `languages: []` is "no reliable detection", not an error and not the hint
    assert result.language == "" and result.billed_seconds == 3 and not result.timed


@respx.mock
def test_whisper_1_gets_language_and_no_keywords(audio_file: Path) -> None:
    route = respx.post(STT_URL).mock(
        return_value=httpx.Response(200, json=payload("whisper1_verbose_json_words.json"))
    )
    client("whisper-1", language="ru").transcribe_file(audio_file, prompt="")
    form = form_of(route)
    assert 'name="language"' in form and "languages[]" not in form and "keywords" not in form


@respx.mock
def test_the_diarizing_model_is_never_sent_a_prompt(audio_file: Path) -> None:
    body = payload("gpt4o_transcribe_diarize_diarized_json.json")
    route = respx.post(STT_URL).mock(return_value=httpx.Response(200, json=body))
    client("gpt-4o-transcribe-diarize").transcribe_file(audio_file, prompt="before")
    assert 'name="prompt"' not in form_of(route)


@respx.mock
def test_the_model_list_is_read_through_the_projects_http_client() -> None:
    # respx patches httpx: it sees the request only if the SDK sends through our httpx
    # client (openai 3.x's legacy-client path, docs/specs/openai_models.md §6).
    body = {"object": "list", "data": [{"id": "whisper-1", "object": "model", "created": 1,
            "owned_by": "system", "shutdown_date": "2027-02-26"}]}  # fmt: skip
    route = respx.get(f"{API}/models").mock(return_value=httpx.Response(200, json=body))
    assert client().model_list() == body and route.call_count == 1


@respx.mock
def test_a_server_without_a_model_list_gives_none() -> None:
    respx.get(f"{API}/models").mock(return_value=httpx.Response(404, json={"detail": "Not Found"}))
    assert client().model_list() is None


# -- 200 answers that are not what was asked for (issue #28) ---------------------------------

_VERBOSE_OK = {"task": "transcribe", "language": "russian", "duration": 2.0, "text": "да",
               "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": " да"}]}  # fmt: skip
HTML_PAGE = "<!DOCTYPE html><html><body><form action='/login'>Sign in</form></body></html>"
BAD_ANSWERS = {
    "html": httpx.Response(200, text=HTML_PAGE, headers={"content-type": "text/html"}),
    "truncated": httpx.Response(
        200, text='{"text": "hello", "segments": [', headers={"content-type": "application/json"}
    ),
    "null_text": httpx.Response(200, json={"text": None}),
    "no_text": httpx.Response(200, json={"segments": []}),
    "a_list": httpx.Response(200, json=[{"text": "hello"}]),
    "text_a_number": httpx.Response(200, json={**_VERBOSE_OK, "text": 5}),
    "duration_a_string": httpx.Response(200, json={**_VERBOSE_OK, "duration": "40.0"}),
    "segments_a_string": httpx.Response(200, json={**_VERBOSE_OK, "segments": "none"}),
    "segment_without_times": httpx.Response(
        200, json={**_VERBOSE_OK, "segments": [{"id": 0, "text": " да"}]}
    ),
    "usage_seconds_a_string": httpx.Response(
        200, json={**_VERBOSE_OK, "usage": {"type": "duration", "seconds": "9"}}
    ),
    "verbose_without_duration": httpx.Response(
        200, json={k: v for k, v in _VERBOSE_OK.items() if k != "duration"}
    ),
    "plain_text": httpx.Response(200, text="да\n", headers={"content-type": "text/plain"}),
}


@pytest.mark.parametrize("kind", sorted(BAD_ANSWERS))
@respx.mock
def test_a_200_that_is_not_the_format_asked_for_is_stt_bad_answer(audio_file, kind) -> None:
    route = respx.post(STT_URL).mock(return_value=BAD_ANSWERS[kind])
    whisper = client()
    with pytest.raises(TranscriptionError) as info:
        whisper.transcribe_file(audio_file)
    # Retried as a 5xx is (a proxy's hiccup, a body cut on the way), then the call's error.
    assert route.call_count == 4 and info.value.attempts == 4
    assert info.value.code == "stt_bad_answer"
    assert "not the verbose_json asked for" in str(info.value)
    assert whisper.stats.by_outcome == {"stt_bad_answer": 4} and whisper.stats.failures == 1


@respx.mock
def test_a_bad_answer_then_a_good_one_is_a_transcript(audio_file: Path) -> None:
    respx.post(STT_URL).mock(
        side_effect=[BAD_ANSWERS["html"], httpx.Response(200, json=_VERBOSE_OK)]
    )
    result = client().transcribe_file(audio_file)
    assert result.text == "да" and result.attempts == 2


@respx.mock
def test_a_compatible_server_may_leave_out_what_openai_promises(audio_file: Path) -> None:
    # LocalAI <= 4.1: no duration, no language (docs/specs/stt_wire.md §5.2); still typed.
    respx.post(STT_URL).mock(
        return_value=httpx.Response(200, json=payload("localai_response.json"))
    )
    result = client("ggml-whisper-base.bin").transcribe_file(audio_file, duration_sec=210.0)
    assert result.text and result.segments
    respx.post(STT_URL).mock(return_value=BAD_ANSWERS["null_text"])
    with pytest.raises(TranscriptionError, match="'text' is null"):
        client("ggml-whisper-base.bin").transcribe_file(audio_file)


def test_the_billing_unit_is_a_fact_of_the_model() -> None:
    from calltexts_assets.clients.stt_models import billing_unit

    # docs/specs/stt_wire.md §3.4: priced per minute, metered in seconds.
    assert billing_unit("whisper-1") == billing_unit("gpt-transcribe") == "second"
    assert model_profile("gpt-4o-mini-transcribe").billed_by_tokens
    assert billing_unit("Systran/faster-whisper-small") == "minute"  # a compatible server's
    assert billing_unit("Systran/faster-whisper-small", "second") == "second"
    assert billing_unit("whisper-1", "minute") == "minute"
