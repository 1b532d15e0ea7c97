"""The sandbox's call scripts and their tone audio: the ground truth the STT emulator reads."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from calltexts_sandbox.calls import mp3_frames, tones
from calltexts_sandbox.calls.script import (
    TURN_PAUSE_SEC,
    VOCABULARY,
    WORD_GAP_SEC,
    CallScript,
    call_script,
)


def test_vocabulary_is_unique_single_words_with_distinct_tones() -> None:
    assert 64 <= len(VOCABULARY) <= 96
    assert len(set(VOCABULARY)) == len(VOCABULARY)
    assert all(" " not in w for w in VOCABULARY)
    freqs = [tones.word_frequency(i) for i in range(len(VOCABULARY))]
    assert min(freqs) >= 400 and max(freqs) <= 3000
    assert min(np.diff(freqs)) >= 30


def test_script_is_deterministic_per_call_id() -> None:
    assert call_script("call-1", 120, True) == call_script("call-1", 120, True)
    assert call_script("call-1", 120, True).text() != call_script("call-2", 120, True).text()


@pytest.mark.parametrize("duration", [0, 1, 7, 60, 600])
def test_script_timing_fits_the_call_and_alternates_roles(duration: int) -> None:
    script = call_script(f"c{duration}", duration, stereo=True)
    assert all(w.end <= duration for w in script.words())
    words = [w for turn in script.turns for w in turn.words]  # the dialogue, without cross-talk
    assert all(a.end < b.start for a, b in pairwise(words))
    roles = [t.role for t in script.turns]
    assert roles == [("operator", "client")[i % 2] for i in range(len(roles))]
    assert all(t.channel == (0 if t.role == "operator" else 1) for t in script.turns)
    for turn in script.turns:  # gaps inside a turn are shorter than pauses between turns
        gaps = [b.start - a.end for a, b in pairwise(turn.words)]
        assert all(g <= WORD_GAP_SEC[1] + 0.011 for g in gaps)
    for a, b in pairwise(script.turns):
        assert b.start - a.end >= TURN_PAUSE_SEC[0] - 0.011
    if duration >= 60:
        assert len(script.turns) >= 4


def _decoded(pcm: np.ndarray) -> list[tuple[float, float, str]]:
    return tones.decode_words(pcm, tones.SAMPLE_RATE)


def _assert_matches(decoded: list[tuple[float, float, str]], script: CallScript, role=None):
    expected = script.words(role)
    assert [w[2] for w in decoded] == [w.text for w in expected]
    for (start, end, _), word in zip(decoded, expected, strict=True):
        assert abs(start - word.start) <= 0.03 and abs(end - word.end) <= 0.03


def test_stereo_mp3_round_trip_gives_each_role_on_its_channel() -> None:
    script = call_script("round-trip", 90, stereo=True)
    pcm = tones.decode_pcm(mp3_frames.render_mp3(script), channels=2)
    _assert_matches(_decoded(pcm[:, 0]), script, "operator")
    _assert_matches(_decoded(pcm[:, 1]), script, "client")
    _assert_matches(_decoded(pcm), script)  # a downmix hears both sides


def test_mono_mp3_round_trip_mixes_both_roles() -> None:
    script = call_script("mono", 60, stereo=False)
    mp3 = mp3_frames.render_mp3(script)
    pcm = tones.decode_pcm(mp3, channels=1)
    assert abs(len(pcm) / tones.SAMPLE_RATE - 60) < 0.1
    _assert_matches(_decoded(pcm), script)


def test_wav_round_trip() -> None:
    script = call_script("wav", 20, stereo=False)
    pcm = tones.decode_pcm(tones.render_wav(script), channels=1)
    _assert_matches(_decoded(pcm), script)


def test_decoder_ignores_silence_and_foreign_tones() -> None:
    rate = tones.SAMPLE_RATE
    t = np.arange(rate) / rate
    foreign = (0.3 * np.sin(2 * np.pi * 5000 * t) * 32767).astype(np.int16)
    assert _decoded(np.zeros(rate * 2, dtype=np.int16)) == []
    assert _decoded(foreign) == []
    assert _decoded(np.zeros(0, dtype=np.int16)) == []
