"""summaries: an optional short summary and tags per transcribed call.

Computed by the registry's step (registry_csv.py), just before the registry that lists the
summaries' paths. Off (EXPORT_SUMMARY_ENABLED false and no run config generate_summary), the
asset is not materialized at all, so the UI shows that no summary exists, while the registry
and the report downstream still run.
"""

from collections.abc import Mapping
from functools import partial
from typing import Any

import dagster as dg

from calltexts_assets.assets.audio_and_transcripts import transcripts
from calltexts_assets.assets.call_list import require_listed
from calltexts_assets.assets.call_steps import call_steps, stopping_the_step
from calltexts_assets.assets.checks import model_lifecycle
from calltexts_assets.assets.figures import record_day_figures, run_totals
from calltexts_assets.assets.partitions import RunPeriod
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import SummariserResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.summaries.step import ADOPTED, REMADE, needs_summary, summarise_record

OFF_REASON = "summaries off: EXPORT_SUMMARY_ENABLED is false and the run did not ask for them"


class SummariesConfig(dg.Config):
    generate_summary: bool | None = None  # None: EXPORT_SUMMARY_ENABLED decides


summaries = dg.AssetSpec(
    "summaries",
    deps=[transcripts],
    # Not materialized when off: its step still yields the registry (no downstream skip).
    skippable=True,
    group_name="calls",
    kinds={"openai", "storage"},
    description="`exports/<month>/summary/call_<id>.md`, only when EXPORT_SUMMARY_ENABLED or run "
    "config generate_summary (else not materialized); none for calls in an error status.",
)


def summaries_enabled(config: SummariesConfig, export_settings: ExportSettings) -> bool:
    if config.generate_summary is None:
        return export_settings.summaries_enabled
    return config.generate_summary


def summarise_period(
    context: dg.AssetExecutionContext,
    period: RunPeriod,
    summariser: SummariserResource,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> dict[str, Any]:
    """Write the period's missing summaries; the materialization's metadata."""
    db = ledger.get()
    require_listed(db, period)
    store = storage.get()
    # Calls without a summary, and those whose summary went missing or changed since written.
    needed = partial(needs_summary, storage=store, verify=export_settings.verify_checksums)
    todo = (r for r in db.iter_records(period.export_ids) if needed(r))
    steps = call_steps(
        context,
        db,
        stage="summaries",
        failure_status=None,
        log_dir=export_settings.log_dir,
        needed=needed,
    )
    chat = summariser.get_client()
    lifecycle = model_lifecycle(context, chat, "SUMMARY_MODEL", chat.model)
    with stopping_the_step():
        tally = steps.run(
            todo,
            partial(summarise_record, chat=chat, storage=store),
            max_workers=export_settings.max_concurrency,
        )

    def figures_of(outcomes: Mapping[str, int]) -> dict[str, int | float]:
        return {
            "summarised_now": outcomes.get("summarised", 0),
            "failed_now": outcomes.get("failed", 0),
            # from the model's stored answers, no request
            "summaries_remade": outcomes.get(REMADE, 0),
            "summaries_adopted": outcomes.get(ADOPTED, 0),
        }

    record_day_figures(
        context, period, lambda day: figures_of(steps.by_day[day]), asset_key=summaries.key
    )
    totals = {**figures_of(tally.outcomes), "summariser_retries": chat.stats.retries, **lifecycle}
    return {**run_totals(period, totals), "enabled": True}
