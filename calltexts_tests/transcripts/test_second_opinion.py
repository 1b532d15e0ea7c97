"""A second opinion for doubtful calls (issue #23): the signs of doubt, one more request to
the fallback model, the better answer kept, both billed. The STT is mocked on loopback
addresses (respx): each answer is what OpenAI's verbose_json documents (stt_wire §2.2-2.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import respx
import soundfile

from calltexts_assets.billing.cost import MINUTE, SECOND
from calltexts_assets.billing.tariffs import Tariff, Tariffs
from calltexts_assets.clients.openai_base import OpenAIConnection
from calltexts_assets.clients.whisper import WhisperClient
from calltexts_assets.transcripts.dialogue import Transcript, transcribe_call
from calltexts_assets.transcripts.lines import DialogueLine
from calltexts_assets.transcripts.second_opinion import (
    LANGUAGE,
    LOW_LOGPROB,
    NEEDS_REVIEW,
    REPETITION,
    UNHEARD_SPEECH,
    WORD_RATE,
    doubts,
    with_second_opinion,
)
from calltexts_assets.transcripts.step import _transcribed

MAIN, FALLBACK = "http://127.0.0.1:9101/v1", "http://127.0.0.1:9102/v1"
# whisper-1 per second; the compatible server's large-v3 per started minute, its tariff set
TARIFFS = Tariffs(Tariff.of(0.006, SECOND), "whisper-1", Tariff.of(0.006, MINUTE), "large-v3")
CALL_SEC = 20.0
PLAIN = (
    "Здравствуйте это компания ромашка меня зовут анна чем могу помочь да добрый день я хотел "
    "бы узнать статус моего заказа номер двенадцать он был оформлен на прошлой неделе"
)
LOOP = " ".join(["Спасибо за внимание."] * 40)  # Whisper's repetition loop


def _call(tmp: Path) -> Path:
    """A mono tone call, above the level floor throughout (sent whole)."""
    t = np.arange(int(CALL_SEC * 8000)) / 8000
    path = tmp / "call.wav"
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 8000, subtype="PCM_16")
    return path


def _verbose(text: str, avg_logprob: float = -0.3) -> dict[str, Any]:
    segment = {
        "id": 0, "seek": 0, "start": 0.0, "end": CALL_SEC, "text": " " + text, "tokens": [50364],
        "temperature": 0.0, "avg_logprob": avg_logprob, "compression_ratio": 1.2,
        "no_speech_prob": 0.01,
    }  # fmt: skip
    return {
        "task": "transcribe", "language": "russian", "duration": CALL_SEC, "text": text,
        "segments": [segment], "usage": {"type": "duration", "seconds": int(CALL_SEC)},
    }  # fmt: skip


def _client(base_url: str, model: str) -> WhisperClient:
    return WhisperClient(OpenAIConnection(base_url=base_url, retry_wait_scale=0.001), model=model)


def _ask(tmp: Path, first: dict[str, Any], second: dict[str, Any]) -> tuple[Transcript, Any, Any]:
    path = _call(tmp)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        main = mock.post(f"{MAIN}/audio/transcriptions").mock(httpx.Response(200, json=first))
        fb = mock.post(f"{FALLBACK}/audio/transcriptions").mock(httpx.Response(200, json=second))
        main_stt, fallback_stt = _client(MAIN, "whisper-1"), _client(FALLBACK, "large-v3")
        transcript = with_second_opinion(
            transcribe_call(path, main_stt, workdir=tmp),
            lambda first: transcribe_call(path, fallback_stt, workdir=tmp),
            expected_languages=("ru",),
        )
    return transcript, main, fb


def test_a_repetition_loop_is_sent_once_to_the_fallback_whose_answer_is_kept(tmp_path) -> None:
    transcript, main, fallback = _ask(tmp_path, _verbose(LOOP), _verbose(PLAIN))
    assert (main.call_count, fallback.call_count) == (1, 1)
    assert transcript.doubts == (REPETITION,)
    assert transcript.fallback_kept and transcript.model == "large-v3"
    assert transcript.text == PLAIN and transcript.verdict == ""
    # both requests billed: whisper-1 per second on usage.seconds, the compatible server's
    # model per started minute on the audio sent
    assert transcript.requests == 2 and transcript.sent_sec == pytest.approx(2 * CALL_SEC)
    assert transcript.billed_sec == (20.0,) and transcript.fallback_billed_sec == (20.0,)
    updates = _transcribed(transcript, TARIFFS)
    assert updates["cost"] == pytest.approx(20 * 0.006 / 60 + 0.006)  # 20 s + a started minute
    # the row names the model of each list of seconds: the first's, though the other was kept
    assert (updates["model"], updates["fallback_model"]) == ("whisper-1", "large-v3")
    assert updates["fallback_request_sec"] == "[20.0]" and updates["fallback_kept"] is True
    assert updates["doubts"] == "repetition" and updates["verdict"] is None


def test_a_fallback_as_doubtful_keeps_the_first_answer_and_the_call_needs_review(
    tmp_path,
) -> None:
    transcript, main, fallback = _ask(tmp_path, _verbose(LOOP), _verbose(LOOP, -1.5))
    assert (main.call_count, fallback.call_count) == (1, 1)
    assert not transcript.fallback_kept and transcript.model == "whisper-1"
    assert transcript.verdict == NEEDS_REVIEW and transcript.requests == 2
    assert transcript.fallback_model == "large-v3" and transcript.fallback_billed_sec == (20.0,)


def test_a_trusted_answer_asks_no_second_opinion(tmp_path) -> None:
    transcript, main, fallback = _ask(tmp_path, _verbose(PLAIN), _verbose(PLAIN))
    assert (main.call_count, fallback.call_count) == (1, 0)
    assert transcript.doubts == () and transcript.fallback_model == ""
    assert transcript.requests == 1 and transcript.verdict == ""


def test_without_a_fallback_a_doubtful_call_needs_review(tmp_path) -> None:
    path = _call(tmp_path)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        route = mock.post(f"{MAIN}/audio/transcriptions").mock(
            httpx.Response(200, json=_verbose(PLAIN, avg_logprob=-1.4))
        )
        first = transcribe_call(path, _client(MAIN, "whisper-1"), workdir=tmp_path)
    transcript = with_second_opinion(first, None)
    assert route.call_count == 1 and first.low_logprob_share == 1.0
    assert transcript.doubts == (LOW_LOGPROB,) and transcript.verdict == NEEDS_REVIEW


def _made(text: str, **changes: Any) -> Transcript:
    line = DialogueLine(0.0, "speaker", text, 30.0)
    fields = {"language": "ru", "duration_sec": 60.0, "lines": (line,), "model": "m",
              "requests": 1, "pieces": 1, **changes}  # fmt: skip
    return Transcript(**fields)


def test_the_signals_each_fire_on_their_own() -> None:
    assert doubts(_made(PLAIN, speech_sec=10.0, unheard_sec=0.0), ("ru",)) == ()
    assert doubts(_made(PLAIN, low_logprob_share=0.5)) == (LOW_LOGPROB,)
    assert doubts(_made(PLAIN, low_logprob_share=0.2)) == ()
    assert doubts(_made(LOOP)) == (REPETITION,)
    # 25 words over 60 s of speech is 0.42 a second: little was heard of what was said
    assert doubts(_made(PLAIN, speech_sec=60.0, unheard_sec=0.0)) == (WORD_RATE,)
    assert doubts(_made(PLAIN, speech_sec=10.0)) == ()  # 2.5 words a second
    assert doubts(_made(PLAIN, speech_sec=12.0, unheard_sec=10.0)) == (UNHEARD_SPEECH,)
    assert doubts(_made(PLAIN, language="en"), ("ru",)) == (LANGUAGE,)
    assert doubts(_made(PLAIN, language="und"), ("ru",)) == ()
    assert doubts(_made(LOOP, verdict="no_speech", pieces=0)) == ()
