"""The STT emulator answers as the servers users run: OpenAI's models, speaches, LocalAI.

Each answer is held against the documented shapes (docs/specs/payloads/stt/): the same keys,
the same types, the same errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calltexts_sandbox.calls import mp3_frames
from calltexts_sandbox.calls.script import CallScript, call_script
from calltexts_sandbox.server import RunningServer
from calltexts_sandbox.stt.app import SttEmulator

PAYLOADS = Path(__file__).resolve().parents[2] / "docs/specs/payloads/stt"


def payload(name: str) -> dict[str, Any]:
    return json.loads((PAYLOADS / name).read_text())


@pytest.fixture(scope="module")
def stereo_call(tmp_path_factory: pytest.TempPathFactory) -> tuple[CallScript, Path]:
    script = call_script("flavours", 50, stereo=True)
    path = tmp_path_factory.mktemp("flavours") / "call.mp3"
    path.write_bytes(mp3_frames.render_mp3(script))
    return script, path


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[SttEmulator, RunningServer]]]:
    running: dict[str, tuple[SttEmulator, RunningServer]] = {}
    for flavour in ("openai", "speaches", "localai"):
        emulator = SttEmulator(flavour=flavour)
        running[flavour] = (emulator, emulator.serve())
    yield running
    for _, server in running.values():
        server.stop()


@pytest.fixture(autouse=True)
def _clean(servers) -> None:
    for emulator, _ in servers.values():
        emulator.reset()


def post(server: RunningServer, path: Path, **fields: Any) -> httpx.Response:
    # a list goes as repeated `name[]` parts, as the SDK sends it
    data = {f"{k}[]" if isinstance(v, list) else k: v for k, v in fields.items()}
    with path.open("rb") as f:
        return httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": (path.name, f, "audio/mpeg")},
            data=data,
            timeout=30,
        )


def keys_like(answer: dict[str, Any], documented: dict[str, Any]) -> None:
    assert set(documented) <= set(answer), set(documented) - set(answer)


def test_whisper_1_verbose_json_with_words_and_segments(servers, stereo_call) -> None:
    emulator, server = servers["openai"]
    script, path = stereo_call
    body = post(
        server, path, model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    ).json()  # fmt: skip
    keys_like(body, payload("whisper1_verbose_json_segments.json"))
    keys_like(body["segments"][0], payload("whisper1_verbose_json_segments.json")["segments"][0])
    assert body["language"] == "russian"  # whisper-1 names the language
    assert [w["word"] for w in body["words"]] == [w.text for w in script.words()]
    # Billed per whole second, rounded up (8.47 s -> 9 in OpenAI's example): the file is 50 s
    # on the 36 ms frame grid of the sandbox, a little over.
    assert body["usage"] == {"type": "duration", "seconds": math.ceil(body["duration"])}
    # It hears the file downmixed, and knows which channel each word sounds on.
    sides = emulator.stats()["words_by_side"]
    assert sides == {"0": len(script.words("operator")), "1": len(script.words("client"))}
    assert emulator.stats()["billed_minutes"] == 1


def test_gpt_4o_models_answer_json_with_token_usage_and_refuse_verbose(servers, stereo_call):
    emulator, server = servers["openai"]
    _, path = stereo_call
    body = post(server, path, model="gpt-4o-transcribe", response_format="json").json()
    keys_like(body, payload("gpt4o_transcribe_json_usage.json"))
    assert body["usage"]["type"] == "tokens" and body["usage"]["output_tokens"] > 0
    refused = post(server, path, model="gpt-4o-mini-transcribe", response_format="verbose_json")
    assert refused.status_code == 400
    documented = payload("error_invalid_response_format.json")["error"]
    assert {k: refused.json()["error"][k] for k in ("type", "param", "code")} == {
        k: documented[k] for k in ("type", "param", "code")
    }
    assert emulator.stats()["billed_minutes"] == 0  # billed by tokens, not minutes


def test_gpt_transcribe_reports_languages(servers, stereo_call) -> None:
    _, server = servers["openai"]
    _, path = stereo_call
    body = post(server, path, model="gpt-transcribe", response_format="json").json()
    assert body["languages"] == [{"code": "ru"}] and body["usage"]["type"] == "duration"


def test_diarize_needs_chunking_and_gives_speakers(servers, stereo_call) -> None:
    _, server = servers["openai"]
    _, path = stereo_call
    refused = post(server, path, model="gpt-4o-transcribe-diarize", response_format="diarized_json")
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "chunking_strategy"
    body = post(
        server, path, model="gpt-4o-transcribe-diarize", response_format="diarized_json",
        chunking_strategy="auto",
    ).json()  # fmt: skip
    documented = payload("gpt4o_transcribe_diarize_diarized_json.json")
    keys_like(body, documented)
    keys_like(body["segments"][0], documented["segments"][0])
    assert {s["speaker"] for s in body["segments"]} == {"A", "B"}  # the two channels


def test_a_long_upload_is_refused_by_the_gpt_4o_models(servers, tmp_path: Path) -> None:
    _, server = servers["openai"]
    path = tmp_path / "long.mp3"
    path.write_bytes(mp3_frames.render_mp3(CallScript("long", 1500, False, ())))
    refused = post(server, path, model="gpt-4o-transcribe", response_format="json")
    assert refused.status_code == 400
    assert "longer than 1400 seconds" in refused.json()["error"]["message"]


def test_quota_exhausted_is_the_documented_429(servers, stereo_call) -> None:
    emulator, server = servers["openai"]
    _, path = stereo_call
    emulator.set_faults(quota_exhausted=1, quota_code="project_spend_limit_exceeded")
    answer = post(server, path, model="whisper-1")
    assert answer.status_code == 429 and "retry-after" not in answer.headers
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "project_spend_limit_exceeded")
    assert error["message"].startswith(
        payload("error_insufficient_quota.json")["error"]["message"][:40]
    )


def test_whisper_writes_on_silence(servers, tmp_path: Path) -> None:
    emulator, server = servers["openai"]
    path = tmp_path / "silence.mp3"
    path.write_bytes(mp3_frames.render_mp3(CallScript("silence", 10, True, ())))
    body = post(server, path, model="whisper-1", response_format="verbose_json").json()
    assert body["text"] == "Продолжение следует..."
    assert body["segments"][0]["no_speech_prob"] > 0.6
    assert emulator.stats()["hallucinations"] == 1


def test_injected_hallucinations(servers, stereo_call) -> None:
    emulator, server = servers["openai"]
    _, path = stereo_call
    emulator.set_faults(hallucinate=1)
    first = post(server, path, model="whisper-1", response_format="verbose_json").json()
    second = post(server, path, model="whisper-1", response_format="verbose_json").json()
    assert "Субтитры создавал DimaTorzok" in first["text"] and "Продолжение" in first["text"]
    assert "DimaTorzok" not in second["text"]


def test_speaches_answers_a_code_and_no_usage(servers, stereo_call) -> None:
    _, server = servers["speaches"]
    script, path = stereo_call
    body = post(
        server, path, model="Systran/faster-whisper-large-v3", response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    ).json()  # fmt: skip
    keys_like(body, payload("speaches_verbose_json_words_derived_from_source.json"))
    assert body["language"] == "ru" and body["usage"] is None
    assert [w["word"].strip() for w in body["words"]] == [w.text for w in script.words()]
    missing = httpx.post(f"{server.url}/v1/audio/transcriptions", data={"model": "x"})
    assert missing.status_code == 400 and "detail" in missing.json()


def test_localai_answers_nanoseconds_without_language_or_duration(servers, stereo_call):
    _, server = servers["localai"]
    script, path = stereo_call
    body = post(server, path, model="ggml-whisper-base").json()
    documented = payload("localai_response.json")
    assert set(body) == set(documented)  # segments and text, nothing else
    assert set(body["segments"][0]) == set(documented["segments"][0])
    first = script.words()[0]
    assert body["segments"][0]["start"] == pytest.approx(first.start * 1e9, abs=0.05e9)
    assert isinstance(body["segments"][0]["start"], int)


def test_the_flavour_follows_the_model_id(servers, stereo_call) -> None:
    _, server = servers["openai"]
    _, path = stereo_call
    body = post(server, path, model="Systran/faster-whisper-small", response_format="json").json()
    assert body["usage"] is None and "logprobs" in body  # answered as speaches does
