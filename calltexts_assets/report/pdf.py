"""The cost report as an A4 PDF with extractable text (Noto Sans: Latin and Cyrillic)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

from calltexts_assets.report.data import Breakdown, ReportData, WhoRow
from calltexts_assets.report.labels import ReportWords

_FONT = "NotoSans"
_GREY = (230, 230, 230)


def default_font_path() -> Path:
    """Noto Sans (Latin, Cyrillic) from the `fontpkg-noto-sans` wheel."""
    try:
        import fontpkg
    except ImportError as exc:  # pragma: no cover - a packaging error, not a runtime state
        raise RuntimeError("PDF reports need the 'fontpkg-noto-sans' package") from exc
    return fontpkg.path("Noto Sans")


class _Pdf(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_FONT, size=8)
        self.cell(0, 6, f"{self.page_no()}", align="C")


def _heading(pdf: FPDF, text: str, size: float = 13) -> None:
    if pdf.will_page_break(30):  # keep a heading with the first rows under it
        pdf.add_page()
    pdf.ln(3)
    pdf.set_font(_FONT, size=size)
    pdf.multi_cell(0, size * 0.5, text, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    pdf.set_font(_FONT, size=10)


def _table(
    pdf: FPDF,
    header: Sequence[str] | None,
    rows: Iterable[Sequence[str]],
    widths: Sequence[float],
) -> None:
    heading = FontFace(fill_color=_GREY)  # no bold: only the regular face is embedded
    with pdf.table(
        col_widths=widths,
        first_row_as_headings=header is not None,
        headings_style=heading,
        line_height=5.5,
        text_align="LEFT",
    ) as table:
        for values in [header, *rows] if header is not None else rows:
            row = table.row()
            for value in values:
                row.cell(str(value))


_BAR = (66, 110, 180)
_CHART_HEIGHT = 32.0  # mm


_Y_AXIS = 14.0  # mm left of the bars for the y-axis' figures
_X_LABELS = 8  # at most this many dates under the x-axis


def _day_chart(pdf: FPDF, data: ReportData, title: str, values: Sequence[int]) -> None:
    """Vertical bars, one per day of the period, scaled to the busiest day; the y-axis
    shows 0, half and the peak, the x-axis every n-th date (at most _X_LABELS)."""
    peak = max(values, default=0)
    _heading(pdf, f"{title} ({data.words('peak', peak=peak)})", size=11)
    if pdf.will_page_break(_CHART_HEIGHT + 14):
        pdf.add_page()
    left, top = pdf.l_margin + _Y_AXIS, pdf.get_y()
    width = pdf.w - left - pdf.r_margin
    step = width / max(len(values), 1)
    bottom = top + _CHART_HEIGHT
    pdf.set_draw_color(160, 160, 160)
    pdf.line(left, bottom, left + width, bottom)
    pdf.line(left, top, left, bottom)
    pdf.set_font(_FONT, size=7)
    for fraction in (0.0, 0.5, 1.0):
        y = bottom - _CHART_HEIGHT * fraction
        pdf.line(left - 1, y, left, y)
        label = f"{peak * fraction:g}" if peak else "0"
        pdf.set_xy(pdf.l_margin, y - 2)
        pdf.cell(_Y_AXIS - 2, 4, label, align="R")
    pdf.set_fill_color(*_BAR)
    for index, value in enumerate(values):
        if peak and value:
            height = _CHART_HEIGHT * value / peak
            x = left + index * step + step * 0.15
            pdf.rect(x, bottom - height, step * 0.7, height, style="F")
    pdf.set_fill_color(255, 255, 255)  # tables after the chart fill with the current colour
    every = max(1, -(-len(data.days) // _X_LABELS))  # ceil: at most _X_LABELS dates
    for index in range(0, len(data.days), every):
        x = left + index * step + step / 2
        pdf.line(x, bottom, x, bottom + 1)
        pdf.set_xy(x - 10, bottom + 1)
        pdf.cell(20, 4, data.days[index].label[5:], align="C")  # MM-DD
    pdf.set_xy(pdf.l_margin, bottom + 5)
    pdf.set_font(_FONT, size=10)


def _breakdown(
    pdf: FPDF, w: ReportWords, title: str, first: str, rows: Sequence[Breakdown]
) -> None:
    _heading(pdf, title)
    header = (first, w("calls"), w("transcribed"), w("billable_minutes"), w("cost_usd"))
    body = [(r.label, str(r.calls), str(r.transcribed), str(r.minutes), r.cost) for r in rows]
    _table(pdf, header, body or [("—", "0", "0", "0", "0.0000")], (50, 30, 35, 35, 30))


def _who(pdf: FPDF, w: ReportWords, title: str, first: str, rows: Sequence[WhoRow]) -> None:
    _heading(pdf, title)
    header = (
        first,
        w("calls"),
        w("talk_minutes"),
        w("cost_usd"),
        w("not_connected"),
        w("without_recording"),
    )
    body = [
        (r.label, str(r.calls), r.minutes, r.cost, str(r.not_connected), str(r.without_recording))
        for r in rows
    ]
    _table(pdf, header, body or [("—", "0", "0.0", "0.0000", "0", "0")], (55, 22, 27, 27, 25, 24))


def render_pdf(data: ReportData, *, font_path: Path | str | None = None) -> bytes:
    """A4 PDF of the report; the text (totals included) is extractable."""
    w = data.words
    pdf = _Pdf(format="A4")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=15)
    # The default instance of the variable font is Regular; instancing other weights with
    # fontTools costs seconds per weight, so the report uses size, not bold, for emphasis.
    pdf.add_font(_FONT, fname=str(font_path or default_font_path()))
    pdf.set_title(data.title)
    pdf.add_page()
    pdf.set_font(_FONT, size=16)
    if data.is_sandbox:
        pdf.set_text_color(180, 0, 0)
    pdf.multi_cell(0, 8, data.title, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font(_FONT, size=10)
    if data.is_sandbox:
        pdf.multi_cell(0, 5, w("sandbox_note"), align="L", new_x="LMARGIN", new_y="NEXT")
    period = f"{w('period')}: {data.period_label}"
    pdf.multi_cell(0, 5, period, align="L", new_x="LMARGIN", new_y="NEXT")

    for section in data.sections:
        _heading(pdf, section.title)
        _table(pdf, None, section.rows, (110, 70))
    _heading(pdf, w("by_day"))
    _day_chart(pdf, data, w("calls_per_day"), [d.calls for d in data.days])
    _day_chart(pdf, data, w("minutes_per_day"), [d.minutes for d in data.days])
    days = [(d.label, str(d.calls), str(d.transcribed), str(d.minutes), d.cost) for d in data.days]
    header = (w("day"), w("calls"), w("transcribed"), w("billable_minutes"), w("cost_usd"))
    _table(pdf, header, days, (50, 30, 35, 35, 30))
    _breakdown(pdf, w, w("by_direction"), w("direction"), data.directions)
    _breakdown(pdf, w, w("by_status"), w("status"), data.statuses)
    _who(pdf, w, w("by_employee"), w("employee"), data.employees)
    _who(pdf, w, w("by_line"), w("line"), data.lines)
    if data.warnings:
        _heading(pdf, w("warnings"))
        for warning in data.warnings:
            pdf.multi_cell(0, 5, f"! {warning}", align="L", new_x="LMARGIN", new_y="NEXT")
    _heading(pdf, w("checks"))
    if data.checks:
        rows = [(c.name, c.state, c.summary) for c in data.checks]
        _table(pdf, (w("check"), w("outcome"), w("details")), rows, (40, 25, 115))
    else:
        pdf.multi_cell(0, 5, w("no_checks"), align="L", new_x="LMARGIN", new_y="NEXT")
    _heading(pdf, w("exceptions", total=data.exceptions_total))
    if data.exceptions:
        rows = [
            (e.call_id, e.started_at, e.status, e.error_code, e.message) for e in data.exceptions
        ]
        header = (w("call"), w("started"), w("status"), w("error_code"), w("message"))
        _table(pdf, header, rows, (36, 30, 36, 24, 54))
        if data.exceptions_total > len(data.exceptions):
            more = data.exceptions_total - len(data.exceptions)
            pdf.multi_cell(0, 5, w("more_exceptions", more=more), new_x="LMARGIN", new_y="NEXT")
    else:
        pdf.multi_cell(0, 5, w("no_exceptions"), align="L", new_x="LMARGIN", new_y="NEXT")
    _heading(pdf, w("recommendations"))
    for tip in data.recommendations:
        pdf.multi_cell(0, 5, f"- {tip}", align="L", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
