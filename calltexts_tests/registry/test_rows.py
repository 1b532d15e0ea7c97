import codecs
import csv
import io
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from calltexts_assets.billing.cost import MINUTE
from calltexts_assets.billing.tariffs import Tariffs
from calltexts_assets.quality.checks import registry_complete
from calltexts_assets.registry import schema as registry_schema
from calltexts_assets.registry.rows import (
    COST_DECIMALS,
    REGISTRY_COLUMNS,
    csv_cells,
    masked_row,
    registry_frame,
    registry_row,
    registry_rows,
    registry_values,
    write_registry_csv,
    write_registry_file,
)
from calltexts_assets.registry.schema import (
    DEFAULT_SCHEMA_PATH,
    load_registry_schema,
    schema_columns,
    validate_registry_csv,
)
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_tests.support.records import invalid_record as invalid
from calltexts_tests.support.records import transcribed_record

DAY = "2026-11-24"
MSK = timezone(timedelta(hours=3))


def make_record(n: int = 1, **changes: Any) -> CallRecord:
    """A transcribed 61 s call; `changes` override any field."""
    changes.setdefault("call_id", f"call.{n}")
    changes.setdefault("started_at", f"{DAY}T10:{n % 60:02d}:07+03:00")
    return transcribed_record(
        n,
        day=DAY,
        seconds=61.0,
        **changes,
    )


def failed(n: int, status: str, error_code: str | None = "http_404") -> CallRecord:
    return make_record(
        n,
        status=status,
        error_code=error_code,
        transcript_path=None,
        language=None,
        cost=None,
        stt_duration_sec=None,
        audio_duration_sec=None,
        attempts=3,
    )


def csv_bytes(records: list[CallRecord], decimal_mark: str = ",") -> bytes:
    rows = registry_rows(records, decimal_mark=decimal_mark)
    return write_registry_csv(registry_frame(rows))


def read_with_csv_module(data: bytes) -> list[dict[str, str]]:
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    return list(csv.DictReader(text, delimiter=";"))


# -- the dictionary and the code agree -------------------------------------------------------


def test_columns_are_the_dictionarys() -> None:
    specs = load_registry_schema()
    assert list(REGISTRY_COLUMNS) == schema_columns(specs)


def test_dictionary_keeps_the_given_order_and_appends_ids() -> None:
    assert list(REGISTRY_COLUMNS) == [
        "datetime_start",
        "direction",
        "from",
        "to",
        "duration_sec",
        "recording_url",
        "transcript_path",
        "transcription_cost",
        "language",
        "status",
        "summary_path",
        "tags",
        "error_code",
        "retry_count",
        "call_id",
        "record_id",
        "call_type",
        "call_result",
        "failed_code",
        "telephony_cost",
        "telephony_currency",
        "recording_source",
        "audio_path",
        "employee_id",
        "employee_name",
        "line_id",
        "line_name",
        "crm_entity_type",
        "crm_entity_id",
        "crm_url",
        "stt_sent_sec",
        "stt_billed_sec",
        "needs_review",
        "doubts",
        "second_opinion",
    ]
    document = yaml.safe_load(DEFAULT_SCHEMA_PATH.read_text(encoding="utf-8"))
    for column in document["columns"]:
        assert {"name", "type", "required", "meaning", "example"} <= set(column)
    cost = next(c for c in document["columns"] if c["name"] == "transcription_cost")
    assert cost["decimals"] == COST_DECIMALS


def test_every_dictionary_example_passes_its_own_rules() -> None:
    specs = load_registry_schema()
    document = yaml.safe_load(DEFAULT_SCHEMA_PATH.read_text(encoding="utf-8"))
    row = {c["name"]: c["example"] for c in document["columns"]}
    header = schema_columns(specs)
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=";").writerows([header, [row[name] for name in header]])
    data = codecs.BOM_UTF8 + buffer.getvalue().encode()
    assert validate_registry_csv(data) == []


# -- rows ------------------------------------------------------------------------------------


def test_rows_one_per_call_in_time_order_whatever_the_input_order() -> None:
    records = [make_record(3), make_record(1), failed(2, Status.MISSING_AUDIO)]
    rows = registry_rows(records)
    assert [r["call_id"] for r in rows] == ["call.1", "call.2", "call.3"]
    assert rows == registry_rows(records[::-1])
    assert list(rows[0]) == list(REGISTRY_COLUMNS)


