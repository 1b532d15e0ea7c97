"""summaries: an optional short summary and tags per transcribed call."""

from collections.abc import Mapping
from functools import partial

import dagster as dg

from calltexts_assets.assets.audio_and_transcripts import transcripts
from calltexts_assets.assets.call_list import require_listed
from calltexts_assets.assets.call_steps import call_steps, stopping_the_step
from calltexts_assets.assets.checks import model_lifecycle
from calltexts_assets.assets.figures import record_day_figures, run_totals
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, run_period
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import SummariserResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.summaries.step import ADOPTED, REMADE, needs_summary, summarise_record


class SummariesConfig(dg.Config):
    generate_summary: bool | None = None  # None: EXPORT_SUMMARY_ENABLED decides


@dg.asset(
    deps=[transcripts],
    **DAILY_SINGLE_RUN,
    group_name="calls",
    kinds={"openai", "storage"},
    description="`exports/<month>/summary/call_<id>.md`, only when EXPORT_SUMMARY_ENABLED or run "
    "config generate_summary; none for calls in an error status.",
)
def summaries(
    context: dg.AssetExecutionContext,
    config: SummariesConfig,
    summariser: SummariserResource,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> dg.MaterializeResult:
    period = run_period(context)
    enabled = (
        export_settings.summaries_enabled
        if config.generate_summary is None
        else config.generate_summary
    )
    if not enabled:
        record_day_figures(context, period, lambda day: {"summarised_now": 0, "failed_now": 0})
        return dg.MaterializeResult(metadata={**run_totals(period, {}), "enabled": False})
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

    record_day_figures(context, period, lambda day: figures_of(steps.by_day[day]))
    totals = {**figures_of(tally.outcomes), "summariser_retries": chat.stats.retries, **lifecycle}
    return dg.MaterializeResult(metadata={**run_totals(period, totals), "enabled": True})
