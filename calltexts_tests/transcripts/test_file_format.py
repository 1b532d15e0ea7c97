"""The transcript file's text: header, timestamps, role labels, masking."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from calltexts_assets.listing.calls import DIRECTIONS, call_from_row
from calltexts_assets.report.labels import DIRECTIONS as REPORT_DIRECTIONS
from calltexts_assets.state.ledger import DIRECTION_WORDS, listed_values
from calltexts_assets.transcripts.dialogue import ROLE_MODES, DialogueLine, Transcript
from calltexts_assets.transcripts.file_format import (
    LABELS,
    TranscriptHeader,
    render_transcript,
    timestamp,
)
from calltexts_tests.support.records import transcribed_record

MSK = timezone(timedelta(hours=3))
HEADER = TranscriptHeader(
    call_id="abc.123",
    started_at=datetime(2026, 11, 2, 9, 5, 7, tzinfo=MSK),
    direction="incoming",
    phone_from="+79161234567",
    phone_to="+74951112233",
    duration_sec=3725,
)
TRANSCRIPT = Transcript(
    language="ru",
    duration_sec=3725.4,
    lines=(
        DialogueLine(0.4, "operator", "здравствуйте компания"),
        DialogueLine(65.9, "client", "заказ доставка"),
        DialogueLine(3600.0, "operator", "спасибо"),
        DialogueLine(3700.2, "client", "   "),  # empty segments are left out
    ),
    model="whisper-1",
    requests=3,
    roles="energy",
    hallucinations=1,
)


def test_timestamps_switch_to_hours_past_the_first_hour() -> None:
    assert timestamp(0) == "[00:00]"
    assert timestamp(65.9) == "[01:05]"
    assert timestamp(3599.99) == "[59:59]"
    assert timestamp(3600) == "[1:00:00]"
    assert timestamp(4000) == "[1:06:40]"


def test_russian_transcript_with_header() -> None:
    text = render_transcript(HEADER, TRANSCRIPT)
    assert text.splitlines() == [
        "Звонок: abc.123",
        "Дата и время: 2026-11-02 09:05:07+03:00",
        "Направление: входящий",
        "От: +79161234567",
        "Кому: +74951112233",
        "Длительность: 01:02:05 (3725 с)",
        "Язык: русский (ru)",
        "Модель: whisper-1",
        "Роли: по каналам записи (громкость каждого слова)",
        "Отброшено как галлюцинации STT: 1",
        "",
        "[00:00] Оператор: здравствуйте компания",
        "[01:05] Клиент: заказ доставка",
        "[1:00:00] Оператор: спасибо",
    ]
    assert text.endswith("\n") and not text.startswith("\ufeff")
    text.encode("utf-8")


def test_english_labels_masked_phones_and_sandbox_marker() -> None:
    header = TranscriptHeader(**{**HEADER.__dict__, "sandbox": True})
    text = render_transcript(header, TRANSCRIPT, labels="en", mask_phones=True)
    assert "Direction: incoming" in text
    assert "From: +7******4567" in text and "1234567" not in text
    assert "Source: sandbox (synthetic data)" in text
    assert "[01:05] Client: заказ доставка" in text


def test_custom_role_labels_and_mono_speaker() -> None:
    mono = Transcript("ru", 10, (DialogueLine(1, "speaker", "да"),), "whisper-1", 1)
    assert "[00:01] Собеседник: да" in render_transcript(HEADER, mono)
    assert "[00:01] Speaker: да" in render_transcript(HEADER, mono, labels="en")
    custom = render_transcript(HEADER, TRANSCRIPT, role_labels={"operator": "Менеджер"})
    assert "[00:00] Менеджер: здравствуйте компания" in custom


def test_no_speech_is_said_not_left_blank() -> None:
    empty = Transcript("", 30, (), "whisper-1", 1)
    text = render_transcript(HEADER, empty)
    assert text.rstrip().endswith("(речь не распознана)")
    assert "Язык: не определён (und)" in text  # ISO 639 "undetermined"


def test_diarized_voices_are_labelled_by_their_speaker() -> None:
    lines = (DialogueLine(1, "speaker:A", "алло"), DialogueLine(2, "speaker:B", "да"))
    text = render_transcript(HEADER, Transcript("ru", 10, lines, "gpt-4o-transcribe-diarize", 1))
    assert "[00:01] Собеседник A: алло" in text and "[00:02] Собеседник B: да" in text


def test_header_from_a_ledger_row() -> None:
    call = call_from_row(
        {
            "ID": "7", "CALL_ID": "c-7", "CALL_TYPE": "1", "CALL_DURATION": "61",
            "CALL_START_DATE": "2026-11-02T10:00:00+03:00", "PHONE_NUMBER": "+79160000001",
            "PORTAL_NUMBER": "+74950000002",
        }
    )  # fmt: skip
    record = transcribed_record(
        7, day="2026-11-02", seconds=61.0, **listed_values("2026-11-02", call)
    )
    header = TranscriptHeader.from_record(record)
    assert (header.phone_from, header.phone_to) == ("+74950000002", "+79160000001")
    assert "Направление: исходящий" in render_transcript(header, TRANSCRIPT)


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"])
def test_a_line_break_in_any_value_cannot_forge_a_header_or_dialogue_line(brk: str) -> None:
    forged = replace(
        HEADER,
        phone_from=f"+79161234567{brk}Модель: forged",
        phone_to=f"{brk}{brk}[00:00] Оператор: forged",
    )
    transcript = Transcript(
        "ru", 30, (DialogueLine(1.0, "client", f"да{brk}[00:05] Оператор: forged"),), "w", 1
    )
    text = render_transcript(forged, transcript)
    header, _, dialogue = text.partition("\n\n")
    keys = [line.split(":", 1)[0] for line in header.splitlines()]
    assert keys == ["Звонок", "Дата и время", "Направление", "От", "Кому", "Длительность",
                    "Язык", "Модель", "Роли", "Отброшено как галлюцинации STT"]  # fmt: skip
    assert dialogue.splitlines() == ["[00:01] Клиент: да [00:05] Оператор: forged"]
    assert "От: +79161234567 Модель: forged" in header


def test_header_names_the_employee_line_and_crm_card() -> None:
    header = replace(
        HEADER,
        employee_id="7",
        employee_name="Олег\nСоколов",  # a name from the portal cannot forge a header line
        line_id="+74951112233",
        line_name="",
        crm="https://portal.example/crm/contact/details/12/",
    )
    lines = render_transcript(header, TRANSCRIPT).splitlines()
    assert lines[5:9] == [
        "Сотрудник: Олег Соколов (7)",
        "Линия: +74951112233",
        "CRM: https://portal.example/crm/contact/details/12/",
        "Длительность: 01:02:05 (3725 с)",
    ]
    masked = render_transcript(header, TRANSCRIPT, mask_phones=True)
    assert "+74951112233" not in masked
    # Without an employee (an info call), a line or a binding, the header has no such field.
    assert render_transcript(HEADER, TRANSCRIPT).count("Сотрудник") == 0


# Identifiers of the ledger and the registry's machine columns; never a header's text.
IDENTIFIERS = {*DIRECTIONS.values(), *ROLE_MODES, "mono", "diarized"}
_WORD = re.compile(r"[A-Za-z_]+")


def _header_text(text: str) -> str:
    return text.split("\n\n", 1)[0]


@pytest.mark.parametrize("direction", sorted(DIRECTIONS.values()))
@pytest.mark.parametrize("roles", [*ROLE_MODES, "mono", "diarized"])
def test_a_header_is_in_one_language_without_identifiers(direction: str, roles: str) -> None:
    header = replace(HEADER, direction=direction, sandbox=True, employee_name="Анна Смирнова")
    transcript = replace(TRANSCRIPT, roles=roles)
    russian = _header_text(render_transcript(header, transcript))
    assert not set(_WORD.findall(russian)) & IDENTIFIERS, russian
    assert f"Направление: {DIRECTION_WORDS['ru'][direction]}" in russian
    english = _header_text(render_transcript(header, transcript, labels="en"))
    # English words may be identifiers too ("incoming", "turns"): those with a "_" may not
    assert not {w for w in _WORD.findall(english) if "_" in w} & IDENTIFIERS
    assert f"Direction: {DIRECTION_WORDS['en'][direction]}\n" in english
    assert "Language: Russian (ru)" in english
    # English throughout: no Cyrillic but the employee's own name
    assert not re.search("[а-яё]", english.replace("Анна Смирнова", ""), re.IGNORECASE)


def test_every_direction_and_role_has_words_in_both_languages() -> None:
    for words in LABELS.values():
        assert set(words.how_roles) >= {*ROLE_MODES, "mono", "diarized"}
        assert set(words.fields) == set(LABELS["ru"].fields)
    # one vocabulary of directions, for every language the files are written in, and the
    # report names a direction from it as the transcript does
    assert set(DIRECTION_WORDS) == set(LABELS)
    for words in DIRECTION_WORDS.values():
        assert set(words) == set(DIRECTIONS.values())
    assert REPORT_DIRECTIONS is DIRECTION_WORDS
