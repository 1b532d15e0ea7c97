"""STT_SEND=speech on real speech (espeak-ng, Russian) between hold music, silence and line
noise: only the speech goes to the STT, every word comes back at its second of the call,
a call of line noise alone is not sent at all, and text over non-speech is dropped.

The STT is a stand-in that knows the script's utterances (their sound and text, not where
they were put): it finds each one's waveform in the file it is sent (cross-correlation), and
answers each found with its words timed inside that file, as whisper-1's verbose_json does. With
`invent`, it also answers every stretch of non-speech it is sent with a credit line, as
Whisper does over music."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile

from calltexts_assets.audio import decode
from calltexts_assets.audio.chunks import Limits, Piece
from calltexts_assets.audio.speech import merge_spans
from calltexts_assets.clients.stt_response import Segment, SttResult, Word
from calltexts_assets.state.ledger import NO_SPEECH
from calltexts_assets.transcripts.dialogue import transcribe_call
from calltexts_assets.transcripts.speech_only import joined_pieces, pack
from calltexts_tests.support.speech import (
    found,
    hold_music,
    line_noise,
    needs_espeak,
    ring_back,
    spoken,
)

RATE = 16_000
# (side, start second, text); between them: ring-back, hold music, a long silence.
SCRIPT = [
    (0, 12.0, "Здравствуйте, компания Доставка, меня зовут Анна."),
    (1, 17.0, "Добрый день, я хочу узнать статус заказа."),
    (0, 22.0, "Минуту, пожалуйста, я посмотрю."),
    (0, 58.0, "Спасибо за ожидание, курьер приедет завтра утром."),
    (1, 63.0, "Хорошо, спасибо, до свидания."),
]
DURATION = 70.0
CREDIT = "Субтитры сделал DimaTorzok"


Voice = tuple[str, np.ndarray]  # an utterance's text and its sound


def stereo_call(tmp: Path) -> tuple[Path, list[tuple[int, float, float, str]], list[Voice]]:
    rng = np.random.default_rng(7)
    audio = np.zeros((int(DURATION * RATE), 2), dtype=np.float32)
    audio[: 11 * RATE, 0] += ring_back(11.0, RATE)
    audio[26 * RATE : 56 * RATE, 1] += hold_music(30.0, RATE)  # the client hears it
    audio[:, :] += line_noise(DURATION, RATE, rng)[:, None] * 0.05  # a quiet line
    spans, voices = [], []
    for side, start, text in SCRIPT:
        voice = spoken(text, tmp, RATE)
        a = int(start * RATE)
        audio[a : a + len(voice), side] += voice
        spans.append((side, start, start + len(voice) / RATE, text))
        voices.append((text, voice))
    call = tmp / "call.wav"
    soundfile.write(str(call), audio, RATE, subtype="PCM_16")
    return call, spans, voices


@dataclass
class _Whisper:
    """whisper-1's verbose_json: each utterance heard in the file as a segment of words."""

    voices: list[Voice]
    invent: bool = False
    whole: bool = False  # an utterance is heard only whole: a cut one is not
    model: str = "whisper-1"
    language: str = "ru"
    max_file_bytes: int = 25 * 2**20
    max_request_sec: float = float("inf")
    sent: list[float] = field(default_factory=list)

    def transcribe_file(self, path, duration_sec=None, *, prompt: str = "") -> SttResult:
        x, sr = soundfile.read(str(path), dtype="float32")
        mono = x if x.ndim == 1 else x.mean(axis=1)
        length = len(mono) / sr
        self.sent.append(length)
        assert sr == RATE
        heard, texts = [], []
        for text, voice in self.voices:
            at = found(mono, voice)
            if at is not None and self.whole:
                rest = mono[at : at + len(voice)] - voice
                at = at if float(rest @ rest) < 0.05 * float(voice @ voice) else None
            if at is not None:
                heard.append((at / sr, (at + len(voice)) / sr))
                texts.append(text)
        segments, words = [], []
        for (a, b), text in sorted(zip(heard, texts, strict=True)):
            tokens = text.split()
            step = (b - a) / len(tokens)
            timed = [Word(a + i * step, a + (i + 1) * step, t) for i, t in enumerate(tokens)]
            words += timed
            segments.append(Segment(a, b, text, avg_logprob=-0.2, no_speech_prob=0.01))
        heard.sort()
        if self.invent:  # a credit over every second of non-speech Whisper is sent
            gaps = [(0.0, heard[0][0])] if heard else [(0.0, length)]
            gaps += [(b, c) for (_, b), (c, _) in itertools.pairwise(heard)]
            gaps += [(heard[-1][1], length)] if heard else []
            for a, b in gaps:
                if b - a > 3.0:
                    segments.append(Segment(a + 0.5, b - 0.5, CREDIT, avg_logprob=-0.4,
                                            no_speech_prob=0.3))  # fmt: skip
        segments.sort(key=lambda s: s.start)
        text = " ".join(s.text for s in segments)
        return SttResult(text, "ru", length, tuple(segments), tuple(words), billed_seconds=None)