def test_row_values_are_formatted_strings() -> None:
    started = "2026-11-24T10:05:07.250000+03:00"
    [row] = registry_rows(
        [make_record(5, started_at=started, attempts=2)],
    )
    assert row == {
        "datetime_start": "2026-11-24T10:05:07+03:00",
        "direction": "incoming",
        "from": "+79161234567",
        "to": "+74951234567",
        "duration_sec": "61",
        "recording_url": "https://portal.example/rec/5.mp3",
        "transcript_path": "exports/2026-11/transcripts/call_call.5.txt",
        "transcription_cost": "0,0120",
        "language": "ru",
        "status": "transcribed",
        "summary_path": "",
        "tags": "",
        "error_code": "",
        "retry_count": "2",
        "call_id": "call.5",
        "record_id": "rec5",
        "call_type": "2",
        "call_result": "answered",
        "failed_code": "200",
        "telephony_cost": "0,0000",
        "telephony_currency": "RUB",
        "recording_source": "link",
        "audio_path": "exports/2026-11/raw/2026/11/24/call_call.5.mp3",
        "employee_id": "7",
        "employee_name": "",
        "line_id": "",
        "line_name": "",
        "crm_entity_type": "",
        "crm_entity_id": "",
        "crm_url": "",
        "stt_sent_sec": "",
        "stt_billed_sec": "",
        "needs_review": "",
        "doubts": "",
        "second_opinion": "",
    }


def test_values_are_typed_and_the_decimal_mark_is_the_settings() -> None:
    record = make_record(5, started_at="2026-11-24T10:05:07.250000+03:00", cost=0.012)
    values = registry_values(record)
    assert values["datetime_start"] == datetime(2026, 11, 24, 10, 5, 7, tzinfo=MSK)
    assert (values["duration_sec"], values["retry_count"], values["call_type"]) == (61, 1, 2)
    assert values["transcription_cost"] == Decimal("0.0120")
    assert values["from"] == "+79161234567"  # text, whatever it looks like
    english = registry_row(record, decimal_mark=".")
    assert (english["transcription_cost"], english["telephony_cost"]) == ("0.0120", "0.0000")
    # a portal value that does not parse stays text, for validation to report
    odd = registry_values(make_record(6, started_at="вчера", telephony_cost="n/a"))
    assert (odd["datetime_start"], odd["telephony_cost"]) == ("вчера", "n/a")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # Real portals: RUR, 603-S, OTHER, a code the docs do not list, every CALL_TYPE.
        ({"failed_code": "603-S"}, {"call_result": "cancelled", "failed_code": "603-S"}),
        ({"failed_code": "OTHER"}, {"call_result": "other", "failed_code": "OTHER"}),
        ({"failed_code": "699-X"}, {"call_result": "other", "failed_code": "699-X"}),
        ({"failed_code": "402-B24"}, {"call_result": "insufficient_funds"}),
        ({"failed_code": ""}, {"call_result": "", "failed_code": ""}),
        ({"telephony_currency": "EUR"}, {"telephony_currency": "EUR"}),
        ({"telephony_currency": ""}, {"telephony_currency": ""}),
        ({"telephony_cost": "8.1008"}, {"telephony_cost": "8,1008"}),
        ({"telephony_cost": "12.15"}, {"telephony_cost": "12,1500"}),
        ({"call_type": 5, "direction": "info_call"}, {"call_type": "5", "direction": "info_call"}),
        (
            {"recording_url": None, "recording_source": "drive", "audio_path": "a/call_1.wav"},
            {"recording_url": "", "recording_source": "drive", "audio_path": "a/call_1.wav"},
        ),
    ],
)
def test_telephony_values_are_mapped_and_raw_values_kept(
    changes: dict[str, Any], expected: dict[str, str]
) -> None:
    [row] = registry_rows([make_record(5, **changes)])
    assert {name: row[name] for name in expected} == expected


def test_error_rows_carry_the_ledgers_error_code_and_no_cost() -> None:
    [row] = registry_rows(
        [failed(1, Status.DOWNLOAD_ERROR, "timeout")],
    )
    assert (row["status"], row["error_code"], row["retry_count"]) == (
        "download_error",
        "timeout",
        "3",
    )
    assert row["transcription_cost"] == row["transcript_path"] == row["language"] == ""


