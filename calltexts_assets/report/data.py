"""The period's cost report as figures: every number computed once from the ledger rows
and formatted once (`sections`), so the Markdown and the PDF cannot disagree.

The report speaks one language (report/labels.py: Russian by default, English with
CALLTEXTS_LANGUAGE=en): directions, statuses and checks by their names in it; only the
error codes and messages stay as in the registry CSV so the two can be cross-read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any

from calltexts_assets.billing.cost import (
    MINUTE,
    Forecast,
    billed_seconds,
    format_rub,
    format_usd,
    record_formula_minutes,
    round_rub,
    round_usd,
    to_rub,
)
from calltexts_assets.billing.tariffs import Tariffs
from calltexts_assets.clients.model_lifecycle import ModelNotice
from calltexts_assets.quality.checks import (
    VARIANCE_THRESHOLD,
    CheckOutcome,
    CoverageTally,
    DurationTally,
)
from calltexts_assets.quality.one_pass import FloatSum, Smallest
from calltexts_assets.registry.call_codes import call_result
from calltexts_assets.registry.rows import chronological, record_cost_usd
from calltexts_assets.report.labels import DEFAULT_LANGUAGE, ReportWords, pct, report_words
from calltexts_assets.report.stt import SttTally
from calltexts_assets.state.ledger import NEEDS_REVIEW, NO_SPEECH, CallRecord, Status

OVER_FORECAST = 0.20  # warn when the actual cost exceeds the forecast by more than this
MAX_EXCEPTIONS = 200  # rows listed in the report; the registry CSV has them all
_MESSAGE_CHARS = 160
_PENDING = frozenset({Status.LISTED, Status.DOWNLOADED})
_FAILED = frozenset({Status.DOWNLOAD_ERROR, Status.TRANSCRIPTION_ERROR, Status.INVALID})


@dataclass(frozen=True)
class Section:
    title: str
    rows: tuple[tuple[str, str], ...]  # (label, formatted value)


@dataclass(frozen=True)
class ExceptionRow:
    call_id: str
    started_at: str
    status: str
    error_code: str
    message: str


@dataclass(frozen=True)
class Breakdown:
    """A row of a per-day, per-direction or per-status table (and the day chart)."""

    label: str
    calls: int
    transcribed: int
    minutes: int  # billable minutes of the transcribed calls
    cost_usd: Decimal

    @property
    def cost(self) -> str:
        return format_usd(self.cost_usd)


@dataclass(frozen=True)
class WhoRow:
    """A row of the per-employee or per-line table."""

    label: str  # "Анна Смирнова (7)", the id alone without a name, "—" without either
    calls: int
    seconds: int  # the calls' durations as Bitrix24 reports them
    cost_usd: Decimal  # transcription cost
    not_connected: int  # calls whose CALL_FAILED_CODE is not "answered"
    without_recording: int  # answered calls without a recording, or whose recording is gone

    @property
    def minutes(self) -> str:
        return f"{self.seconds / 60:.1f}"

    @property
    def cost(self) -> str:
        return format_usd(self.cost_usd)


def _who_label(name: str | None, key: str | None) -> str:
    name, key = name or "", key or ""
    return (f"{name} ({key})" if name and key else name or key) or "—"


@dataclass(frozen=True)
class CheckRow:
    name: str
    state: str  # "OK", "предупреждение", "ОШИБКА" (in the report's language)
    summary: str


@dataclass(frozen=True)
class ReportData:
    words: ReportWords  # the report's language: every label the renderers add
    title: str
    is_sandbox: bool
    period_from: str
    period_to: str
    # calls
    calls_total: int
    calls_with_audio: int
    transcribed: int
    no_recording: int
    missing_audio: int
    errors: int  # download_error + transcription_error + invalid
    pending: int  # listed / downloaded: the run did not finish them
    status_counts: dict[str, int]
    coverage: float
    # durations
    bitrix24_seconds: int  # all calls, as Bitrix24 reports them
    transcribed_seconds: float  # audio of the transcribed calls (billed durations)
    billable_minutes: int  # the requirements' formula: minutes rounded up per call
    billed_seconds: int  # the bill: per request, in the billing unit
    billing_unit: str
    duration_variance: float
    # money (exact Decimals; rounded only when formatted)
    price_per_minute_usd: Decimal
    usd_rub_rate: Decimal
    cost_usd: Decimal  # the bill
    cost_rub: Decimal
    formula_cost_usd: Decimal  # billable_minutes x tariff (the requirements' formula)
    forecast: Forecast | None
    forecast_delta: float | None  # (actual - forecast) / forecast
    budget_usd: Decimal | None
    run_seconds: float
    # presentation
    sections: tuple[Section, ...]
    days: tuple[Breakdown, ...]  # every day of the period, in order (days without calls too)
    directions: tuple[Breakdown, ...]
    statuses: tuple[Breakdown, ...]
    employees: tuple[WhoRow, ...]  # by minutes, most first
    lines: tuple[WhoRow, ...]
    checks: tuple[CheckRow, ...]
    exceptions: tuple[ExceptionRow, ...]
    exceptions_total: int
    warnings: tuple[str, ...]
    recommendations: tuple[str, ...]

    @property
    def day_peak(self) -> tuple[int, int]:
        """The busiest day's calls and minutes: the scale of the day chart."""
        return (
            max((d.calls for d in self.days), default=0),
            max((d.minutes for d in self.days), default=0),
        )

    @property
    def period_label(self) -> str:
        if self.period_from == self.period_to:
            return self.period_from
        return f"{self.period_from} — {self.period_to}"