def test_a_piece_of_joined_stretches_maps_its_times_back_to_the_call() -> None:
    piece = Piece(
        Path("p.flac"), 0.0, 0.0, 5.0, False, joins=((0.0, 10.0, 12.0), (2.0, 40.0, 43.0))
    )
    assert piece.to_recording(0.5) == 10.5
    assert piece.to_recording(2.0) == 40.0
    assert piece.to_recording(4.5) == 42.5
    assert Piece(Path("p"), 30.0, 30.0, 40.0, False).to_recording(1.0) == 31.0


def test_many_short_stretches_joined_map_every_sample_back(tmp_path, monkeypatch) -> None:
    """Dozens of short stretches, some touching (a stretch cut at the request limit), across
    groups and decode blocks: every sample of every file is the recording's sample at the
    second `to_recording` gives, and none is lost or doubled."""
    rng = np.random.default_rng(3)
    rate = 8_000
    call = tmp_path / "call.wav"
    soundfile.write(str(call), rng.uniform(-0.9, 0.9, (rate * 31, 2)), rate, subtype="PCM_16")
    x, _ = soundfile.read(str(call), dtype="float32")
    iter_pcm = decode.iter_pcm  # blocks of 0.37 s: stretches straddle them
    monkeypatch.setattr(decode, "iter_pcm", lambda path, info: iter_pcm(path, info, block_sec=0.37))
    starts = np.sort(rng.uniform(0.0, 30.0, 40))
    spans = merge_spans([(float(a), min(float(a + rng.uniform(0.05, 1.5)), 31.0)) for a in starts])
    groups = pack(spans, Limits(25 * 2**20, 3.0))
    assert any(g[-1][1] == h[0][0] for g, h in itertools.pairwise(groups))  # a cut stretch
    for channel in (0, None):
        out = tmp_path / f"channel_{channel}"
        out.mkdir()
        pieces = joined_pieces(call, decode.probe(call), groups, out, channel=channel, stem="p")
        mono = x[:, channel] if channel is not None else x.mean(axis=1)
        sent = 0
        for piece in pieces:
            y, _ = soundfile.read(str(piece.path), dtype="float32")
            t = (np.arange(len(y)) + 0.25) / rate  # inside each sample, clear of rounding
            at = np.array([int(piece.to_recording(s) * rate) for s in t])
            np.testing.assert_allclose(y, mono[at], atol=2e-4)
            sent += len(y)
        assert len(pieces) == len(groups)
        assert sent == sum(round(b * rate) - round(a * rate) for g in groups for a, b in g)


def test_stretches_are_packed_under_the_request_limit_in_order() -> None:
    groups = pack([(0.0, 50.0), (60.0, 100.0), (200.0, 330.0)], Limits(25 * 2**20, 100.0))
    assert groups == [[(0.0, 50.0), (60.0, 100.0)], [(200.0, 265.0)], [(265.0, 330.0)]]
    assert all(sum(b - a for a, b in g) <= 100.0 for g in groups)


@needs_espeak
@pytest.mark.parametrize("role_mode", ["energy", "per_channel"])
def test_only_speech_is_sent_and_every_line_keeps_its_second(tmp_path, role_mode) -> None:
    call, spans, voices = stereo_call(tmp_path)
    stt = _Whisper(voices)
    transcript = transcribe_call(call, stt, role_mode=role_mode, send="speech", workdir=tmp_path)

    assert transcript.verdict == ""
    got = [(line.speaker, line.text) for line in transcript.lines]
    roles = ("operator", "client")
    assert got == [(roles[side], text) for side, _, text in SCRIPT]
    for line, (_, start, end, _) in zip(transcript.lines, spans, strict=True):
        assert start - 0.5 <= line.start <= start + 0.3 and abs(line.end - end) < 1.0
    # the ring-back, the half minute of hold music and the quiet line are not sent
    assert transcript.sent_sec == pytest.approx(sum(stt.sent))
    assert transcript.sent_sec < 0.6 * DURATION * (2 if role_mode == "per_channel" else 1)
    # every second of speech is sent: each side's own (per channel), or both mixed (energy)
    per_side = sum(b - a for _, a, b, _ in spans)
    mixed = sum(b - a for a, b in merge_spans(sorted((a, b) for _, a, b, _ in spans)))
    assert transcript.sent_sec >= (per_side if role_mode == "per_channel" else mixed)
    assert transcript.billed_sec == tuple(stt.sent)
    assert transcript.hallucinations == 0


