"""The sandbox's speech content (`content="speech"`, docs/specs/sandbox_call_content.md): its
proportions, the emulator hearing the spoken words, the lines it invents over non-speech as
Whisper does, and what the export makes of them: the guards keep the invented lines out of
the transcript, and a call of line noise alone is `no_speech` at no cost with STT_SEND=speech.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from calltexts_assets.clients.openai_base import OpenAIConnection
from calltexts_assets.clients.whisper import WhisperClient
from calltexts_assets.transcripts.dialogue import NO_SPEECH, Transcript, transcribe_call
from calltexts_sandbox.calls import content
from calltexts_sandbox.calls.tones import HeardWord
from calltexts_sandbox.portal.files import renderer_for
from calltexts_sandbox.server import RunningServer
from calltexts_sandbox.stt import answers
from calltexts_sandbox.stt.app import SttEmulator
from calltexts_sandbox.stt.hearing import listen
from calltexts_tests.support.speech import needs_espeak

INVENTED_PHRASES = (answers.MUSIC_TAG, answers.CREDIT, answers.SILENCE_TEXT)


def test_the_content_comes_in_the_documented_proportions() -> None:
    ids = [f"sbx.{n:020x}" for n in range(20_000)]
    made = [content.call_content(call_id, 120) for call_id in ids]
    assert made[:50] == [content.call_content(call_id, 120) for call_id in ids[:50]]  # pure
    kinds = Counter(c.kind for c in made)
    assert 0.04 < kinds[content.NOISE_ONLY] / len(ids) < 0.06
    assert 0.02 < kinds[content.MUSIC_ONLY] / len(ids) < 0.04
    talks = [c for c in made if c.kind == content.CONVERSATION]
    rings = [c.ring_back_sec for c in talks if c.ring_back_sec]
    assert 0.49 < len(rings) / len(talks) < 0.55
    assert min(rings) >= 4.0 and max(rings) <= 20.0
    holds = [c.hold for c in talks if c.hold]
    assert 0.32 < len(holds) / len(talks) < 0.38
    assert all(5.0 <= length <= 0.4 * 120 for _, length, _ in holds)
    music = sum(what == content.MUSIC_HOLD for _, _, what in holds) / len(holds)
    assert 0.56 < music < 0.64
    # shorter calls are not put on hold, and ring-back takes at most 30 % of a call
    short = [content.call_content(call_id, 30) for call_id in ids[:2000]]
    assert not any(c.hold for c in short)
    assert max(c.ring_back_sec for c in short) <= 9.0


def test_whisper_invents_over_what_is_not_speech_and_gpt_models_do_not() -> None:
    words = [
        HeardWord(0.5, 1.0, "да", 0),
        HeardWord(1.5, 2.0, "нет", 1),
        HeardWord(40.0, 40.5, "хорошо", 0),
    ]
    music = [(2.5, 39.5)]
    made = answers.inventions(words, 41.0, music)
    # 38 s without words: one line per 30 s window Whisper decodes, each sure of itself
    assert [(m.start, m.silence) for m in made] == [(2.5, False), (32.5, False)]
    quiet = answers.inventions(words, 41.0, [])
    assert [m.text for m in quiet] == [answers.SILENCE_TEXT] * 2
    assert all(m.silence for m in quiet)
    assert len(answers.inventions(words, 40.5 + 3.0, music)) == 3  # a tail of 3 s: a line
    assert len(answers.inventions(words, 40.5 + 2.9, music)) == 2  # shorter: none

    # every habit shows up, by where the stretch lies; a loop repeats the words before it
    texts = {
        m.text
        for length in range(30, 90)
        for m in answers.inventions(words[:2], float(length), [(2.0, float(length))])
    }
    loop = " ".join(["да нет"] * answers.LOOP_REPEATS)
    assert texts == {answers.MUSIC_TAG, answers.CREDIT, answers.SILENCE_TEXT, loop}

    def ask(model: str, response_format: str) -> answers.Answer:
        req = answers.Request(answers.OPENAI, model, response_format, ("word",), "ru", "", "")
        return answers.transcription(req, words, 41.0, hallucinate=False, noises=music)

    whisper = ask(answers.WHISPER_1, "verbose_json")
    assert whisper.invented == tuple(m.text for m in made)
    body = whisper.body
    assert isinstance(body, dict)
    segments = [s["text"].strip() for s in body["segments"]]
    assert segments == ["да нет", *whisper.invented, "хорошо"]
    assert [w["word"] for w in body["words"]][:2] == ["да", "нет"]
    assert len(body["words"]) == 3 + sum(len(t.split()) for t in whisper.invented)
    assert body["usage"] == {"type": "duration", "seconds": 41}
    gpt = ask(answers.GPT_TRANSCRIBE, "json")
    assert gpt.invented == () and gpt.text == "да нет хорошо"


# -- through the emulator and the export's transcription ---------------------------------------


def _call_id(kind: str, *, ring: bool = False, hold: str = "", duration: int = 90) -> str:
    """The first of the ids sbx.speech-test-<n> whose content is what the test needs."""
    for n in range(5_000):
        call_id = f"sbx.speech-test-{n}"
        made = content.call_content(call_id, duration)
        if made.kind != kind or bool(made.ring_back_sec) != ring:
            continue
        if kind != content.CONVERSATION or (made.hold and made.hold[2] == hold):
            return call_id
    raise AssertionError("no such id")


@pytest.fixture(scope="module")
def emulator() -> SttEmulator:
    return SttEmulator(hearing="speech")


@pytest.fixture(scope="module")
def server(emulator: SttEmulator) -> Iterator[RunningServer]:
    with emulator.serve() as running:
        yield running


@pytest.fixture
def whisper(server: RunningServer, emulator: SttEmulator) -> WhisperClient:
    emulator.reset()
    return WhisperClient(OpenAIConnection(base_url=server.url + "/v1", retry_wait_scale=0.001))


def _recording(tmp: Path, call_id: str, duration: int, fmt: str = "mp3") -> Path:
    path = tmp / f"{call_id}.{fmt}"
    data = renderer_for("speech")(call_id, duration, True, fmt)
    assert isinstance(data, bytes)
    path.write_bytes(data)
    return path


def _said(transcript: Transcript) -> dict[str | None, list[str]]:
    said: dict[str | None, list[str]] = {}
    for line in transcript.lines:
        said.setdefault(line.speaker, []).extend(line.text.split())
    return said


@needs_espeak
@pytest.mark.parametrize("fmt", ["mp3", "wav"])
def test_the_emulator_hears_every_word_of_a_speech_call_and_the_sounds_between(
    tmp_path: Path, fmt: str
) -> None:
    call_id = _call_id(content.CONVERSATION, ring=True, hold=content.MUSIC_HOLD)
    script, made = content.speech_script(call_id, 90, True)
    assert made.hold is not None and made.ring_back_sec > 0
    heard = listen(_recording(tmp_path, call_id, 90, fmt), speech=True)
    assert [(w.text, w.side) for w in heard.words] == [
        (w.text, content.CHANNEL_OF_ROLE[t.role]) for t in script.all_turns for w in t.words
    ]
    assert all(
        abs(h.start - w.start) < 0.05 for h, w in zip(heard.words, script.words(), strict=True)
    )
    # the ring-back's rings and the hold music are heard as sound that is no word
    hold_start, hold_len, _ = made.hold
    assert any(a <= hold_start + 0.1 and b >= hold_start + hold_len - 0.1 for a, b in heard.noises)
    assert heard.noises[0][0] == 0.0


@needs_espeak
def test_invented_lines_stay_out_of_the_transcript_and_speech_only_sends_none(
    tmp_path: Path, whisper: WhisperClient, emulator: SttEmulator
) -> None:
    call_id = _call_id(content.CONVERSATION, ring=True, hold=content.MUSIC_HOLD)
    script, _ = content.speech_script(call_id, 90, True)
    path = _recording(tmp_path, call_id, 90)
    wanted = {role: script.text(role).split() for role in ("operator", "client")}

    whole = transcribe_call(path, whisper, role_mode="energy", send="all", workdir=tmp_path)
    invented = emulator.stats()["invented_texts"]
    assert len(invented) >= 2  # over the ring-back and over the hold music
    text = " ".join(line.text for line in whole.lines)
    assert not any(phrase in text for phrase in INVENTED_PHRASES)  # the guards strip them
    assert whole.hallucinations >= sum(t in INVENTED_PHRASES for t in invented)
    assert whole.sent_sec == pytest.approx(90, abs=0.1)

    emulator.reset()
    speech = transcribe_call(path, whisper, role_mode="energy", send="speech", workdir=tmp_path)
    assert emulator.stats()["invented_lines"] == 0  # no non-speech was sent to invent over
    assert _said(speech) == wanted  # every word, under its role, in order
    assert speech.sent_sec < whole.sent_sec - made_non_speech(call_id, 90) + 6


def made_non_speech(call_id: str, duration: int) -> float:
    return content.speech_script(call_id, duration, True)[1].non_speech_sec(duration)


@needs_espeak
@pytest.mark.parametrize("kind", [content.NOISE_ONLY, content.MUSIC_ONLY])
def test_a_call_without_speech_is_no_speech_at_no_cost_and_whisper_would_invent_over_it(
    tmp_path: Path, whisper: WhisperClient, emulator: SttEmulator, kind: str
) -> None:
    path = _recording(tmp_path, _call_id(kind, duration=60), 60)
    speech = transcribe_call(path, whisper, role_mode="energy", send="speech", workdir=tmp_path)
    assert speech.verdict == NO_SPEECH
    assert speech.billed_sec == () and speech.sent_sec == 0 and speech.lines == ()
    assert emulator.stats()["transcriptions"] == 0

    whole = transcribe_call(path, whisper, role_mode="energy", send="all", workdir=tmp_path)
    assert emulator.stats()["invented_lines"] == 2  # a line per 30 s window
    assert sum(whole.billed_sec) == 60
    assert whole.verdict == ""