# -- formatting ------------------------------------------------------------------------------


_pct = pct


def _minutes(w: ReportWords, seconds: float) -> str:
    """ "12.5 мин (0.21 ч)": minutes to 0.1, hours to 0.01."""
    return w("minutes", minutes=seconds / 60, hours=seconds / 3600)


def _sentence(label: str) -> str:
    """A table's lower-case label as a row's name: "запись не найдена" -> "Запись не найдена"."""
    return label[:1].upper() + label[1:]


def _local_time(iso: str) -> str:
    """Short start time for a table cell (portal wall-clock), e.g. 2026-11-24 10:09."""
    return iso[:16].replace("T", " ")


def run_time(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _money(usd: Decimal, rub: Decimal) -> str:
    return f"{format_usd(usd)} USD ({format_rub(rub)} RUB)"


# -- building --------------------------------------------------------------------------------


def _warnings(
    w: ReportWords,
    cost_usd: Decimal,
    fc: Forecast | None,
    delta: float | None,
    budget: Decimal | None,
) -> list[str]:
    found = []
    if delta is not None and delta > OVER_FORECAST:
        found.append(
            w(
                "w_over_forecast",
                cost=format_usd(cost_usd),
                forecast=format_usd(fc.cost_usd if fc else 0),
                delta=_pct(delta),
                limit=f"{OVER_FORECAST * 100:.0f}",
            )
        )
    if budget is not None:
        if cost_usd > budget:
            found.append(w("w_over_budget", cost=format_usd(cost_usd), budget=format_usd(budget)))
        if fc is not None and fc.cost_usd > budget:
            found.append(
                w(
                    "w_forecast_over_budget",
                    forecast=format_usd(fc.cost_usd),
                    budget=format_usd(budget),
                )
            )
    return found


def _recommendations(
    w: ReportWords,
    totals: _Totals,
    variance: float,
    delta: float | None,
    over_budget: bool,
    checks: Sequence[CheckOutcome],
    stt_tips: Sequence[str] = (),
) -> list[str]:
    counts, answered_without_recording = totals.counts, totals.answered_without_recording
    calls, with_audio = totals.calls, totals.coverage.with_audio
    tips = list(stt_tips)
    if counts[Status.MISSING_AUDIO]:
        tips.append(w("r_missing_audio", n=counts[Status.MISSING_AUDIO]))
    if answered_without_recording:
        tips.append(w("r_not_recorded", n=answered_without_recording))
    retryable = counts[Status.DOWNLOAD_ERROR] + counts[Status.TRANSCRIPTION_ERROR]
    if retryable:
        tips.append(w("r_retryable", n=retryable))
    if counts[Status.INVALID]:
        tips.append(w("r_invalid", n=counts[Status.INVALID]))
    pending = sum(counts[s] for s in _PENDING)
    if pending:
        tips.append(w("r_pending", n=pending))
    if variance > VARIANCE_THRESHOLD:
        tips.append(w("r_variance", value=_pct(variance), check=w.check("duration_variance")))
    if delta is not None and delta > OVER_FORECAST:
        tips.append(w("r_over_forecast"))
    if over_budget:
        tips.append(w("r_over_budget"))
    covered = {"duration_variance", "coverage"}
    for check in checks:
        if not check.passed and check.name not in covered:
            tips.append(
                w("r_check_failed", check=w.check(check.name), summary=w.check_summary(check))
            )
    if not calls:
        tips.insert(0, w("r_no_calls"))
    elif not with_audio:
        tips.insert(0, w("r_no_audio", n=calls))
    return tips or [w("r_nothing")]


def _is_exception(record: CallRecord) -> bool:
    # A missed call (0 s) has no recording by nature: listing those would bury the real ones.
    if record.status == Status.NO_RECORDING:
        return record.duration_sec > 0
    # A transcribed call with a flag (stt_duration_mismatch), or still doubtful after the
    # STT (needs_review: a person should listen), is one too.
    return (
        record.status != Status.TRANSCRIBED
        or bool(record.error_code)
        or record.verdict == NEEDS_REVIEW
    )


def _exception_key(record: CallRecord) -> tuple[bool, str, tuple[int, float, str, str, str]]:
    """Errors first, then by status, then in time order."""
    return (record.status not in Status.ERRORS, record.status, chronological(record))


def _exception_row(record: CallRecord, w: ReportWords) -> ExceptionRow:
    message = record.error_message or ""
    if record.verdict == NEEDS_REVIEW:
        doubt = w("doubts", doubts=w.doubts(record.doubts or ""))
        if record.fallback_model:
            kept = "fallback_kept" if record.fallback_kept else "fallback_dropped"
            doubt += "; " + w(kept, model=record.fallback_model)
        message = f"{doubt}; {message}" if message else doubt
    doubtful = record.status == Status.TRANSCRIBED and record.verdict == NEEDS_REVIEW
    return ExceptionRow(
        call_id=record.call_id,
        started_at=_local_time(record.started_at),
        status=w.status(NEEDS_REVIEW if doubtful else record.status),
        error_code=record.error_code or "",
        message=message[:_MESSAGE_CHARS],
    )


def _exception_entry(record: CallRecord, w: ReportWords) -> tuple[Any, ExceptionRow]:
    # The row is built as the call goes by: only the first MAX_EXCEPTIONS are kept.
    return _exception_key(record), _exception_row(record, w)


class _Totals:
    """The report's figures as running totals over one pass of the rows (a period may have
    20,000+ calls): a few numbers, and the first MAX_EXCEPTIONS exceptions."""

    def __init__(
        self,
        price: Decimal,
        unit: str = MINUTE,
        words: ReportWords | None = None,
        tariffs: Tariffs | None = None,
    ) -> None:
        self.price, self.unit = price, unit
        # each row priced by its own models (billing/tariffs.py); without: all at `price`
        self.tariffs = tariffs or Tariffs.flat(price, unit)
        self.words = words or report_words()
        self.counts: Counter[str] = Counter()
        self.calls = 0
        self.transcribed = 0
        self.billable_minutes = 0  # the requirements' formula
        self.billed_seconds = 0  # the bill
        self.bitrix24_seconds = 0
        self.answered_without_recording = 0
        self.cost_usd = Decimal(0)
        self.transcribed_seconds = FloatSum()  # as sum() over a list, to the last bit
        self.durations = DurationTally()
        self.coverage = CoverageTally()
        self.stt = SttTally()
        self.exceptions: Smallest[tuple[Any, ExceptionRow]] = Smallest(
            MAX_EXCEPTIONS, key=itemgetter(0)
        )
        # calls, transcribed, billable minutes, cost: per day, direction and status
        self.by: dict[str, defaultdict[str, list[Any]]] = {
            name: defaultdict(lambda: [0, 0, 0, Decimal(0)])
            for name in ("day", "direction", "status")
        }
        # calls, seconds, cost, not connected, without recording: per employee and line
        self.who: dict[str, defaultdict[str, list[Any]]] = {
            name: defaultdict(lambda: [0, 0, Decimal(0), 0, 0]) for name in ("employee", "line")
        }

    def who_rows(self, name: str) -> tuple[WhoRow, ...]:
        rows = [WhoRow(label, *values) for label, values in self.who[name].items()]
        return tuple(sorted(rows, key=lambda r: (-r.seconds, -r.calls, r.label)))

    def breakdown(
        self, name: str, labels: Iterable[str] = (), named: Callable[[str], str] = str
    ) -> tuple[Breakdown, ...]:
        """Rows of a table; `named` gives a key (a direction, a status) its reader's name."""
        rows = self.by[name]
        keys = list(labels) or sorted(rows, key=lambda k: (-rows[k][0], k))
        return tuple(
            Breakdown(named(k), *rows[k]) if k in rows else Breakdown(named(k), 0, 0, 0, Decimal(0))
            for k in keys
        )

    @property
    def errors(self) -> int:
        return sum(self.counts[s] for s in _FAILED)

    @property
    def pending(self) -> int:
        return sum(self.counts[s] for s in _PENDING)

    def add(self, r: CallRecord) -> None:
        self.calls += 1
        self.counts[r.status] += 1
        self.bitrix24_seconds += r.duration_sec
        cost = record_cost_usd(r, self.tariffs) or Decimal(0)
        self.cost_usd += cost
        done = r.status == Status.TRANSCRIBED
        minutes = record_formula_minutes(r) if done else 0
        fallback_billed = 0
        if done:
            self.transcribed += 1
            self.billable_minutes += minutes
            # the registry's stt_billed_sec: both models' requests, each in its unit (a row
            # whose model has no tariff known has none, and fails cost_matches)
            first, fallback_billed = (
                (0, 0) if self.tariffs.unpriced(r) else self.tariffs.billed_seconds(r)
            )
            self.billed_seconds += first + fallback_billed
            self.transcribed_seconds.add(billed_seconds(r))
        # a call in which no speech was found is not counted as transcribed by status
        status = NO_SPEECH if done and r.verdict == NO_SPEECH else r.status
        for name, label in (("day", r.run_id), ("direction", r.direction), ("status", status)):
            row = self.by[name][label or "—"]
            row[0] += 1
            row[1] += done
            row[2] += minutes
            row[3] += cost
        if r.status == Status.NO_RECORDING and r.duration_sec > 0:
            self.answered_without_recording += 1
        lost = (r.status == Status.NO_RECORDING and r.duration_sec > 0) or (
            r.status == Status.MISSING_AUDIO
        )
        failed = call_result(r.failed_code) not in ("", "answered")
        for name, label in (
            ("employee", _who_label(r.employee_name, r.portal_user_id)),
            ("line", _who_label(r.line_name, r.portal_number)),
        ):
            row = self.who[name][label]
            row[0] += 1
            row[1] += r.duration_sec
            row[2] += cost
            row[3] += failed
            row[4] += lost
        self.durations.add(r)
        self.coverage.add(r)
        self.stt.add(r, fallback_billed)
        if _is_exception(r):
            self.exceptions.add(_exception_entry(r, self.words))


def period_figures(
    records: Iterable[CallRecord],
    *,
    price_per_minute: float | Decimal,
    usd_rub_rate: float | Decimal,
    tariffs: Tariffs | None = None,
) -> dict[str, int | float]:
    """The report's headline numbers of some rows (a day's, for its partition's metadata)."""
    totals = _Totals(Decimal(str(price_per_minute)), tariffs=tariffs)
    for r in records:
        totals.add(r)
    return {
        "calls": totals.calls,
        "transcribed": totals.transcribed,
        "missing_audio": totals.counts[Status.MISSING_AUDIO],
        "errors": totals.errors,
        "billable_minutes": totals.billable_minutes,
        "cost_usd": float(round_usd(totals.cost_usd)),
        "cost_rub": float(round_rub(to_rub(totals.cost_usd, usd_rub_rate))),
    }


def _forecast_rows(
    w: ReportWords, forecast: Forecast | None, delta: float | None, budget: Decimal | None
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]]
    if forecast is not None:
        rows = [
            (w("fc_calls"), str(forecast.calls)),
            (w("fc_billed"), _minutes(w, forecast.billed_seconds)),
            (w("fc_formula"), w("just_minutes", minutes=forecast.minutes)),
            (w("fc_cost"), _money(forecast.cost_usd, forecast.cost_rub)),
            (w("fc_delta"), "—" if delta is None else f"{delta * 100:+.2f} %"),
        ]
    else:
        rows = [(w("forecast"), w("not_given"))]
    rows.append((w("budget"), w("no_budget") if budget is None else f"{format_usd(budget)} USD"))
    return rows


