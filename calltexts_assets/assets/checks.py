"""Quality gates as Dagster asset check results, computed by the pure code in quality/checks.py."""

from __future__ import annotations

import dagster as dg
import polars as pl

from calltexts_assets.clients.model_lifecycle import REFUSE, WARN, ListsModels, configured_models
from calltexts_assets.quality.checks import CheckOutcome
from calltexts_assets.settings import portal_today

_SEVERITY = {"error": dg.AssetCheckSeverity.ERROR, "warn": dg.AssetCheckSeverity.WARN}


def check_spec(name: str, asset: str, description: str, *, blocking: bool = False):
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)


def check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=outcome.name,
        passed=outcome.passed,
        severity=_SEVERITY[outcome.severity],
        metadata=outcome.metadata(),
        description=outcome.summary or None,
    )


def table_preview(frame: pl.DataFrame, rows: int = 10) -> dg.MarkdownMetadataValue:
    head = frame.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    for row in head.iter_rows():
        cells = ("" if v is None else str(v).replace("|", "\\|") for v in row)
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MarkdownMetadataValue("\n".join(lines))


def model_lifecycle(
    context: dg.AssetExecutionContext, service: ListsModels, setting: str, model: str
) -> dict[str, str]:
    """The configured model's shutdown date from `GET /v1/models`, before any request: a
    warning in the run's log from 60 days before it, a failure (one line naming the setting
    and the replacement) from that day on. Metadata of the asset says what was found."""
    found = configured_models(service, {setting: model}, portal_today())[0]
    if found.status == REFUSE:
        raise dg.Failure(description=found.message)
    if found.status == WARN:
        context.log.warning(found.message)
    return {
        "model": model,
        "model_shutdown_date": str(found.shutdown) if found.shutdown else found.status,
    }
