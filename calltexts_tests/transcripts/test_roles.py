"""The rule that gives each word of a stereo call to a side, on synthetic loudness."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calltexts_assets.audio.envelope import FRAME_SEC, Envelope
from calltexts_assets.transcripts.roles import attribute, overlapping

LOUD, ECHO = 0.2, 0.02  # -20 dB: one side heard on the other's channel


@dataclass(frozen=True)
class Span:
    start: float
    end: float


def envelope(seconds: float, *sounds: tuple[int, float, float, float]) -> Envelope:
    """(channel, start, end, rms) of each sound."""
    rms = np.zeros((int(seconds / FRAME_SEC), 2))
    for channel, start, end, level in sounds:
        a, b = int(start / FRAME_SEC), int(end / FRAME_SEC)
        rms[a:b, channel] = np.sqrt(rms[a:b, channel] ** 2 + level**2)
    return Envelope(rms.astype(np.float16), seconds, False)


def test_each_word_to_the_louder_channel_and_echo_is_no_voice() -> None:
    env = envelope(
        4,
        (0, 0.0, 1.0, LOUD), (1, 0.0, 1.0, ECHO),  # the operator, echoed on the right
        (1, 2.0, 3.0, LOUD), (0, 2.0, 3.0, ECHO),  # the client, echoed on the left
    )  # fmt: skip
    words = [Span(0.1, 0.5), Span(0.5, 0.9), Span(2.1, 2.9)]
    assert attribute(words, env) == ["operator", "operator", "client"]
    assert attribute(words, env, ("client", "operator")) == ["client", "client", "operator"]


def test_partly_overlapping_words_go_by_the_time_each_has_alone() -> None:
    env = envelope(2, (0, 0.0, 0.5, LOUD), (1, 0.3, 0.6, LOUD))
    # Over its whole span the client's word is half the operator's: only its own time tells.
    assert attribute([Span(0.0, 0.5), Span(0.3, 0.6)], env) == ["operator", "client"]


def test_a_word_inside_another_while_both_talk_is_the_other_side() -> None:
    env = envelope(2, (0, 0.0, 0.6, LOUD), (1, 0.2, 0.4, LOUD))
    assert attribute([Span(0.0, 0.6), Span(0.2, 0.4)], env) == ["operator", "client"]
    # The same times with the right channel quiet: one speaker, two overlapping words.
    alone = envelope(2, (0, 0.0, 0.6, LOUD), (1, 0.2, 0.4, ECHO))
    assert attribute([Span(0.0, 0.6), Span(0.2, 0.4)], alone) == ["operator", "operator"]


def test_a_word_over_silence_takes_its_neighbours_side() -> None:
    env = envelope(5, (1, 0.0, 1.0, LOUD), (1, 3.0, 4.0, LOUD))
    words = [Span(0.2, 0.8), Span(1.8, 2.2), Span(3.2, 3.8)]
    assert attribute(words, env) == ["client", "client", "client"]
    assert attribute([Span(1.8, 2.2)], env) == ["operator"]  # nothing to go by: the first role


def test_overlaps_are_found_in_the_neighbourhood_only() -> None:
    spans = [Span(0, 10), Span(1, 2), Span(3, 4), Span(11, 12), Span(11.5, 13)]
    assert overlapping(spans) == [[1, 2], [0], [0], [4], [3]]
