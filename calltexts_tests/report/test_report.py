import dataclasses
import io
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader

from calltexts_assets.billing.cost import billed_seconds, forecast
from calltexts_assets.billing.tariffs import Tariffs
from calltexts_assets.clients.model_lifecycle import WARN, ModelNotice
from calltexts_assets.listing.calls import DIRECTIONS as CALL_DIRECTIONS
from calltexts_assets.quality.checks import (
    CheckOutcome,
    cost_matches,
    coverage,
    duration_variance,
    stt_durations,
)
from calltexts_assets.quality.duplicates import duplicate_transcripts
from calltexts_assets.registry.rows import chronological, record_cost_usd
from calltexts_assets.report import data as report_data
from calltexts_assets.report.data import MAX_EXCEPTIONS, ReportData, build_report_data
from calltexts_assets.report.labels import report_words
from calltexts_assets.report.markdown import render_markdown
from calltexts_assets.report.pdf import render_pdf
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_tests.quality import quality_reference as reference
from calltexts_tests.support.records import transcribed_record

DAY = "2026-11-24"
PRICE = 0.006
RATE = 92.5
STT_SECONDS = [30.0, 61.0, 125.5, 240.0, 59.2, 600.0, 7.0]


def make_record(n: int = 1, **changes: Any) -> CallRecord:
    """A transcribed call; its cost follows the tariff unless `changes` say otherwise."""
    seconds = float(changes.pop("seconds", 90.0))
    changes.setdefault("call_id", f"call{n}")
    changes.setdefault("started_at", f"{DAY}T10:{n % 60:02d}:00+03:00")
    return transcribed_record(
        n,
        day=DAY,
        seconds=seconds,
        **changes,
    )


def failed(n: int, status: str, error_code: str | None, message: str = "") -> CallRecord:
    return make_record(
        n,
        status=status,
        error_code=error_code,
        error_message=message or None,
        transcript_path=None,
        language=None,
        audio_duration_sec=None,
        stt_duration_sec=None,
        cost=None,
        attempts=3,
    )


def period() -> list[CallRecord]:
    records = [make_record(n, seconds=s) for n, s in enumerate(STT_SECONDS, start=1)]
    records += [
        failed(11, Status.MISSING_AUDIO, "http_404", "запись удалена | 404"),
        failed(12, Status.NO_RECORDING, None),  # answered (90 s) but not recorded
        failed(13, Status.TRANSCRIPTION_ERROR, "stt_5xx", "Сервер распознавания недоступен"),
        failed(14, Status.INVALID, "invalid_row", "unsafe CALL_ID"),
    ]
    return records


def arguments(records: list[CallRecord], **overrides: Any) -> dict[str, Any]:
    """build_report_data's arguments but the rows: forecast and checks from `records`."""
    arguments: dict[str, Any] = {
        "period_from": DAY,
        "period_to": DAY,
        "forecast": forecast([r.duration_sec for r in records], price_per_minute=PRICE),
        "price_per_minute": PRICE,
        "usd_rub_rate": RATE,
        "budget_usd": None,
        "run_seconds": 3725.4,
        "checks": [coverage(records), duplicate_transcripts(records)],
        "is_sandbox": False,
    }
    arguments.update(overrides)
    return arguments


def build(records: list[CallRecord], **overrides: Any) -> ReportData:
    return build_report_data(records, **arguments(records, **overrides))


def expected_figures() -> dict[str, str]:
    """The report's numbers computed straight from the test data, not through report/data.py."""
    minutes = sum(math.ceil(s / 60) for s in STT_SECONDS)
    usd = minutes * Decimal("0.006")
    rub = usd * Decimal("92.5")
    return {
        "calls": "11",
        "with_audio": "8",  # 11 less missing_audio, no_recording and invalid
        "transcribed": "7",
        "billable": f"{minutes} мин ({minutes / 60:.2f} ч)",
        # each call in one request here: the bill per started minute is the formula
        "billable_by_request": f"{minutes:.1f} мин ({minutes / 60:.2f} ч)",
        "actual": f"{sum(STT_SECONDS) / 60:.1f} мин ({sum(STT_SECONDS) / 3600:.2f} ч)",
        "usd": f"{usd:.4f}",
        "rub": f"{rub.quantize(Decimal('0.01')):.2f}",
        "variance": f"{variance() * 100:.2f} %",
    }