def test_transcribed_row_without_a_recorded_cost_gets_the_tariff() -> None:
    record = make_record(1, cost=None, stt_duration_sec=121.0)
    # in the tariff's unit: 3 started minutes, or 121 s (whisper-1's, the default)
    [row] = registry_rows([record], tariffs=Tariffs.flat(0.006, MINUTE))
    assert row["transcription_cost"] == "0,0180"
    [row] = registry_rows([record])
    assert row["transcription_cost"] == "0,0121"


def test_summary_columns_and_tags() -> None:
    records = [
        make_record(
            1, summary_path="exports/2026-11/summary/call_call.1.md", tags='["доставка", "жалоба"]'
        ),
        make_record(2, tags='=HYPERLINK("http://evil")'),
    ]
    rows = registry_rows(records)
    assert list(rows[0]) == list(REGISTRY_COLUMNS)
    assert rows[0]["summary_path"] == "exports/2026-11/summary/call_call.1.md"
    assert rows[0]["tags"] == "доставка, жалоба"
    assert rows[1]["tags"].startswith("'=")  # a spreadsheet shows it, never runs it


# -- the file --------------------------------------------------------------------------------


def test_csv_starts_with_bom_and_opens_with_the_csv_module_and_polars() -> None:
    records = [
        make_record(
            1, tags="звонок; важный", summary_path="exports/2026-11/summary/call_call.1.md"
        ),
        failed(2, Status.MISSING_AUDIO),
        make_record(3, phone_from="", error_message="Ошибка"),
    ]
    data = csv_bytes(records)
    assert data[:3] == b"\xef\xbb\xbf"

    parsed = read_with_csv_module(data)
    assert list(parsed[0]) == list(REGISTRY_COLUMNS)
    assert [r["call_id"] for r in parsed] == ["call.1", "call.2", "call.3"]
    assert parsed[0]["tags"] == "звонок; важный"  # Cyrillic and the separator round-trip
    assert parsed[1]["error_code"] == "http_404"
    assert parsed[2]["from"] == ""

    frame = pl.read_csv(data, separator=";", infer_schema=False)
    assert frame.columns == list(REGISTRY_COLUMNS)
    assert frame["tags"].to_list() == ["звонок; важный", None, None]
    assert frame["transcription_cost"].to_list() == ["0,0120", None, "0,0120"]


def test_empty_registry_still_has_the_header() -> None:
    data = write_registry_csv(registry_frame([]))
    assert data == codecs.BOM_UTF8 + (";".join(list(REGISTRY_COLUMNS)) + "\n").encode()
    assert validate_registry_csv(data) == []


def test_frame_rejects_rows_with_other_columns() -> None:
    [row] = registry_rows([make_record(1)])
    del row["tags"]
    with pytest.raises(ValueError, match="columns"):
        registry_frame([row])


# -- the streamed file ------------------------------------------------------------------------


def varied_days() -> list[list[CallRecord]]:
    """Four export days (one empty) with every value the CSV has to quote or leave empty,
    invalid rows in two days, and each day out of order as a ledger might give it."""
    d1, d2, d4 = "2026-11-23", "2026-11-24", "2026-11-26"  # nothing on the 25th
    summary = "exports/2026-11/summary/call_s.md"
    day1 = [
        make_record(
            1, run_id=d1, started_at=f"{d1}T09:00:00+03:00", tags='["доставка", "жалоба; срочно"]'
        ),
        make_record(2, run_id=d1, started_at=f"{d1}T09:00:00+03:00", summary_path=summary),
        make_record(3, run_id=d1, started_at=f"{d1}T23:59:59+03:00", tags='=HYPERLINK("x")'),
        invalid('bad;id "q"', d1),
        make_record(
            4,
            run_id=d1,
            started_at=f"{d1}T10:00:00.500000+03:00",
            status=Status.MISSING_AUDIO,
            error_code="ошибка;\nсети",
            transcript_path=None,
            language=None,
            cost=None,
        ),
        make_record(5, run_id=d1, started_at=f"{d1}T06:30:00+00:00", phone_from=""),  # 09:30 MSK
    ]
    day2 = [
        make_record(6, run_id=d2, started_at=f"{d2}T08:00:00+03:00", tags="строка\nвторая"),
        make_record(7, run_id=d2, started_at=f"{d2}T08:00:01+03:00", tags="-1+1", language="uk"),
        make_record(8, run_id=d2, started_at=f"{d2}T08:00:02+03:00", tags='"цитата"'),
        make_record(9, run_id=d2, started_at=f"{d2}T08:00:03+03:00", cost=None),  # the tariff
        *(make_record(n, run_id=d2, started_at=f"{d2}T12:{n:02d}:00+03:00") for n in range(10, 14)),
        invalid("inv.2", d2),
        invalid("inv.1", d2, started_at="not a date"),
    ]
    day4 = [
        make_record(
            14,
            run_id=d4,
            started_at=f"{d4}T00:00:00+03:00",
            status=Status.NO_RECORDING,
            recording_url=None,
            record_id="",
            cost=None,
            transcript_path=None,
            language=None,
            duration_sec=0,
        )
    ]
    return [day1[::-1], day2[::-1], [], day4]


