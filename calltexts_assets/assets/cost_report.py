"""cost_report: the period's summary for the operations team, Markdown and PDF."""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from calltexts_assets.assets.figures import record_day_figures, run_totals, tariffs
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, files_period, run_period
from calltexts_assets.assets.registry_csv import registry_csv
from calltexts_assets.billing.cost import forecast
from calltexts_assets.clients.model_lifecycle import configured_models
from calltexts_assets.files.storage_keys import report_key
from calltexts_assets.quality.checks import (
    cost_matches,
    coverage,
    duration_variance,
    stt_durations,
)
from calltexts_assets.quality.duplicates import duplicate_transcripts
from calltexts_assets.report.data import build_report_data, period_figures
from calltexts_assets.report.markdown import render_markdown
from calltexts_assets.resources.export_settings import ExportSettings, outputs_stamp
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.openai import WhisperResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.runlog.log import scrub_text
from calltexts_assets.settings import portal_today
from calltexts_assets.transcripts.step import stored_transcript_keys


def run_seconds(context: dg.AssetExecutionContext, run_id: str | None = None) -> float:
    """How long a run took (this one, so far, by default)."""
    record = context.instance.get_run_record_by_id(run_id or context.run.run_id)
    started = record.start_time if record and record.start_time else None
    if not started:
        return 0.0
    ended = record.end_time if record and record.end_time else datetime.now(UTC).timestamp()
    return ended - started


def work_time(context: dg.AssetExecutionContext, run_ids: set[str]) -> tuple[float, int]:
    """The summed time of the runs that last worked on the period's calls, and how many."""
    return sum(run_seconds(context, run_id) for run_id in run_ids), len(run_ids)


@dg.asset(
    deps=[registry_csv],
    **DAILY_SINGLE_RUN,
    group_name="reporting",
    kinds={"markdown", "pdf"},
    description="`exports/<from>_<to>/reports/summary_<from>_<to>.md` and .pdf: calls, minutes, "
    "cost in USD and RUB, forecast vs actual, variance, exceptions, recommendations.",
)
def cost_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
    whisper: WhisperResource,
) -> Iterator[dg.MaterializeResult]:
    period = run_period(context)
    # The report's period: the run's, or the wider one whose changed days alone it runs (#26)
    files = files_period(context)
    db = ledger.get()
    days = files.export_ids
    stamp = outputs_stamp(export_settings, db.period_stamp(days))
    # Every consumer gets its own pass over the ledger, read a day at a time, so memory does
    # not grow with the period (a 60-day period may have 20,000+ calls).
    price = export_settings.price_per_minute_usd
    prices = tariffs(export_settings)  # each row priced by the models it names
    plan = forecast(
        (r.duration_sec for r in db.iter_records(days) if r.has_recording),
        price_per_minute=price,
        usd_rub_rate=export_settings.usd_rub_rate,
        unit=export_settings.billing_unit,
    )
    store = storage.get()
    checks = [
        duration_variance(db.iter_records(days)),
        stt_durations(db.iter_records(days)),
        coverage(db.iter_records(days)),
        # The same evidence as the transcripts check: the ledger and the stored files.
        duplicate_transcripts(db.iter_records(days), stored_transcript_keys(store, files.days)),
        cost_matches(db.iter_records(days), tariffs=prices),
    ]
    data = build_report_data(
        db.iter_records(days),
        period_from=files.first.isoformat(),
        period_to=files.last.isoformat(),
        forecast=plan,
        price_per_minute=price,
        usd_rub_rate=export_settings.usd_rub_rate,
        budget_usd=export_settings.budget_usd,
        run_seconds=run_seconds(context),
        work=work_time(
            context, {r.dagster_run_id for r in db.iter_records(days) if r.dagster_run_id}
        ),
        checks=checks,
        is_sandbox=export_settings.is_sandbox,
        # the STT model's shutdown date (GET /v1/models), when it is 60 days away or less
        model_warnings=[
            n
            for n in configured_models(
                whisper.get_client(), {"WHISPER_MODEL": whisper.model}, portal_today()
            )
            if n.message
        ],
        billing_unit=export_settings.billing_unit,
        language=export_settings.language,
        tariffs=prices,
    )
    md_key = report_key(files.first, files.last, "md")
    pdf_key = report_key(files.first, files.last, "pdf")
    markdown = render_markdown(data)
    # Here, not at the top: fpdf (~1 s of import under load) only when a report is made;
    # a `calltexts run` that finds nothing changed imports the assets and makes none (#26).
    from calltexts_assets.report.pdf import render_pdf

    run_id = context.run.run_id
    db.record_deliverable(md_key, store.write_text(md_key, markdown).sha256, stamp, run_id)
    db.record_deliverable(
        pdf_key, store.write_bytes(pdf_key, render_pdf(data)).sha256, stamp, run_id
    )
    covered = next(c for c in checks if c.name == "coverage")
    coverage_failed = not covered.passed and covered.severity == "error"
    for day in period.export_ids:  # the last asset of the graph: the days are done
        db.finish_export(day, "failed" if coverage_failed else "success")
    rate = export_settings.usd_rub_rate
    record_day_figures(
        context,
        period,
        lambda day: period_figures(
            db.iter_records([day]), price_per_minute=price, usd_rub_rate=rate, tariffs=prices
        ),
    )
    totals = period_figures(
        db.iter_records(days), price_per_minute=price, usd_rub_rate=rate, tariffs=prices
    )
    yield dg.MaterializeResult(
        metadata={
            **run_totals(files, {**totals, "forecast_cost_usd": float(plan.cost_usd)}),
            # the report itself, readable on the asset's page (no phone number is in it;
            # scrubbed all the same, as every line that reaches the event log)
            "report": dg.MarkdownMetadataValue(scrub_text(markdown)),
            "warnings": dg.JsonMetadataValue(list(data.warnings)),
            "markdown": dg.PathMetadataValue(store.uri(md_key)),
            "pdf": dg.PathMetadataValue(store.uri(pdf_key)),
        }
    )
    # The report is written either way (it says what went wrong); a coverage below the
    # error floor fails the run, so its status and `calltexts run`'s exit code say so too.
    if coverage_failed:
        raise dg.Failure(
            description=f"coverage below the floor: {covered.summary}. The report "
            f"{store.uri(md_key)} lists the calls and why; re-run the period after the fix.",
            metadata={"coverage": dg.FloatMetadataValue(covered.value)},
        )
