"""The cost report as Markdown (templates/summary_report.md.j2)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from calltexts_assets.report.data import ReportData

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
TEMPLATE_NAME = "summary_report.md.j2"


def _md_cell(value: object) -> str:
    """A value that cannot break a Markdown table row."""
    text = " ".join(str(value).split())
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    # error messages may quote an HTML error page: show it, never let a renderer run it
    return text.replace("<", "&lt;").replace(">", "&gt;")


BAR_WIDTH = 20


def bar(value: int, peak: int, width: int = BAR_WIDTH) -> str:
    """`value` as a bar of full blocks, `width` long at `peak`; a non-zero value shows."""
    if peak <= 0 or value <= 0:
        return ""
    return "█" * max(1, round(width * value / peak))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML; table cells go through the `cell` filter
    )
    env.filters["cell"] = _md_cell
    env.filters["bar"] = bar
    return env


def render_markdown(data: ReportData) -> str:
    # `t`: the report's words in its language (report/labels.py), the only labels it adds
    return _environment().get_template(TEMPLATE_NAME).render(data=data, t=data.words)