def variance() -> float:
    # Bitrix24 reports whole seconds (round() in make_record); the audio has the fractions.
    bitrix = sum(round(s) for s in STT_SECONDS)
    return abs(sum(STT_SECONDS) - bitrix) / bitrix


def test_report_data_numbers() -> None:
    data = build(period())
    minutes = sum(math.ceil(s / 60) for s in STT_SECONDS)
    assert (data.calls_total, data.transcribed, data.calls_with_audio) == (11, 7, 8)
    assert (data.missing_audio, data.no_recording, data.errors, data.pending) == (1, 1, 2, 0)
    assert data.billable_minutes == minutes
    assert data.transcribed_seconds == pytest.approx(sum(STT_SECONDS))
    assert data.cost_usd == minutes * Decimal("0.006")
    assert data.cost_rub == data.cost_usd * Decimal("92.5")
    assert data.coverage == pytest.approx(7 / 8)
    assert data.duration_variance == pytest.approx(variance())
    assert data.exceptions_total == 4


def test_markdown_shows_the_numbers_computed_from_the_records() -> None:
    markdown = render_markdown(build(period()))
    figures = expected_figures()
    assert markdown.startswith(f"# Отчёт по выгрузке звонков за {DAY}\n")
    for label, value in [
        ("Всего звонков", figures["calls"]),
        ("С доступной записью", figures["with_audio"]),
        ("Расшифровано", figures["transcribed"]),
        ("Запись не найдена", "1"),
        ("Нет записи в Bitrix24", "1"),
        ("Ошибки (скачивания, расшифровки, отклонённые)", "2"),
        ("По формуле требований (мин. с округлением вверх)", figures["billable"]),
        ("К оплате по счёту (поминутно на запрос)", figures["billable_by_request"]),
        ("Фактически расшифровано", figures["actual"]),
        ("Стоимость, USD", figures["usd"]),
        ("Стоимость, RUB", figures["rub"]),
        ("Покрытие расшифровкой", "87.50 %"),
        ("Расхождение с Bitrix24", f"{figures['variance']} (порог 0.50 %)"),
        ("Время выполнения", "1:02:05"),
    ]:
        assert f"| {label} | {value} |" in markdown
    # the exceptions, with a "|" in a message escaped so the table holds
    assert (
        "| call11 | 2026-11-24 10:11 | запись не найдена | http_404 | запись удалена \\| 404 |"
        in (markdown)
    )
    assert "| call13 | 2026-11-24 10:13 | ошибка расшифровки | stt_5xx |" in markdown
    assert "| Покрытие расшифровкой | ОШИБКА |" in markdown
    assert "| Повторные расшифровки | OK |" in markdown


def test_recommendations_follow_the_data() -> None:
    markdown = render_markdown(build(period()))
    assert "настройки записи разговоров" in markdown  # missing_audio
    assert "включена ли запись разговоров" in markdown  # an answered call without recording
    assert "Запустите выгрузку за период повторно" in markdown  # transcription_error
    assert "Отклонённые строки статистики Bitrix24, звонков: 1." in markdown

    clean = render_markdown(build([make_record(n) for n in range(1, 4)], checks=[]))
    assert "Действий не требуется." in clean
    assert "Нет: все звонки расшифрованы." in clean


def test_variance_and_failed_checks_lead_to_recommendations() -> None:
    records = [make_record(1, audio_duration_sec=120.0, duration_sec=90)]
    broken = CheckOutcome("cost_matches", False, 1.0, 0.0, summary="1 call off")
    markdown = render_markdown(build(records, checks=[broken]))
    assert "перекачайте звонки" in markdown
    assert "Проверка «Стоимость по счёту» не пройдена: звонков с расхождением: 1." in markdown


