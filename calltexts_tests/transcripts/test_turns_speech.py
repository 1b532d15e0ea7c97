"""The turns mode on real speech (espeak-ng, Russian) in a stereo call: the voice activity
detector finds each side's turns on its own channel; each goes as a request of its own, in
order, with the dialogue so far as prompt; each text lands under its side at its start.

The STT here is a stand-in that answers each clip with the utterance spoken at the clip's
time on the clip's channel (it knows the call's script, as the sandbox emulator knows its
tones'): what is tested is which audio is sent when, and where its text lands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from calltexts_assets.clients.stt_response import Segment, SttResult
from calltexts_assets.transcripts.dialogue import transcribe_call
from calltexts_tests.support.speech import needs_espeak, spoken

RATE = 16_000
# (side, start second, text): operator left (0), client right (1); the client's "Да,
# конечно" is said over the operator's second utterance (cross-talk). (A lone "Да." of
# 0.5 s in digital silence is not found by the detector at 16 kHz: see the closing note.)
SCRIPT = [
    (0, 0.5, "Здравствуйте, компания Доставка, меня зовут Анна."),
    (1, 5.5, "Добрый день, я хочу узнать статус заказа."),
    (0, 10.5, "Назовите, пожалуйста, номер заказа и адрес доставки."),
    (1, 12.0, "Да, конечно."),
    (1, 16.5, "Номер сорок два, улица Ленина, дом пять."),
    (0, 21.5, "Спасибо, курьер приедет завтра утром."),
]
DURATION = 26.0


@dataclass
class _ScriptedStt:
    """Answers a clip with the utterances of its channel that it overlaps, as gpt-transcribe
    would (json: text, languages, usage in whole seconds)."""

    spans: list[tuple[int, float, float, str]]  # side, start, end, text
    model: str = "gpt-transcribe"
    language: str = "ru"
    max_file_bytes: int = 25 * 2**20
    max_request_sec: float = 240.0
    sent: list[tuple[float, str]] = field(default_factory=list)  # (duration, prompt)

    def transcribe_file(self, path, duration_sec=None, *, prompt: str = "") -> SttResult:
        info = soundfile.info(str(path))
        assert info.channels == 1 and info.samplerate == 16_000  # one channel, never the call
        self.sent.append((info.duration, prompt))
        side, start = int(Path(path).stem.split("_")[-1]), self.offsets[-1]
        end = start + info.duration
        text = " ".join(t for s, a, b, t in self.spans if s == side and a < end and b > start)
        billed = float(np.ceil(info.duration))
        return SttResult(
            text, "ru", None, (Segment(0.0, info.duration, text),) if text else (), timed=False,
            billed_seconds=billed, languages_reported=True,
        )  # fmt: skip

    offsets: list[float] = field(default_factory=list)


@needs_espeak
def test_turns_land_under_their_side_in_order_at_their_start(tmp_path, monkeypatch) -> None:
    audio = np.zeros((int(DURATION * RATE), 2), dtype=np.float32)
    spans = []
    for side, start, text in SCRIPT:
        voice = spoken(text, tmp_path, RATE)
        a = int(start * RATE)
        audio[a : a + len(voice), side] += voice
        spans.append((side, start, start + len(voice) / RATE, text))
    call = tmp_path / "call.wav"
    soundfile.write(str(call), audio, RATE, subtype="PCM_16")
    stt = _ScriptedStt(spans)

    # The clip's channel and start, for the stand-in (it knows the script, not the audio).
    from calltexts_assets.transcripts import dialogue

    real_clips = dialogue.clips

    def keyed_clips(*args):
        for group, clip in real_clips(*args):
            stt.offsets.append(group.start)
            yield group, clip.rename(clip.with_name(f"{clip.stem}_{group.side}.flac"))

    monkeypatch.setattr(dialogue, "clips", keyed_clips)
    transcript = transcribe_call(call, stt, role_mode="turns")

    assert transcript.roles == "turns"
    got = [(line.speaker, line.text) for line in transcript.lines]
    roles = ("operator", "client")
    assert got == [(roles[side], text) for side, _, text in SCRIPT]
    for line, (_, start, _) in zip(transcript.lines, SCRIPT, strict=True):
        assert start - 0.4 <= line.start <= start + 0.2  # at its start (VAD padding)
    # one request per utterance; each carries the dialogue before it as prompt
    assert transcript.requests == len(SCRIPT) == len(stt.sent)
    assert stt.sent[0][1] == "" and SCRIPT[0][2] in stt.sent[1][1]
    assert SCRIPT[3][2] in stt.sent[4][1]  # the interjection is part of the dialogue so far
    # speech only, billed once: far less than the call's two channels, and the sum of the
    # requests' whole seconds is the call's one billed figure
    sent = sum(duration for duration, _ in stt.sent)
    assert sent < DURATION and transcript.billed_sec == (sum(np.ceil(d) for d, _ in stt.sent),)
    assert transcript.language == "ru"
