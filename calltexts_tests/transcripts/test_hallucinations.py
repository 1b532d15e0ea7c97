"""Whisper's text on silence is dropped and counted; what callers say is kept."""

from __future__ import annotations

from calltexts_assets.clients.whisper import Segment
from calltexts_assets.transcripts.hallucinations import drop_hallucinations, strip_credits


def test_whisper_marks_silence_itself() -> None:
    kept = drop_hallucinations(
        [
            Segment(0, 2, "Здравствуйте.", no_speech_prob=0.1, avg_logprob=-0.3),
            Segment(2, 30, "Продолжение следует...", no_speech_prob=0.8, avg_logprob=-1.4),
            Segment(30, 31, "Алло?", no_speech_prob=0.7, avg_logprob=-0.2),  # Whisper unsure
        ]
    )
    assert [s.text for s in kept.segments] == ["Здравствуйте.", "Алло?"] and kept.dropped == 1


def test_text_over_a_silent_stretch_of_the_recording_is_dropped() -> None:
    quiet = {(9.5, 12.5)}
    kept = drop_hallucinations(
        [Segment(1, 3, "Да, слушаю."), Segment(10, 12, "Спасибо за внимание!")],
        quiet=lambda a, b: (a, b) in quiet,
    )
    assert [s.text for s in kept.segments] == ["Да, слушаю."] and kept.dropped == 1


def test_credits_go_wherever_they_are() -> None:
    assert strip_credits("До свидания. Субтитры создавал DimaTorzok") == ("До свидания.", 1)
    assert strip_credits("Редактор субтитров А.Синецкая Корректор А.Егорова") == ("", 1)
    assert strip_credits("продолжение СЛЕДУЕТ… [BLANK_AUDIO]") == ("", 2)
    text = "Продолжим завтра, следует уточнить адрес."  # the words, not the phrase
    assert strip_credits(text) == (text, 0)
    kept = drop_hallucinations([Segment(0, 5, "Всё, жду. Субтитры сделал DimaTorzok")])
    assert kept.segments[0].text == "Всё, жду." and kept.dropped == 1


def test_phrases_callers_say_are_kept_unless_whisper_doubts_them() -> None:
    said = Segment(0, 1, "Спасибо.", no_speech_prob=0.05, avg_logprob=-0.2)
    doubted = Segment(5, 6, "Спасибо.", no_speech_prob=0.75, avg_logprob=-0.5)
    kept = drop_hallucinations([said, doubted, Segment(7, 8, "Спасибо, до свидания.")])
    assert [s.start for s in kept.segments] == [0, 7] and kept.dropped == 1
