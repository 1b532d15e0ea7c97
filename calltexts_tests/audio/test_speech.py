"""Voice activity detection (Silero VAD on onnxruntime): real speech from espeak-ng is found
where it is, and what is not speech (silence, hiss, clicks, tones, music) is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from calltexts_assets.audio import speech
from calltexts_assets.audio.speech import call_speech, speech_spans
from calltexts_tests.support.speech import needs_espeak
from calltexts_tests.support.speech import spoken as say

PHRASE = "Здравствуйте, компания Доставка, меня зовут Анна. Чем могу помочь?"


def spoken(tmp: Path, text: str = PHRASE, rate: int = 8_000) -> np.ndarray:
    return say(text, tmp, rate)  # 8 kHz: a telephone line


def hiss(seconds: float, dbfs: float, rate: int = 8_000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * rate)) * 10 ** (dbfs / 20)).astype(np.float32)


@needs_espeak
def test_speech_is_found_where_it_is_and_nowhere_else(tmp_path: Path) -> None:
    voice = spoken(tmp_path)
    rate = 8_000
    lead, gap = 3.0, 7.0
    quiet = hiss(lead, -70)
    x = np.concatenate([quiet, voice, hiss(gap, -70, seed=2), voice, quiet])
    spans = speech_spans(x, rate, min_silence_sec=2.0, pad_sec=0.2)
    length = len(voice) / rate
    assert len(spans) == 2  # one stretch per utterance, the 7 s between them left out
    for (start, end), at in zip(spans, (lead, lead + length + gap), strict=True):
        assert at - 0.5 <= start <= at + 0.3  # no word clipped: starts at or before the voice
        assert at + length - 0.5 <= end <= at + length + 0.5
    heard = sum(b - a for a, b in spans)
    assert heard < len(x) / rate * 0.7  # the silences are not speech


@needs_espeak
def test_short_silences_keep_a_stretch_whole_and_padding_stays_inside(tmp_path: Path) -> None:
    voice = spoken(tmp_path, "Да. Конечно. Хорошо.")
    spans_joined = speech_spans(voice, 8_000, min_silence_sec=2.0, pad_sec=0.5)
    spans_apart = speech_spans(voice, 8_000, min_silence_sec=0.05, pad_sec=0.0)
    assert len(spans_joined) == 1 and len(spans_apart) >= 2
    assert spans_joined[0][0] >= 0.0 and spans_joined[0][1] <= len(voice) / 8_000


@needs_espeak
@pytest.mark.parametrize("rate", [16_000, 44_100, 48_000, 11_025])
def test_any_rate_of_8_khz_or_more(tmp_path: Path, rate: int) -> None:
    voice = spoken(tmp_path, rate=rate)
    x = np.concatenate([np.zeros(2 * rate, np.float32), voice, np.zeros(rate, np.float32)])
    spans = speech_spans(x, rate)
    assert spans and 1.5 <= spans[0][0] <= 2.3
    assert abs(spans[-1][1] - (2 + len(voice) / rate)) < 0.5


@needs_espeak
@pytest.mark.parametrize("text", ["да", "нет"])
def test_a_lone_short_word_the_model_scores_low_is_still_speech(tmp_path: Path, text: str) -> None:
    """A back-channel word said low (espeak-ng's, played at half speed: half the pitch),
    alone between silences: Silero scores it under its threshold, the level finds it."""
    rate = 8_000
    voice = spoken(tmp_path, text, rate=rate * 2)  # samples for 16 kHz played at 8 kHz
    loud = np.flatnonzero(np.abs(voice) > 0.02)
    voice = voice[loud[0] : loud[-1] + 1]
    x = np.concatenate([np.zeros(2 * rate, np.float32), voice, np.zeros(2 * rate, np.float32)])
    detector = speech.SpeechDetector(rate, 1)
    detector.feed(x)
    scores = detector.close()[:, 0]
    assert speech.spans_from_scores(scores, len(x) / rate) == []  # the model alone misses it
    (start, end), *more = speech_spans(x, rate)
    assert not more
    assert start <= 2.0 and end >= 2.0 + len(voice) / rate  # the whole word, padded


def test_a_lone_tone_burst_is_no_word() -> None:
    """Loud, word-long and alone, but one pure tone: a beep or a ring-back burst."""
    rate = 8_000
    t = np.arange(int(0.6 * rate)) / rate
    for hz in (425.0, 1000.0):
        burst = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
        silence = np.zeros(2 * rate, np.float32)
        assert speech_spans(np.concatenate([silence, burst, silence]), rate) == [], hz


def test_what_is_not_speech_is_not_found() -> None:
    rate, seconds = 8_000, 20
    t = np.arange(seconds * rate) / rate
    line_noise = hiss(seconds, -42)  # above the envelope's -45 dBFS speech floor
    line_noise[:: rate // 3] += 0.5  # clicks
    ring_back = (0.3 * np.sin(2 * np.pi * 425 * t) * ((t % 5) < 1)).astype(np.float32)  # RU
    beeps = (0.3 * np.sin(2 * np.pi * 1000 * t) * ((t % 1) < 0.5)).astype(np.float32)
    chords = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0, 523.3))
    music = (0.1 * chords * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    for name, x in [("hiss", line_noise), ("ring", ring_back), ("beep", beeps), ("music", music)]:
        assert speech_spans(x, rate) == [], name
    assert speech_spans(np.zeros(seconds * rate, np.float32), rate) == []
    assert speech_spans(np.zeros(0, np.float32), rate) == []
    assert speech_spans(hiss(0.3, -20), rate) == []  # shorter than the gate's reach


def test_the_level_decides_alone_where_it_can() -> None:
    """Digital silence and a quiet line never reach the model: nothing is scored."""
    detector = speech.SpeechDetector(8_000, 2)
    detector.feed(np.stack([hiss(120, -75), np.zeros(120 * 8_000, np.float32)], axis=1))
    scores = detector.close()
    assert detector.audio_sec == pytest.approx(120.0) and detector.scored_sec == 0.0
    assert scores.shape == (3_750, 2) and not scores.any()


def test_one_channel_only_and_a_rate_the_model_can_use() -> None:
    with pytest.raises(ValueError, match="one channel"):
        speech_spans(np.zeros((100, 2), np.float32), 8_000)
    with pytest.raises(ValueError, match="8 kHz"):
        speech_spans(np.zeros(100, np.float32), 4_000)


def test_spans_from_scores_hysteresis_pauses_and_padding() -> None:
    frame = speech.FRAME_SEC
    scores = np.zeros(200, np.float32)
    scores[10:40] = 0.9  # speech
    scores[40:45] = 0.4  # under the threshold but over its hysteresis floor: still speech
    scores[60:70] = 0.9  # after a pause of 15 frames (0.48 s)
    scores[150:153] = 0.9  # a 96 ms blip: under the shortest speech
    scores[170:185] = 0.4  # never reaches the threshold
    duration = 200 * frame
    joined = speech.spans_from_scores(scores, duration, min_silence_sec=1.0, pad_sec=0.0)
    assert joined == [(round(10 * frame, 3), round(70 * frame, 3))]
    apart = speech.spans_from_scores(scores, duration, min_silence_sec=0.3, pad_sec=0.0)
    assert apart == [(round(10 * frame, 3), round(45 * frame, 3)), (1.92, 2.24)]
    padded = speech.spans_from_scores(scores, duration, min_silence_sec=0.3, pad_sec=0.3)
    assert padded == [(0.02, 2.54)]  # paddings meet: one stretch


@needs_espeak
def test_a_stereo_call_per_channel_from_its_file(tmp_path: Path) -> None:
    """Operator on the left, client on the right, in turn, with a long hold in between; read
    block by block from an MP3 as the pipeline reads recordings."""
    rate = 16_000
    voice = spoken(tmp_path, rate=rate)
    n = len(voice)
    silence = np.zeros(n, np.float32)
    hold = np.zeros(20 * rate, np.float32)
    left = np.concatenate([voice, silence, hold, silence])
    right = np.concatenate([silence, voice, hold, voice])
    wav = tmp_path / "call.wav"
    soundfile.write(wav, np.stack([left, right], axis=1), rate)
    mp3 = tmp_path / "call.mp3"
    from calltexts_assets.audio.decode import run_ffmpeg

    run_ffmpeg(["-i", str(wav), "-c:a", "libmp3lame", "-b:a", "32k", "-y", str(mp3)])
    found = call_speech(mp3, min_silence_sec=2.0)
    assert found.has_speech and len(found.channels) == 2
    length = n / rate
    assert len(found.channels[0]) == 1 and found.channels[0][0][1] < length + 0.6
    assert len(found.channels[1]) == 2
    assert found.channels[1][1][0] > 2 * length + 19.5  # after the hold
    # the model saw the voices and the edges around them, not the hold's silence
    assert found.scored_sec < 3 * length + 4


def test_the_model_ships_with_the_wheel() -> None:
    path = speech.model_path()
    assert path.name == "silero_vad.onnx" and path.stat().st_size > 1_000_000
