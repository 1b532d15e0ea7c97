"""A second opinion for doubtful calls (issue #23): the signs of doubt, one more request to
the fallback model, the better answer kept, both billed. The STT is mocked on loopback
addresses (respx): each answer is what OpenAI's verbose_json documents (stt_wire §2.2-2.3)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import respx
import soundfile

from calltexts_assets.billing.budget import BudgetReached
from calltexts_assets.billing.cost import MINUTE, SECOND
from calltexts_assets.billing.tariffs import Tariff, Tariffs, UnpricedModel
from calltexts_assets.clients.openai_base import OpenAIConnection
from calltexts_assets.clients.whisper import WhisperClient
from calltexts_assets.transcripts.dialogue import Transcript, transcribe_call
from calltexts_assets.transcripts.lines import DialogueLine
from calltexts_assets.transcripts.second_opinion import (
    FALLBACK_FAILED,
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


def test_a_stored_answer_is_costed_by_its_own_models_after_the_settings_changed() -> None:
    """Re-adopted after WHISPER_MODEL and WHISPER_FALLBACK_MODEL changed: each model's
    requests at that model's tariff, not at today's configured ones."""
    answer = _made(
        PLAIN, model="large-v3", first_model="whisper-1", billed_sec=(20.0,),
        fallback_model="large-v3", fallback_billed_sec=(20.0,), fallback_kept=True,
    )  # fmt: skip
    today = Tariffs(
        Tariff.of(0.0045, SECOND), "gpt-transcribe", Tariff.of(0.02, MINUTE), "medium",
        {"whisper-1": Tariff.of(0.006, SECOND)},
    )  # fmt: skip
    with pytest.raises(UnpricedModel, match="large-v3"):  # neither configured nor listed now
        _transcribed(answer, today)
    today = replace(today, fallback=Tariff.of(0.01, MINUTE), fallback_model="large-v3")
    updates = _transcribed(answer, today)
    assert updates["cost"] == pytest.approx(20 * 0.006 / 60 + 0.01)
    assert updates["model"] == "whisper-1"


def test_a_second_opinion_the_budget_refuses_keeps_the_first_answer_for_review() -> None:
    first = _made(LOOP, billed_sec=(30.0,))

    def refused(_: Transcript) -> Transcript:
        raise BudgetReached("budget reached: the second opinion on call c1 would cross it")

    transcript = with_second_opinion(first, refused)
    assert transcript.verdict == NEEDS_REVIEW and transcript.fallback_model == ""
    assert transcript.doubts == (REPETITION, FALLBACK_FAILED)
    assert transcript.requests == 1 and transcript.billed_sec == (30.0,)


def test_a_fallback_on_the_same_server_shares_the_first_models_requests_in_flight() -> None:
    """Issue #23 review: a second model on WHISPER_MODEL's server takes the same slots, so the
    server never has more than `concurrency` requests of the run at once: with one request of
    each model in flight under a bound of 2, neither model has a slot left."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from calltexts_assets.clients.whisper import SttResult
    from calltexts_assets.transcripts.dialogue import RequestsInFlight

    entered = threading.Semaphore(0)
    release = threading.Event()

    class Stt:
        language, max_file_bytes, max_request_sec = "ru", 1000, 60.0

        def __init__(self, model: str) -> None:
            self.model = model

        def transcribe_file(self, path: Any, duration_sec: float | None = None) -> SttResult:
            entered.release()
            release.wait(timeout=60)
            return SttResult(text=self.model, language="ru", duration=1.0, segments=())

    primary = RequestsInFlight(Stt("whisper-1"), 2)
    fallback = primary.sharing_with(Stt("gpt-transcribe"))
    own = RequestsInFlight(Stt("large-v3"), 2)  # another server's: bounded on its own
    assert fallback.model == "gpt-transcribe"
    with ThreadPoolExecutor(max_workers=2) as pool:
        asked = [pool.submit(stt.transcribe_file, "call.wav") for stt in (primary, fallback)]
        assert entered.acquire(timeout=60) and entered.acquire(timeout=60)  # both in flight
        taken = [stt._slots.acquire(blocking=False) for stt in (primary, fallback, own)]
        release.set()
        texts = [future.result(timeout=60).text for future in asked]
    assert taken == [False, False, True]  # the server's two slots are both taken
    assert texts == ["whisper-1", "gpt-transcribe"]


def test_a_stored_answer_whose_model_cannot_be_priced_is_not_adopted(tmp_path) -> None:
    """The ledger lost a call whose answer is stored; WHISPER_FALLBACK_MODEL changed since,
    and the old fallback has no list price: the answer is not adopted at a guessed tariff (the
    call is asked again); with that model's tariff known it is adopted at it."""
    from calltexts_assets.clients.storage import LocalStorage
    from calltexts_assets.state.ledger import Status
    from calltexts_assets.transcripts.answers import store_answer
    from calltexts_assets.transcripts.step import ADOPTED, from_stored_answer
    from calltexts_tests.support.records import transcribed_record

    storage = LocalStorage(tmp_path)
    record = transcribed_record(
        1, day="2026-11-24", call_id="c1", started_at="2026-11-24T10:00:00+03:00",
        seconds=20.0, status=Status.DOWNLOADED, transcript_path=None, cost=None,
    )  # fmt: skip
    answer = _made(
        PLAIN, model="large-v3", first_model="whisper-1", billed_sec=(20.0,),
        fallback_model="large-v3", fallback_billed_sec=(20.0,), fallback_kept=True,
    )  # fmt: skip
    store_answer(storage, record, answer)
    words = {"labels": "ru", "mask_phones": False, "sandbox": False}
    today = Tariffs(
        Tariff.of(0.0045, SECOND), "gpt-transcribe", Tariff.of(0.02, MINUTE), "medium",
        {"whisper-1": Tariff.of(0.006, SECOND)},
    )  # fmt: skip
    assert from_stored_answer(record, storage=storage, tariffs=today, **words) is None
    known = replace(today, listed={**today.listed, "large-v3": Tariff.of(0.01, MINUTE)})
    outcome = from_stored_answer(record, storage=storage, tariffs=known, **words)
    assert outcome is not None and outcome.label == ADOPTED
    assert outcome.updates["cost"] == pytest.approx(20 * 0.006 / 60 + 0.01)