def _sections(
    w: ReportWords,
    totals: _Totals,
    forecast: Forecast | None,
    delta: float | None,
    budget: Decimal | None,
    price: Decimal,
    rate: Decimal,
    run_seconds: float,
    work: tuple[float, int] | None = None,
) -> tuple[Section, ...]:
    counts, minutes = totals.counts, totals.billable_minutes
    return (
        Section(
            w("s_calls"),
            (
                (w("calls_total"), str(totals.calls)),
                (w("with_audio"), str(totals.coverage.with_audio)),
                (w("transcribed"), str(totals.transcribed)),
                (_sentence(w.status(Status.NO_RECORDING)), str(counts[Status.NO_RECORDING])),
                (_sentence(w.status(Status.MISSING_AUDIO)), str(counts[Status.MISSING_AUDIO])),
                (w("errors"), str(totals.errors)),
                (w("pending"), str(totals.pending)),
                (
                    w("coverage"),
                    _pct(totals.coverage.value)
                    if totals.coverage.with_audio
                    else w("no_audio_coverage"),
                ),
            ),
        ),
        Section(
            w("s_duration"),
            (
                (w("bitrix24_all"), _minutes(w, totals.bitrix24_seconds)),
                (w("transcribed_audio"), _minutes(w, totals.transcribed_seconds.value)),
                (w("billed", unit=w.unit(totals.unit)), _minutes(w, totals.billed_seconds)),
                (w("formula"), w("whole_minutes", minutes=minutes, hours=minutes / 60)),
                (
                    w("variance"),
                    w(
                        "variance_value",
                        value=_pct(totals.durations.value),
                        limit=_pct(VARIANCE_THRESHOLD),
                    ),
                ),
            ),
        ),
        Section(
            w("s_cost"),
            (
                (w("tariff"), w("tariff_value", price=price, rate=rate)),
                (w("cost_usd"), format_usd(totals.cost_usd)),
                (w("cost_rub"), format_rub(to_rub(totals.cost_usd, rate))),
                (w("formula_cost"), _money(minutes * price, to_rub(minutes * price, rate))),
            ),
        ),
        Section(w("s_stt"), totals.stt.rows(w)),
        Section(w("s_forecast"), tuple(_forecast_rows(w, forecast, delta, budget))),
        Section(w("s_run"), _run_rows(w, run_seconds, work)),
    )