def streamed(days: list[list[CallRecord]], **kw: Any) -> tuple[bytes, Any]:
    sink = io.BytesIO()
    written = write_registry_file(days, sink, **kw)
    return sink.getvalue(), written


@pytest.mark.parametrize("decimal_mark", [",", "."])
def test_streamed_file_is_byte_identical_to_the_whole_period_file(decimal_mark: str) -> None:
    days = varied_days()
    records = [r for day in days for r in day]
    expected = csv_bytes(records, decimal_mark)
    # The fixture exercises what the format has to get right.
    needles = ['"bad;id ""q"""', ";;", '"ошибка;\nсети"', '"доставка, жалоба; срочно"']
    needles += ['"\'=HYPERLINK(""x"")"', '"строка\nвторая"', '"""цитата"""', ";'-1+1;"]
    needles += [f";0{decimal_mark}0120;"]
    for needle in needles:
        assert needle.encode() in expected, needle

    typed: list[dict[str, Any]] = []
    data, written = streamed(days, decimal_mark=decimal_mark, also=typed.extend)

    assert data == expected
    assert (written.rows, written.size) == (len(records), len(expected))
    rows = registry_rows(records, decimal_mark=decimal_mark)
    # `also` gets the same rows, in file order, as typed values
    assert [csv_cells(values, decimal_mark) for values in typed] == rows
    assert written.preview == [masked_row(row) for row in rows[:10]]
    assert all("+79161234567" not in row.values() for row in written.preview)
    assert [r["call_id"] for r in rows[-3:]] == ['bad;id "q"', "inv.1", "inv.2"]
    assert validate_registry_csv(data, decimal_mark=decimal_mark) == [
        f"row {len(rows) - 1} (call inv.1): datetime_start='not a date' is not an ISO 8601 "
        "date-time"
    ]


@pytest.mark.parametrize("days", [[], [[]], [[], []]])
def test_streamed_empty_period_is_the_header_alone(days: list[list[CallRecord]]) -> None:
    data, written = streamed(days)
    assert data == write_registry_csv(registry_frame([]))
    assert (written.rows, written.size, written.preview) == (0, len(data), [])


def test_streamed_preview_runs_on_into_the_held_back_rows() -> None:
    day = [invalid("inv.b", DAY), make_record(2), invalid("inv.a", DAY), make_record(1)]
    _, written = streamed([day])
    assert [r["call_id"] for r in written.preview] == ["call.1", "call.2", "inv.a", "inv.b"]
    _, written = streamed([day], preview_rows=3)
    assert [r["call_id"] for r in written.preview] == ["call.1", "call.2", "inv.a"]


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("decimal_mark", [",", "."])
def test_a_good_registry_is_valid(decimal_mark: str) -> None:
    records = [
        make_record(1),
        failed(2, Status.MISSING_AUDIO),
        failed(3, Status.TRANSCRIPTION_ERROR, "stt_5xx"),
        make_record(
            4,
            status=Status.NO_RECORDING,
            recording_url=None,
            record_id="",
            cost=None,
            transcript_path=None,
            language=None,
            duration_sec=0,
        ),
        make_record(
            5,
            status=Status.INVALID,
            started_at="",
            direction="",
            phone_from="",
            phone_to="",
            duration_sec=0,
            recording_url=None,
            record_id="",
            transcript_path=None,
            language=None,
            cost=None,
            error_code="invalid_row",
        ),
    ]
    data = csv_bytes(records, decimal_mark)
    assert validate_registry_csv(data, decimal_mark=decimal_mark) == []
    # read with the other mark, every cost is wrong
    other = "." if decimal_mark == "," else ","
    problems = validate_registry_csv(data, decimal_mark=other)
    decimals = ("transcription_cost", "telephony_cost")
    filled = sum(1 for row in read_with_csv_module(data) for name in decimals if row[name])
    assert len(problems) == filled > 0
    assert all(f"{other!r} as its decimal mark" in p for p in problems)


