"""Dialogue lines: text (with punctuation) from segments, speakers from words."""

from __future__ import annotations

from calltexts_assets.clients.whisper import Segment, Word
from calltexts_assets.transcripts.lines import DialogueLine, word_lines


def test_a_segment_is_split_where_its_words_change_speaker() -> None:
    segment = Segment(0.0, 3.0, "Алло, здравствуйте! Да-да, слушаю.")
    words = [Word(0.0, 0.4, "Алло"), Word(0.5, 1.2, "здравствуйте"),
             Word(1.5, 1.9, "Да-да"), Word(2.0, 2.6, "слушаю")]  # fmt: skip
    roles = ["operator", "operator", "client", "client"]
    assert word_lines([segment], ["operator"], words, roles) == [
        DialogueLine(0.0, "operator", "Алло, здравствуйте!", 1.2),
        DialogueLine(1.5, "client", "Да-да, слушаю.", 2.6),
    ]


def test_tokens_without_a_word_follow_the_one_before() -> None:
    # The server's words differ from its text ("2" / "два") or miss one ("номер").
    segment = Segment(0.0, 4.0, "Заказ номер два, верно? Верно.")
    words = [Word(0.0, 0.4, "заказ"), Word(1.0, 1.3, "2"), Word(1.4, 1.8, "верно"),
             Word(2.8, 3.2, "верно")]  # fmt: skip
    lines = word_lines(
        [segment], ["operator"], words, ["operator", "operator", "operator", "client"]
    )
    assert [(line.speaker, line.text) for line in lines] == [
        ("operator", "Заказ номер два, верно?"),
        ("client", "Верно."),
    ]


def test_segments_without_words_keep_their_own_speaker() -> None:
    segments = [Segment(0, 1, "Да."), Segment(5, 6, "Нет.")]
    words = [Word(0.1, 0.5, "да")]
    lines = word_lines(segments, ["client", "operator"], words, ["client"])
    assert [(line.speaker, line.text, line.start) for line in lines] == [
        ("client", "Да.", 0.1),
        ("operator", "Нет.", 5),
    ]