def test_forecast_overrun_and_budget_warnings() -> None:
    records = period()
    low = forecast([60], price_per_minute=PRICE)  # 1 minute forecast, many spent
    data = build(records, forecast=low, budget_usd=0.01)
    assert data.forecast_delta is not None and data.forecast_delta > 0.2
    markdown = render_markdown(data)
    assert "## Предупреждения" in markdown
    assert "выше прогноза" in markdown and "(порог +20 %)" in markdown
    assert "Бюджет превышен" in markdown

    exact = forecast(STT_SECONDS, price_per_minute=PRICE)
    calm = build(records, forecast=exact, budget_usd=0)  # 0: no budget
    assert calm.forecast_delta == 0.0 and calm.warnings == ()
    assert "| Бюджет | не задан |" in render_markdown(calm)


def test_sandbox_output_is_labelled() -> None:
    data = build(period(), is_sandbox=True)
    markdown = render_markdown(data)
    assert markdown.splitlines()[0].startswith("# ПЕСОЧНИЦА: ")
    assert "синтетических данных" in markdown
    assert "ПЕСОЧНИЦА" not in render_markdown(build(period()))


def test_a_range_is_named_in_the_title() -> None:
    data = build(period(), period_to="2026-11-26")
    assert data.title == "Отчёт по выгрузке звонков за 2026-11-24 — 2026-11-26"


def test_exceptions_are_capped() -> None:
    records = [failed(n, Status.MISSING_AUDIO, "http_404") for n in range(MAX_EXCEPTIONS + 5)]
    data = build(records)
    assert len(data.exceptions) == MAX_EXCEPTIONS and data.exceptions_total == MAX_EXCEPTIONS + 5
    assert "... и ещё 5: см. реестр CSV." in render_markdown(data)


def _pdf_text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_pdf_has_the_totals_and_cyrillic_as_text() -> None:
    pdf = render_pdf(build(period(), is_sandbox=True))
    assert pdf.startswith(b"%PDF-")
    text = _pdf_text(pdf)
    figures = expected_figures()
    assert "ПЕСОЧНИЦА: Отчёт по выгрузке звонков" in text
    for line in [
        f"Всего звонков {figures['calls']}",
        f"Расшифровано {figures['transcribed']}",
        f"По формуле требований (мин. с округлением вверх) {figures['billable']}",
        f"Стоимость, USD {figures['usd']}",
        f"Стоимость, RUB {figures['rub']}",
    ]:
        assert line in text
    assert "Сервер распознавания недоступен" in text
    assert "Рекомендации" in text


def test_quoted_html_cannot_break_the_markdown() -> None:
    records = [failed(1, Status.DOWNLOAD_ERROR, "http_502", "<html>\n<b>Bad | gateway</b>")]
    markdown = render_markdown(build(records, period_from=date(2026, 11, 24)))
    row = next(line for line in markdown.splitlines() if line.startswith("| call1 |"))
    assert row.endswith("| &lt;html&gt; &lt;b&gt;Bad \\| gateway&lt;/b&gt; |")
    assert f"за {DAY}" in markdown.splitlines()[0]  # a date works as well as its ISO string


def test_missed_calls_are_not_exceptions() -> None:
    missed = make_record(1, seconds=0, status=Status.NO_RECORDING, recording_url=None)
    data = build([missed, make_record(2)])
    assert data.exceptions_total == 0 and data.no_recording == 1


# -- one pass --------------------------------------------------------------------------------


class OneShot:
    """Rows that can be read once, like `Ledger.iter_records`; a second pass fails."""

    def __init__(self, rows: list[CallRecord]) -> None:
        self._rows = rows
        self.passes = 0

    def __iter__(self) -> Iterator[CallRecord]:
        self.passes += 1
        assert self.passes == 1, "the rows were read twice"
        return (r for r in self._rows)