def _with_cell(data: bytes, call_id: str, column: str, value: str) -> bytes:
    rows = read_with_csv_module(data)
    for row in rows:
        if row["call_id"] == call_id:
            row[column] = value
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), delimiter=";")
    writer.writeheader()
    writer.writerows(rows)
    return codecs.BOM_UTF8 + buffer.getvalue().encode()


def test_validation_catches_a_missing_required_field() -> None:
    data = csv_bytes([make_record(1), make_record(2)])
    problems = validate_registry_csv(_with_cell(data, "call.2", "transcript_path", ""))
    assert problems == [
        "row 2 (call call.2): transcript_path is empty (required when status is transcribed)"
    ]


def test_validation_catches_an_error_row_without_error_code() -> None:
    data = csv_bytes([failed(1, Status.MISSING_AUDIO, error_code=None)])
    [problem] = validate_registry_csv(data)
    assert "error_code is empty" in problem and "call.1" in problem


def test_validation_catches_a_wrong_header() -> None:
    data = csv_bytes([make_record(1)])
    renamed = data.replace(b"transcription_cost", b"cost", 1)
    [problem] = validate_registry_csv(renamed)
    assert problem.startswith("header is") and "transcription_cost" in problem
    without_tags = data.replace(b";tags;", b";", 1)
    assert validate_registry_csv(without_tags)[0].startswith("header")


def test_validation_catches_missing_bom_wrong_types_and_ragged_rows() -> None:
    data = csv_bytes([make_record(1), make_record(2), make_record(3)])
    assert validate_registry_csv(data[3:]) == ["file does not start with the UTF-8 byte order mark"]
    bad = _with_cell(data, "call.1", "transcription_cost", "0.012")
    bad = _with_cell(bad, "call.2", "datetime_start", "2026-11-24T10:02:07")
    bad = _with_cell(bad, "call.3", "status", "done")
    assert validate_registry_csv(bad) == [
        "row 1 (call call.1): transcription_cost='0.012' is not a decimal with 4 places and ','"
        " as its decimal mark",
        "row 2 (call call.2): datetime_start='2026-11-24T10:02:07' has no UTC offset",
        "row 3 (call call.3): status='done' is not one of ['download_error', 'downloaded', "
        "'invalid', 'listed', 'missing_audio', 'no_recording', 'no_speech', 'transcribed', "
        "'transcription_error']",
    ]
    ragged = data + "только;три;поля\n".encode()
    assert validate_registry_csv(ragged) == ["row 4 (call ?): has 3 fields, expected 35"]


def test_validation_caps_the_list() -> None:
    data = csv_bytes([make_record(n, language=None) for n in range(1, 8)])
    problems = validate_registry_csv(data, max_problems=5)
    assert len(problems) == 6 and problems[-1] == "... and 2 more problems"


def test_validation_reads_a_path_or_a_stream_as_it_reads_bytes(tmp_path: Path) -> None:
    data = csv_bytes([make_record(1), make_record(2), failed(3, Status.MISSING_AUDIO, None)])
    data = _with_cell(data, "call.2", "transcription_cost", "1")
    expected = validate_registry_csv(data)
    assert len(expected) == 2
    path = tmp_path / "registry.csv"
    path.write_bytes(data)
    assert validate_registry_csv(path) == validate_registry_csv(str(path)) == expected
    stream = io.BytesIO(data)
    assert validate_registry_csv(stream) == expected
    assert not stream.closed  # the caller's stream is left open
    assert registry_complete(path).details == registry_complete(data).details


@pytest.mark.parametrize("chunk", [3, 1 << 20])
@pytest.mark.parametrize("bom", [True, False])
@pytest.mark.parametrize(
    "damage",
    [
        b"\xff",  # never valid
        b"\xd0A",  # a 2-byte character cut short
        b"\xe2\x82A",  # a 3-byte character cut short: a range of bytes
    ],
)
def test_not_utf8_is_reported_as_the_whole_file_decode_reports_it(
    monkeypatch: pytest.MonkeyPatch, chunk: int, bom: bool, damage: bytes
) -> None:
    monkeypatch.setattr(registry_schema, "_READ_CHUNK", chunk)  # errors across chunk boundaries
    good = csv_bytes([make_record(1, tags="звонок"), make_record(2)])
    good = good if bom else good[len(codecs.BOM_UTF8) :]
    middle = good.index("звонок".encode()) + 2
    for data in (good[:middle] + damage + good[middle:], good + "ж".encode()[:1]):
        with pytest.raises(UnicodeDecodeError) as whole:
            data.decode("utf-8-sig")
        no_bom = [] if bom else ["file does not start with the UTF-8 byte order mark"]
        assert validate_registry_csv(data) == [*no_bom, f"file is not UTF-8: {whole.value}"]


