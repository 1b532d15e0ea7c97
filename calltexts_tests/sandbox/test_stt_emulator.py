"""The OpenAI-compatible STT emulator, driven through the real openai SDK on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from calltexts_assets.resources.openai import SummariserResource
from calltexts_assets.summaries.prompt import summarise
from calltexts_sandbox.calls import mp3_frames, tones
from calltexts_sandbox.calls.script import CallScript, call_script
from calltexts_sandbox.server import RunningServer
from calltexts_sandbox.stt.app import SttEmulator
from calltexts_sandbox.stt.hearing import Heard

KEY = "sk-sandbox-test"


@pytest.fixture(scope="module")
def emulator() -> SttEmulator:
    return SttEmulator(api_key=KEY, max_file_bytes=200_000)


@pytest.fixture(scope="module")
def server(emulator: SttEmulator) -> Iterator[RunningServer]:
    with emulator.serve() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(emulator: SttEmulator) -> None:
    emulator.reset()


@pytest.fixture
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=server.url + "/v1", max_retries=0, timeout=5)


@pytest.fixture(scope="module")
def mono_call(tmp_path_factory: pytest.TempPathFactory) -> tuple[CallScript, Path]:
    script = call_script("emulator-mono", 40, stereo=False)
    path = tmp_path_factory.mktemp("stt") / "call.mp3"
    path.write_bytes(mp3_frames.render_mp3(script))
    return script, path


def test_verbose_json_returns_the_script(client: openai.OpenAI, mono_call) -> None:
    script, path = mono_call
    with path.open("rb") as f:
        result = client.audio.transcriptions.create(
            file=f,
            model="whisper-1",
            response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
    assert result.text == script.text()
    assert result.language == "russian"
    assert abs(result.duration - 40) < 0.1
    assert [s.text.strip() for s in result.segments] == [t.text for t in script.turns]
    for segment, turn in zip(result.segments, script.turns, strict=True):
        assert abs(segment.start - turn.start) < 0.03 and abs(segment.end - turn.end) < 0.03
        assert segment.text.startswith(" ")  # as Whisper writes it
    assert [s.id for s in result.segments] == list(range(len(script.turns)))


def test_json_and_text_formats_and_gpt4o_models(client: openai.OpenAI, mono_call) -> None:
    script, path = mono_call
    as_json = client.audio.transcriptions.create(
        file=path.open("rb"), model="gpt-4o-mini-transcribe", response_format="json"
    )
    assert as_json.text == script.text()
    as_text = client.audio.transcriptions.create(
        file=path.open("rb"), model="whisper-1", response_format="text"
    )
    assert str(as_text).strip() == script.text()
    with pytest.raises(openai.BadRequestError, match="not compatible"):
        client.audio.transcriptions.create(
            file=path.open("rb"), model="gpt-4o-transcribe", response_format="verbose_json"
        )


def test_rejects_unknown_model_bad_language_and_non_audio(client: openai.OpenAI, mono_call):
    _, path = mono_call
    with pytest.raises(openai.NotFoundError, match="does not exist") as missing:
        client.audio.transcriptions.create(file=path.open("rb"), model="whisper-2")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="ISO-639-1"):
        client.audio.transcriptions.create(file=path.open("rb"), model="whisper-1", language="rus")
    with pytest.raises(openai.BadRequestError, match="corrupted or unsupported") as info:
        client.audio.transcriptions.create(file=("x.mp3", b"no audio here"), model="whisper-1")
    assert (info.value.code, info.value.param) == ("invalid_value", "file")
    with pytest.raises(openai.BadRequestError, match="Unsupported file format bin") as named:
        client.audio.transcriptions.create(file=("x.bin", path.read_bytes()), model="whisper-1")
    assert named.value.code == "unsupported_value"


def test_over_the_size_limit_is_413(client: openai.OpenAI, emulator: SttEmulator) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(file=("big.mp3", b"\0" * 200_001), model="whisper-1")
    assert info.value.status_code == 413
    assert "Maximum content size limit (200000) exceeded" in info.value.message
    assert emulator.stats()["by_status"] == {"413": 1}


def test_429_with_retry_after_then_success(client: openai.OpenAI, emulator, mono_call) -> None:
    script, path = mono_call
    emulator.set_faults(rate_limit=1, retry_after_sec=2)
    with pytest.raises(openai.RateLimitError) as info:
        client.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")
    assert info.value.response.headers["retry-after"] == "2"
    result = client.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")
    assert result.text == script.text()
    stats = emulator.stats()
    assert (stats["requests"], stats["transcriptions"]) == (2, 1)
    assert stats["by_status"] == {"429": 1, "200": 1}


def test_server_errors_timeouts_and_chosen_bad_requests(server, emulator, mono_call) -> None:
    _, path = mono_call
    # 2 s: the 500 and 503 must come back within it on a loaded machine; the hang is 5 s
    impatient = openai.OpenAI(api_key=KEY, base_url=server.url + "/v1", max_retries=0, timeout=2)
    emulator.set_faults(server_error=1, unavailable=1, timeout=1, hang_sec=5, bad_request_on={5})
    with pytest.raises(openai.APITimeoutError):  # timeouts are drawn first
        impatient.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")
    with pytest.raises(openai.InternalServerError) as first:
        impatient.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")
    with pytest.raises(openai.InternalServerError) as second:
        impatient.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")
    assert (first.value.status_code, second.value.status_code) == (500, 503)
    ok = openai.OpenAI(api_key=KEY, base_url=server.url + "/v1", max_retries=0, timeout=5)
    ok.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")  # request 4
    with pytest.raises(openai.BadRequestError):  # request 5
        ok.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")
    assert emulator.stats()["requests"] == 5


def test_faults_and_stats_over_http(server: RunningServer, client, mono_call) -> None:
    _, path = mono_call
    with httpx.Client(base_url=server.url) as http:
        faults = http.post("/_sandbox/faults", json={"server_error": 1}).json()
        assert faults["server_error"] == 1
        assert http.post("/_sandbox/faults", json={"nonsense": 1}).status_code == 400
        with pytest.raises(openai.InternalServerError):
            client.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")
        stats = http.get("/_sandbox/stats").json()
        assert stats["requests"] == 1 and stats["by_status"] == {"500": 1}
        http.post("/_sandbox/reset")
        assert http.get("/_sandbox/stats").json()["requests"] == 0


def test_wrong_key_is_401(server: RunningServer, mono_call) -> None:
    _, path = mono_call
    stranger = openai.OpenAI(api_key="sk-wrong", base_url=server.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")


def test_chat_completion_summarises_the_transcript(client: openai.OpenAI, emulator) -> None:
    transcript = "[00:01] Оператор: заказ доставка\n[00:05] Клиент: заказ оплата заказ да"
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": f"Перескажи.\n<transcript>\n{transcript}\n</transcript>"}
        ],
    )
    content = completion.choices[0].message.content or ""
    assert "«заказ»" in content
    assert content.splitlines()[-1] == "Теги: заказ, доставка, оплата"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    again = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": f"Перескажи.\n<transcript>\n{transcript}\n</transcript>"}
        ],
    )
    assert again.choices[0].message.content == content  # deterministic
    assert emulator.stats()["chat_completions"] == 2


def test_summariser_resource_against_the_emulator(server: RunningServer, emulator) -> None:
    chat = SummariserResource(api_key=KEY, base_url=server.url + "/v1").get_client()
    summary = summarise(chat, "[00:01] Клиент: возврат товар возврат", {"call_id": "c1"})
    assert summary.tags == ["возврат", "товар"]
    assert "Теги" not in summary.markdown and "«возврат»" in summary.markdown


def test_bad_fault_values_are_refused(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/_sandbox/faults", json={"rate_limit": "many"}).status_code == 400
        assert http.post("/_sandbox/faults", json={"rate_limit": "2"}).json()["rate_limit"] == 2


def test_latency_is_the_time_to_answer_with_the_emulators_own_work_in_it(
    mono_call, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import types

    from calltexts_sandbox.stt import app as stt_module

    clock = {"now": 100.0}
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(stt_module, "time", types.SimpleNamespace(monotonic=lambda: clock["now"]))
    monkeypatch.setattr(stt_module, "asyncio", types.SimpleNamespace(sleep=sleep))
    emulator = SttEmulator(api_key=KEY, latency_per_audio_min_sec=1.5)  # 40 s: 1.0 s
    listen = emulator._listen

    def slow_listen(path: Path) -> Heard:
        clock["now"] += 0.25  # the emulator takes 0.25 s to listen
        return listen(path)

    monkeypatch.setattr(emulator, "_listen", slow_listen)
    _script, path = mono_call
    with emulator.serve() as running:
        client = openai.OpenAI(api_key=KEY, base_url=running.url + "/v1", max_retries=0)
        with path.open("rb") as f:
            client.audio.transcriptions.create(file=f, model="whisper-1")
    duration = emulator.stats()["audio_seconds"]
    assert slept == [pytest.approx(1.5 * duration / 60 - 0.25)]


def test_bytes_of_another_format_than_the_name_says_are_refused(
    client: openai.OpenAI, emulator: SttEmulator
) -> None:
    """The service reads the format from the file name: WAV bytes named .mp3 are refused
    (a recording stored under a fixed .mp3 name used to be sent that way)."""
    wav = tones.render_wav(call_script("emulator-wav", 5, stereo=False), 8000)
    with pytest.raises(openai.BadRequestError, match="corrupted or unsupported"):
        client.audio.transcriptions.create(file=("call.mp3", wav, "audio/mpeg"), model="whisper-1")
    result = client.audio.transcriptions.create(
        file=("call.wav", wav, "audio/wav"), model="whisper-1"
    )
    assert result.text
    assert emulator.stats()["by_extension"] == {"mp3": 1, "wav": 1}


def test_what_it_heard_in_a_file_is_kept_by_its_content(mono_call, tmp_path: Path) -> None:
    from calltexts_sandbox.stt.hearing import HeardCache

    script, path = mono_call
    cache = HeardCache(tmp_path)
    assert cache.fill(path) and not cache.fill(path)  # listened once
    emulator = SttEmulator(api_key=KEY, heard_cache=cache)
    other = tmp_path / "other.mp3"
    other.write_bytes(mp3_frames.render_mp3(call_script("emulator-other", 20, stereo=False)))
    with emulator.serve() as running:
        client = openai.OpenAI(api_key=KEY, base_url=running.url + "/v1", max_retries=0)
        same = client.audio.transcriptions.create(file=path.open("rb"), model="whisper-1")
        assert same.text == script.text() and emulator.stats()["decodes"] == 0
        client.audio.transcriptions.create(file=other.open("rb"), model="whisper-1")
        assert emulator.stats()["decodes"] == 1  # other bytes: listened to


def test_gpt_transcribe_answers_json_with_detected_languages_and_duration_usage(
    client: openai.OpenAI, mono_call
) -> None:
    # openai_models.md §3: json with `text`, `languages` (codes) and `usage` in seconds;
    # `languages[]`, `keywords[]` and `prompt` taken, never `language` with `languages`.
    script, path = mono_call
    raw = client.audio.transcriptions.with_raw_response.create(
        file=path.open("rb"),
        model="gpt-transcribe",
        languages=["ru"],
        keywords=["AC-42", "Premium Plus"],
        prompt="Оператор: здравствуйте",
    )
    body = raw.http_response.json()
    assert body["text"] == script.text() and body["languages"] == [{"code": "ru"}]
    assert body["usage"] == {"type": "duration", "seconds": 40}
    assert set(body) == {"text", "languages", "usage"}  # no times, no speakers


def test_gpt_transcribe_refuses_both_language_fields_and_bad_keywords(
    client: openai.OpenAI, mono_call
) -> None:
    _, path = mono_call
    with pytest.raises(openai.BadRequestError) as both:
        client.audio.transcriptions.create(
            file=path.open("rb"), model="gpt-transcribe", language="ru", languages=["ru"]
        )
    assert both.value.param == "languages"
    for keyword in ("<b>", "two\nlines", "a>b"):
        with pytest.raises(openai.BadRequestError) as bad:
            client.audio.transcriptions.create(
                file=path.open("rb"), model="gpt-transcribe", keywords=["fine", keyword]
            )
        assert bad.value.param == "keywords"


def test_the_model_list_carries_the_announced_shutdown_dates(
    server: RunningServer, emulator: SttEmulator
) -> None:
    listed = httpx.get(f"{server.url}/v1/models").json()
    dates = {m["id"]: m["shutdown_date"] for m in listed["data"]}
    assert listed["object"] == "list"
    assert dates["whisper-1"] == dates["gpt-4o-transcribe-diarize"] == "2027-02-26"
    assert dates["gpt-4o-mini"] == "2027-01-14"
    assert dates["gpt-transcribe"] is None and dates["gpt-6-luna"] is None
    assert emulator.stats()["model_lists"] == 1 and emulator.stats()["requests"] == 0