def _run_rows(
    w: ReportWords, run_seconds: float, work: tuple[float, int] | None
) -> tuple[tuple[str, str], ...]:
    """The time of the runs that did the period's work; a re-run that found nothing to do
    takes seconds and must not read as the export's time, so it is labelled apart."""
    if work is None:
        return ((w("run_time"), run_time(run_seconds)),)
    seconds, runs = work
    return (
        (w("work_time", runs=runs), run_time(seconds)),
        (w("this_run"), run_time(run_seconds)),
    )


def _days(period_from: str, period_to: str) -> list[str]:
    first, last = date.fromisoformat(period_from), date.fromisoformat(period_to)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def build_report_data(
    records: Iterable[CallRecord],
    *,
    period_from: date | str,
    period_to: date | str,
    forecast: Forecast | None,
    price_per_minute: float | Decimal,
    usd_rub_rate: float | Decimal,
    budget_usd: float | Decimal | None,
    run_seconds: float,
    checks: Sequence[CheckOutcome] = (),
    is_sandbox: bool = False,
    work: tuple[float, int] | None = None,
    model_warnings: Sequence[ModelNotice | str] = (),
    billing_unit: str = MINUTE,
    language: str = DEFAULT_LANGUAGE,
    tariffs: Tariffs | None = None,
) -> ReportData:
    """All figures of the report from the period's ledger rows. `budget_usd` None or <= 0
    means no budget (the settings' 0 default). `work`: the summed time and the number of
    the runs that did the period's work (`run_seconds` is this run's). `model_warnings`:
    configured models close to (or past) their shutdown date (a notice, worded in the report's
    language, or a line). `language`: "ru" or "en" (report/labels.py)."""
    w = report_words(language)
    period_from, period_to = str(period_from), str(period_to)  # ISO dates either way
    price = Decimal(str(price_per_minute))
    rate = Decimal(str(usd_rub_rate))
    budget = Decimal(str(budget_usd)) if budget_usd and budget_usd > 0 else None

    totals = _Totals(price, billing_unit, w, tariffs)
    for r in records:
        totals.add(r)
    counts, minutes, cost_usd = totals.counts, totals.billable_minutes, totals.cost_usd
    bitrix_sec, transcribed_sec = totals.bitrix24_seconds, totals.transcribed_seconds.value
    cost_rub = to_rub(cost_usd, rate)
    variance = totals.durations.value
    cover = totals.coverage.value
    delta = (
        float((cost_usd - forecast.cost_usd) / forecast.cost_usd)
        if forecast is not None and forecast.cost_usd > 0
        else None
    )
    warnings = [
        *_warnings(w, cost_usd, forecast, delta, budget),
        *totals.stt.warnings(w),
        *(m if isinstance(m, str) else w.model_notice(m) for m in model_warnings),
    ]
    tips = _recommendations(
        w,
        totals,
        variance,
        delta,
        budget is not None and cost_usd > budget,
        checks,
        totals.stt.recommendations(w),
    )
    with_audio = totals.coverage.with_audio
    sections = _sections(w, totals, forecast, delta, budget, price, rate, run_seconds, work)
    title = w(
        "title",
        period=period_from if period_from == period_to else f"{period_from} — {period_to}",
    )
    if is_sandbox:
        title = w("sandbox_title", title=title)
    return ReportData(
        words=w,
        title=title,
        is_sandbox=is_sandbox,
        period_from=period_from,
        period_to=period_to,
        calls_total=totals.calls,
        calls_with_audio=with_audio,
        transcribed=totals.transcribed,
        no_recording=counts[Status.NO_RECORDING],
        missing_audio=counts[Status.MISSING_AUDIO],
        errors=totals.errors,
        pending=totals.pending,
        status_counts=dict(sorted(counts.items())),
        coverage=cover,
        bitrix24_seconds=bitrix_sec,
        transcribed_seconds=transcribed_sec,
        billable_minutes=minutes,
        billed_seconds=totals.billed_seconds,
        billing_unit=billing_unit,
        duration_variance=variance,
        price_per_minute_usd=price,
        usd_rub_rate=rate,
        cost_usd=cost_usd,
        cost_rub=cost_rub,
        formula_cost_usd=minutes * price,
        forecast=forecast,
        forecast_delta=delta,
        budget_usd=budget,
        run_seconds=run_seconds,
        sections=sections,
        days=totals.breakdown("day", _days(period_from, period_to)),
        directions=totals.breakdown("direction", named=w.direction),
        statuses=totals.breakdown("status", named=w.status),
        employees=totals.who_rows("employee"),
        lines=totals.who_rows("line"),
        checks=tuple(
            CheckRow(w.check(c.name), w.state(c.state), w.check_summary(c)) for c in checks
        ),
        exceptions=tuple(row for _, row in totals.exceptions.items()),
        exceptions_total=totals.exceptions.total,
        warnings=tuple(warnings),
        recommendations=tuple(tips),
    )