def test_registry_complete_keeps_the_first_problems_and_every_call_id() -> None:
    data = csv_bytes([make_record(n, language=None) for n in range(1, 31)])
    outcome = registry_complete(data)
    assert not outcome.passed and outcome.value == 30.0
    assert len(outcome.details["problems"]) == 20
    assert outcome.details["problems"][0].startswith("row 1 (call call.1): language is empty")
    assert outcome.offending_call_ids == tuple(sorted(f"call.{n}" for n in range(1, 31)))


HOSTILE = [
    '=HYPERLINK("http://evil.example","x")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "＝1+1",
]


@pytest.mark.parametrize("payload", HOSTILE)
def test_no_cell_of_the_registry_can_run_as_a_formula(payload: str) -> None:
    record = transcribed_record(
        1,
        day="2026-11-24",
        call_id="c-1",
        started_at="2026-11-24T10:00:00+03:00",
        seconds=30.0,
        phone_from=payload,
        phone_to=payload,
        recording_url=payload,
        error_code=payload,
        tags=json.dumps([payload]),
    )
    row = registry_row(record)
    for column in ("from", "to", "recording_url", "error_code", "tags"):
        assert row[column] == "'" + payload, column
    data = write_registry_csv(registry_frame([row]))
    assert validate_registry_csv(data) == []
    assert registry_complete(data).passed


def test_phone_numbers_stay_as_they_are() -> None:
    record = transcribed_record(
        1, day="2026-11-24", call_id="c-1", started_at="2026-11-24T10:00:00+03:00",
        seconds=30.0, phone_from="+7 (495) 123-45-67", phone_to="89581234567",
    )  # fmt: skip
    row = registry_row(record)
    assert (row["from"], row["to"]) == ("+7 (495) 123-45-67", "89581234567")


@pytest.mark.parametrize("payload", HOSTILE)
def test_registry_complete_fails_a_file_with_a_formula_cell(payload: str) -> None:
    record = transcribed_record(
        1, day="2026-11-24", call_id="c-1", started_at="2026-11-24T10:00:00+03:00", seconds=30.0
    )
    row = registry_row(record) | {"recording_url": payload}
    outcome = registry_complete(write_registry_csv(registry_frame([row])))
    assert not outcome.passed and outcome.offending_call_ids == ("c-1",)
    assert "starts like a spreadsheet formula" in outcome.details["problems"][0]


def test_a_call_without_speech_shows_no_speech_nothing_sent_and_nothing_billed() -> None:
    """Issue #23: the detector heard no speech, so nothing went to the STT."""
    silent = transcribed_record(
        1, day=DAY, call_id="c1", started_at=f"{DAY}T10:00:00+03:00", seconds=60.0,
        cost=0.0, language="und", stt_requests=0, stt_sent_sec=0.0, stt_request_sec="[]",
        verdict="no_speech",
    )  # fmt: skip
    spoken = transcribed_record(
        2, day=DAY, call_id="c2", started_at=f"{DAY}T10:05:00+03:00", seconds=90.0,
        stt_requests=2, stt_sent_sec=40.2, stt_request_sec="[20.1, 20.1]",
        verdict="needs_review",
    )  # fmt: skip
    first, second = (registry_values(r) for r in (silent, spoken))
    assert (first["status"], first["stt_sent_sec"], first["stt_billed_sec"]) == ("no_speech", 0, 0)
    assert first["transcription_cost"] == Decimal("0.0000") and first["needs_review"] is None
    assert first["duration_sec"] == 60  # the call's own length stays
    assert (second["status"], second["stt_sent_sec"], second["stt_billed_sec"]) == (
        "transcribed", 41, 42,
    )  # fmt: skip
    assert second["needs_review"] == "yes"
    assert (
        validate_registry_csv(write_registry_csv(registry_frame(registry_rows([silent, spoken]))))
        == []
    )