@needs_espeak
def test_all_sends_the_call_whole_and_its_invented_lines_are_dropped(tmp_path) -> None:
    call, _, voices = stereo_call(tmp_path)
    stt = _Whisper(voices, invent=True)
    whole = transcribe_call(call, stt, role_mode="energy", send="all", workdir=tmp_path)
    assert stt.sent == [pytest.approx(DURATION, abs=0.1)]
    # over the music and ring-back the text is Whisper's invention: dropped, counted
    assert CREDIT not in whole.text and whole.hallucinations >= 1

    stt = _Whisper(voices, invent=True)
    speech = transcribe_call(call, stt, role_mode="energy", send="speech", workdir=tmp_path)
    assert CREDIT not in speech.text
    assert [line.text for line in speech.lines] == [t for _, _, t in SCRIPT]
    assert sum(stt.sent) < 0.6 * DURATION


def test_a_call_of_line_noise_alone_is_not_sent_and_says_so(tmp_path) -> None:
    """The issue's call: 60 s of hiss at -42 dBFS with clicks, above the level floor."""
    rng = np.random.default_rng(3)
    noise = np.stack([line_noise(60.0, RATE, rng), line_noise(60.0, RATE, rng)], axis=1)
    call = tmp_path / "noise.wav"
    soundfile.write(str(call), noise, RATE, subtype="PCM_16")
    stt = _Whisper([], invent=True)

    transcript = transcribe_call(call, stt, role_mode="energy", send="speech", workdir=tmp_path)
    assert stt.sent == []
    assert transcript.verdict == NO_SPEECH
    assert transcript.requests == 0 and transcript.billed_sec == () and transcript.lines == ()
    assert transcript.speech_sec == 0.0

    # STT_SEND=all is today's behaviour: the level floor alone lets the call through.
    sent_all = transcribe_call(call, stt, role_mode="energy", send="all", workdir=tmp_path)
    assert len(stt.sent) == 1 and sent_all.verdict == ""


WORDS = [
    "улица", "заказ", "подписка", "модель", "скидка", "проверить", "отправить", "акция",
    "жалоба", "утром", "звонок", "достопримечательности", "отмена", "телефон", "время", "адрес",
    "курьер", "оплата", "доставка", "вторник", "пятница", "неделя", "деньги",
]  # fmt: skip
LONG = WORDS.index("достопримечательности")


@needs_espeak
def test_a_stretch_longer_than_a_request_is_cut_in_a_pause_not_in_a_word(tmp_path) -> None:
    """One stretch of speech (words 0.25 s apart or more, 3 s of silence around) longer than
    a request carries is sent in several files: each cut lies in a pause, so every word
    comes back whole at its second. The long word is laid at the stretch's middle, where an
    even split into two cut it and the STT heard neither half."""
    words = []
    for text in WORDS:
        voice = spoken(text, tmp_path, RATE)
        loud = np.flatnonzero(np.abs(voice) > 0.01)
        words.append((text, voice[loud[0] : loud[-1] + 1]))  # espeak-ng's silences trimmed
    sec = [len(v) / RATE for _, v in words]
    # the shorter side's pauses widened (under a second each) so both sides are as long
    gaps = [0.25] * (len(sec) - 1)  # gaps[i]: the pause after word i
    left = sum(sec[:LONG]) + sum(gaps[:LONG])
    right = sum(sec[LONG + 1 :]) + sum(gaps[LONG:])
    side = range(LONG) if left < right else range(LONG, len(gaps))
    for i in side:
        gaps[i] += abs(right - left) / len(side)
    assert max(gaps) < 1.0
    starts = 3.0 + np.cumsum([0.0] + [s + g for s, g in zip(sec[:-1], gaps, strict=True)])
    audio = np.zeros(int((starts[-1] + sec[-1] + 3.0) * RATE), np.float32)
    for at, (_, voice) in zip(starts, words, strict=True):
        audio[int(at * RATE) : int(at * RATE) + len(voice)] += voice
    middle = (starts[0] + starts[-1] + sec[-1]) / 2
    assert starts[LONG] + 0.2 < middle < starts[LONG] + sec[LONG] - 0.2
    call = tmp_path / "call.wav"
    soundfile.write(str(call), audio, RATE, subtype="PCM_16")
    stt = _Whisper(words, whole=True, max_request_sec=12.0)

    transcript = transcribe_call(call, stt, role_mode="energy", send="speech", workdir=tmp_path)

    assert len(stt.sent) >= 2 and max(stt.sent) <= 12.0  # the stretch was cut
    assert [w for line in transcript.lines for w in line.text.split()] == WORDS
    assert transcript.lines[0].start == pytest.approx(starts[0], abs=0.05)
    assert [line.start for line in transcript.lines] == sorted(
        line.start for line in transcript.lines
    )
