"""What one Dagster run of the export did, read back from its own events, for the metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from calltexts_assets.assets.partitions import days_of_run_tags
from calltexts_assets.state.ledger import Ledger
from calltexts_assets.state.run_metrics import RUN_FAILURE, RUN_SUCCESS, RunSummary, record_run


def run_totals_by_asset(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """Each asset's `run_totals` (every partition of a range run carries the same one)."""
    found: dict[str, dict[str, Any]] = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        totals = materialization.metadata.get("run_totals") if materialization else None
        if materialization is not None and totals is not None:
            found.setdefault(materialization.asset_key.to_user_string(), dict(totals.value))
    return found


def summarise_run(
    instance: dg.DagsterInstance,
    run_id: str,
    *,
    succeeded: bool,
    budget_usd: float = 0.0,
    totals: dict[str, dict] | None = None,
) -> RunSummary:
    """`totals`: the run's `run_totals_by_asset` when the caller has read them already (they
    take one read of every materialization of the run: seconds for a long period)."""
    run = instance.get_run_by_id(run_id)
    record = instance.get_run_record_by_id(run_id)
    days = days_of_run_tags(dict(run.tags)) if run else []
    start = record.start_time if record and record.start_time else None
    end = record.end_time if record and record.end_time else datetime.now(UTC).timestamp()
    meta = run_totals_by_asset(instance, run_id) if totals is None else totals
    listing = meta.get("call_list", {})
    stt = meta.get("transcripts", {})
    summaries = meta.get("summaries", {})
    return RunSummary(
        run_id=run_id,
        status=RUN_SUCCESS if succeeded else RUN_FAILURE,
        duration_sec=max(end - start, 0.0) if start else 0.0,
        period_from=days[0] if days else "",
        period_to=days[-1] if days else "",
        transcripts_ok=int(stt.get("transcribed_now", 0)),
        transcripts_error=int(stt.get("failed_now", 0)),
        transcripts_skipped=int(stt.get("skipped_already_done", 0)),
        transcription_minutes=float(stt.get("audio_minutes_now", 0.0)),
        cost_usd=float(stt.get("cost_usd_now", 0.0)),
        retries={
            "bitrix24": int(listing.get("bitrix24_retries", 0)),
            "whisper": int(stt.get("whisper_retries", 0)),
            "summariser": int(summaries.get("summariser_retries", 0)),
        },
        rate_limited=int(listing.get("bitrix24_limit_hits", 0)),
        budget_usd=budget_usd,
        finished_at=datetime.fromtimestamp(end, UTC),
    )


def finish_run(
    instance: dg.DagsterInstance,
    run_id: str,
    ledger: Ledger,
    *,
    succeeded: bool,
    budget_usd: float = 0.0,
    pushgateway_url: str = "",
    totals: dict[str, dict] | None = None,
) -> RunSummary:
    """Close the run's days in the ledger and record the run for the metrics (idempotent:
    the sensors and `calltexts run` may both do it)."""
    summary = summarise_run(
        instance, run_id, succeeded=succeeded, budget_usd=budget_usd, totals=totals
    )
    run = instance.get_run_by_id(run_id)
    for day in days_of_run_tags(dict(run.tags)) if run else []:
        export = ledger.export(day)
        if export and export["dagster_run_id"] == run_id:
            ledger.finish_export(day, "success" if succeeded else "failed")
    record_run(summary, engine=ledger.engine, pushgateway_url=pushgateway_url)
    return summary