def busy_period(seed: int, calls: int = 400) -> list[CallRecord]:
    """A shuffled period with every status, some rows without a start time and rows that
    are the same call with another error message (equal sort keys: input order decides)."""
    rng = random.Random(seed)
    statuses = [Status.TRANSCRIBED] * 6 + [
        Status.LISTED,
        Status.DOWNLOADED,
        Status.NO_RECORDING,
        Status.MISSING_AUDIO,
        Status.DOWNLOAD_ERROR,
        Status.TRANSCRIPTION_ERROR,
        Status.INVALID,
    ]
    records = []
    for n in range(calls):
        status = rng.choice(statuses)
        when = {} if rng.random() < 0.9 else {"started_at": "not a time"}
        if status == Status.TRANSCRIBED:
            seconds = rng.choice([*STT_SECONDS, 0.0, 1200.0])
            audio = rng.choice([seconds, seconds, seconds + 3.7, None])
            records.append(make_record(n, seconds=seconds, audio_duration_sec=audio, **when))
        else:
            code = rng.choice(["http_404", "stt_5xx", None])
            record = failed(n, status, code, f"message {n}")
            if rng.random() < 0.2:
                record = dataclasses.replace(record, duration_sec=0, cost=0.006)
            records.append(dataclasses.replace(record, **when))
            if rng.random() < 0.1:
                records.append(dataclasses.replace(records[-1], error_message=f"again {n}"))
    rng.shuffle(records)
    return records


@pytest.mark.parametrize("seed", range(5))
def test_report_data_read_in_one_pass_is_the_same(seed: int) -> None:
    records = busy_period(seed)
    rows = OneShot(records)
    data = build_report_data(rows, **arguments(records))
    assert rows.passes == 1
    assert data == build(records)
    # the figures as the list-based report computed them
    transcribed = [r for r in records if r.status == Status.TRANSCRIBED]
    assert data.calls_total == len(records) and data.transcribed == len(transcribed)
    assert data.transcribed_seconds == sum([billed_seconds(r) for r in transcribed])
    assert data.bitrix24_seconds == sum(r.duration_sec for r in records)
    prices = Tariffs.flat(PRICE)  # the report's, as `arguments` give it
    costs = [c for r in records if (c := record_cost_usd(r, prices)) is not None]
    assert data.cost_usd == sum(costs, Decimal(0))
    assert data.duration_variance == reference.duration_variance(records).value
    assert data.coverage == reference.coverage(records).value
    assert data.status_counts == dict(sorted(Counter(r.status for r in records).items()))


def _exceptions_as_before(records: list[CallRecord]) -> list[tuple[str, str, str]]:
    def is_exception(r: CallRecord) -> bool:
        if r.status == Status.NO_RECORDING:
            return r.duration_sec > 0
        return r.status != Status.TRANSCRIBED

    failed_rows = sorted(
        filter(is_exception, records),
        key=lambda r: (r.status not in Status.ERRORS, r.status, chronological(r)),
    )
    named = report_words().status  # the report names a status in its language
    return [(r.call_id, named(r.status), (r.error_message or "")[:160]) for r in failed_rows]


@pytest.mark.parametrize("cap", [1, 5, 40, MAX_EXCEPTIONS])
def test_the_first_exceptions_are_kept_in_order_and_all_counted(
    cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = busy_period(7, calls=600)
    expected = _exceptions_as_before(records)
    assert len(expected) > cap  # the cut happens
    monkeypatch.setattr(report_data, "MAX_EXCEPTIONS", cap)
    data = build_report_data(OneShot(records), **arguments(records))
    got = [(e.call_id, e.status, e.message) for e in data.exceptions]
    assert got == expected[:cap]
    assert data.exceptions_total == len(expected)


def test_an_empty_period_is_reported_as_such_not_as_a_success() -> None:
    data = build_report_data(
        [],
        period_from="2026-11-01",
        period_to="2026-11-03",
        forecast=None,
        price_per_minute=0.006,
        usd_rub_rate=100,
        budget_usd=None,
        run_seconds=1.0,
        checks=[coverage([])],
    )
    assert "Действий не требуется." not in data.recommendations
    assert data.recommendations[0].startswith("За период не найдено ни одного звонка")
    markdown = render_markdown(data)
    assert "не найдено ни одного звонка" in markdown and "telephony" in markdown
    assert "100.00 %" not in markdown  # no coverage claimed over nothing


def test_per_day_direction_and_status_breakdowns() -> None:
    records = period()
    data = build(records, period_from="2026-11-23", period_to=DAY)  # a day before: no calls
    minutes = sum(math.ceil(s / 60) for s in STT_SECONDS)
    assert [d.label for d in data.days] == ["2026-11-23", DAY]
    assert (data.days[0].calls, data.days[0].minutes) == (0, 0)
    assert (data.days[1].calls, data.days[1].transcribed, data.days[1].minutes) == (11, 7, minutes)
    assert sum(s.calls for s in data.statuses) == 11
    assert {s.label: s.calls for s in data.statuses}["расшифрован"] == 7
    assert sum(d.calls for d in data.directions) == 11
    assert sum(d.cost_usd for d in data.directions) == data.cost_usd
    markdown = render_markdown(data)
    day_rows = [line for line in markdown.splitlines() if line.startswith("| 2026-11-2")]
    assert day_rows[0].startswith("| 2026-11-23 | 0 |  | 0 | 0 |  | 0.0000 |")
    assert f"| {DAY} | 11 | {'█' * 20} | 7 | {minutes} | {'█' * 20} |" in day_rows[1]
    assert "## По направлениям" in markdown and "## По статусам" in markdown


def test_pdf_tables_keep_their_header_on_every_page() -> None:
    records = [make_record(n, seconds=61.0) for n in range(1, 2)]
    records += [failed(n, Status.TRANSCRIPTION_ERROR, "500", "Сбой") for n in range(2, 150)]
    reader = PdfReader(io.BytesIO(render_pdf(build(records))))
    pages = [page.extract_text() for page in reader.pages]
    spanned = [text for text in pages if "Сбой" in text]
    assert len(spanned) >= 2  # the exceptions table runs over pages
    assert all("Звонок Начало Статус Код ошибки Сообщение" in text for text in spanned)
    assert "Звонков в день" in "".join(pages) and "По статусам" in "".join(pages)


def test_the_stt_section_shows_what_was_sent_and_how_roles_were_given() -> None:
    one_pass = [
        make_record(n, seconds=60.0, stt_requests=1, stt_sent_sec=60.0, role_mode="energy",
                    stt_request_sec="[60]", hallucinations=n % 2)
        for n in range(1, 4)
    ]  # fmt: skip
    per_channel = make_record(
        4, seconds=60.0, stt_requests=3, stt_sent_sec=120.0, role_mode="per_channel",
        stt_request_sec="[60, 60]", language="en", cost=2 * PRICE, hallucinations=0,
    )  # fmt: skip
    data = build([*one_pass, per_channel])
    (stt,) = [s for s in data.sections if s.title == "Распознавание (STT)"]
    rows = dict(stt.rows)
    assert rows["Запросов к STT (с повторами)"] == "6"
    assert rows["Оплачиваемых запросов"] == "5"
    assert rows["Минут отправлено на STT / минут звонков"] == "5.0 мин / 4.0 мин звонков (1.25)"
    assert rows["Отброшено как галлюцинации STT"] == "2"
    assert "каждый канал отдельно (двойная оплата): 1" in rows["Роли собеседников"]
    assert rows["Языки"] == "русский (ru): 3, английский (en): 1"
    assert any("STT_ROLE_MODE=per_channel" in w for w in data.warnings)
    # The per-channel call is billed for both sides: 2 minutes, and the registry says so.
    # The requirements' formula counts the call's minutes once (4); the bill both sides (5).
    assert data.billable_minutes == 4 and data.billed_seconds == 5 * 60
    assert data.cost_usd == Decimal("0.030")
    assert "Роли собеседников" in render_markdown(data)


def test_per_employee_and_per_line_tables_sorted_by_minutes() -> None:
    anna = {"portal_user_id": "1", "employee_name": "Анна Смирнова"}
    sip = {"portal_number": "reg1", "line_name": "Офис (SIP)"}
    records = [
        make_record(1, seconds=600.0, **anna, **sip),
        make_record(2, seconds=60.0, **anna, portal_number="+74951234567"),
        make_record(3, seconds=120.0, portal_user_id="15", **sip),  # no name: the id
        make_record(4, seconds=0.0, failed_code="304", portal_user_id="15", status="no_recording"),
        failed(5, Status.MISSING_AUDIO, "http_404"),
    ]
    data = build(records)
    employees = [
        (r.label, r.calls, r.minutes, r.not_connected, r.without_recording) for r in data.employees
    ]
    assert employees == [
        ("Анна Смирнова (1)", 2, "11.0", 0, 0),
        ("15", 2, "2.0", 1, 0),
        ("7", 1, "1.5", 0, 1),  # the missing recording, on make_record's operator 7
    ]
    assert [(r.label, r.calls) for r in data.lines] == [
        ("Офис (SIP) (reg1)", 2),
        ("—", 2),
        ("+74951234567", 1),
    ]
    anna_cost = records[0].cost + records[1].cost
    assert data.employees[0].cost_usd == pytest.approx(Decimal(str(anna_cost)))
    markdown = render_markdown(data)
    assert "| Анна Смирнова (1) | 2 | 11.0 |" in markdown
    text = _pdf_text(render_pdf(data))
    assert "По сотрудникам" in text and "Анна Смирнова (1)" in text and "По линиям" in text


def test_pdf_charts_label_the_y_axis_and_enough_dates() -> None:
    data = build(period(), period_from=date(2026, 11, 5), period_to=date(2026, 11, 24))
    text = _pdf_text(render_pdf(data))
    peak_calls, _ = data.day_peak
    assert peak_calls == 11
    assert "5.5" in text  # the y-axis: 0, half and the peak of the calls chart
    # 20 days: every third date under the x-axis, first and 2026-11-23 included
    for label in ("11-05", "11-08", "11-14", "11-20", "11-23"):
        assert label in text


# -- one language ------------------------------------------------------------------------------

# What the ledger and the registry's machine columns hold; a reader never meets them.
IDENTIFIERS = {
    *CALL_DIRECTIONS.values(),
    *(v for k, v in vars(Status).items() if k.isupper() and isinstance(v, str)),
    "duration_variance",
    "stt_durations",
    "coverage",
    "duplicate_transcripts",
    "cost_matches",
    "registry_complete",
}
_WORD = re.compile(r"[A-Za-z_]+")
_CYRILLIC = re.compile("[а-яё]", re.IGNORECASE)


def every_kind_of_call(message: str) -> list[CallRecord]:
    """Calls of every direction and every status, so every label has its turn."""
    records = [
        make_record(n, direction=direction, language="en")
        for n, direction in enumerate(sorted(CALL_DIRECTIONS.values()), start=1)
    ]
    statuses = sorted(IDENTIFIERS & {v for k, v in vars(Status).items() if k.isupper()})
    records += [
        failed(n, status, f"code_{n}", message)
        for n, status in enumerate(statuses, start=20)
        if status != Status.TRANSCRIBED
    ]
    return records


def all_checks(records: list[CallRecord]) -> list[CheckOutcome]:
    return [
        duration_variance(records),
        stt_durations(records),
        coverage(records),
        duplicate_transcripts(records),
        cost_matches(records, 1.0),  # a wrong tariff: every call off, so the check says why
        CheckOutcome("registry_complete", False, 2.0, 0.0, summary="2 problems in the CSV"),
    ]


@pytest.mark.parametrize("sandbox", [False, True])
def test_the_default_report_names_no_identifier(sandbox: bool) -> None:
    records = every_kind_of_call("сбой")
    data = build(records, checks=all_checks(records), is_sandbox=sandbox)
    markdown = render_markdown(data)
    pdf = _pdf_text(render_pdf(data))
    for text in (markdown, pdf):
        assert not set(_WORD.findall(text)) & IDENTIFIERS
    # each one is there, by its Russian name
    assert "| входящий (переадресованный) |" in markdown
    assert "| информационный звонок |" in markdown
    assert "| ошибка скачивания |" in markdown and "| отклонён |" in markdown
    assert "| Стоимость по счёту | ОШИБКА | звонков со стоимостью не по счёту: 5 из 5" in markdown
    assert "| Полнота реестра | ОШИБКА | замечаний к реестру CSV: 2 |" in markdown
    assert "Языки | английский (en): 5 |" in markdown
    assert "## По направлениям" in markdown and "По направлениям" in pdf


def test_the_english_report_is_english_throughout() -> None:
    records = every_kind_of_call("failure")
    data = build(records, checks=all_checks(records), is_sandbox=True, language="en")
    markdown = render_markdown(data)
    pdf = _pdf_text(render_pdf(data))
    for text in (markdown, pdf):
        assert not _CYRILLIC.search(text), _CYRILLIC.findall(text)
        assert not {w for w in _WORD.findall(text) if "_" in w} & IDENTIFIERS
    assert markdown.startswith(f"# SANDBOX: Call export report for {DAY}\n")
    for heading in ("Calls", "By day", "By direction", "By status", "By employee", "By line"):
        assert f"\n## {heading}\n" in markdown
    assert "| incoming (redirected) |" in markdown and "| informational call |" in markdown
    assert "| download error |" in markdown and "| rejected |" in markdown
    assert "| Cost against the bill | FAILED | calls whose cost is not the bill: 5 of 5" in markdown
    assert "| Recording not found | 1 |" in markdown
    assert "Languages | English (en): 5 |" in markdown
    assert "SANDBOX: Call export report" in pdf and "Billable minutes per day" in pdf


def test_a_model_shutdown_is_worded_in_the_report_language() -> None:
    notice = ModelNotice(
        "WHISPER_MODEL", "whisper-1", WARN, date(2027, 2, 26), 30, "gpt-transcribe"
    )
    russian = build(period(), model_warnings=[notice]).warnings
    english = build(period(), model_warnings=[notice], language="en").warnings
    assert russian == (
        "WHISPER_MODEL=whisper-1: модель отключается 2027-02-26, через 30 дн. (GET /v1/models); "
        "задайте WHISPER_MODEL=gpt-transcribe.",
    )
    assert english == (
        "WHISPER_MODEL=whisper-1: the model shuts down on 2027-02-26, in 30 days "
        "(GET /v1/models); set WHISPER_MODEL=gpt-transcribe.",
    )


def test_an_unknown_report_language_is_refused() -> None:
    with pytest.raises(ValueError, match="report language 'de'"):
        build(period(), language="de")


def test_the_stt_section_counts_calls_without_speech_and_doubtful_ones() -> None:
    """no_speech and needs_review are counted, the second opinion's requests are billed
    requests, and a doubtful call is listed with its doubts."""
    plain = make_record(1, seconds=60.0, stt_requests=1, stt_sent_sec=30.0, stt_request_sec="[30]")
    silent = make_record(
        2,
        seconds=30.0,
        stt_requests=0,
        stt_sent_sec=0.0,
        stt_request_sec="[]",
        verdict="no_speech",
        cost=0.0,
    )
    doubtful = make_record(
        3, seconds=30.0, stt_requests=2, stt_sent_sec=60.0, stt_request_sec="[30]",
        verdict="needs_review", doubts="repetition", fallback_model="whisper-1",
        fallback_request_sec="[30]", fallback_kept=False,
    )  # fmt: skip
    data = build([plain, silent, doubtful])
    (stt,) = [s for s in data.sections if s.title == "Распознавание (STT)"]
    rows = dict(stt.rows)
    assert rows["Запросов к STT (с повторами)"] == "3"
    assert rows["Оплачиваемых запросов"] == "3"
    assert rows["Минут отправлено на STT / минут звонков"] == "1.5 мин / 2.0 мин звонков (0.75)"
    assert rows["Без речи (не отправлены, 0 к оплате)"] == "1"
    assert rows["Второе мнение (WHISPER_FALLBACK_MODEL), его ответ оставлен"] == "1, 0"
    assert rows["Требуют проверки человеком"] == "1"
    (listed,) = [row for row in data.exceptions if row.call_id == doubtful.call_id]
    assert listed.status == "требует проверки человеком"
    assert listed.message == "сомнения: повторы в тексте; второе мнение whisper-1: не оставлено"
    assert plain.call_id not in {row.call_id for row in data.exceptions}


def test_calls_without_speech_have_their_own_status_row() -> None:
    """A call in which no speech was found is not counted as transcribed in the status table,
    in either language."""
    silent = make_record(
        2, seconds=30.0, stt_requests=0, stt_sent_sec=0.0, stt_request_sec="[]",
        verdict="no_speech", cost=0.0,
    )  # fmt: skip
    records = [make_record(1, seconds=60.0), silent]
    for language, transcribed, no_speech in (
        ("ru", "расшифрован", "без речи (в STT не отправлялся)"),
        ("en", "transcribed", "no speech (nothing sent to the STT)"),
    ):
        statuses = {row.label: row.calls for row in build(records, language=language).statuses}
        assert statuses == {transcribed: 1, no_speech: 1}
