"""`calltexts run`: one Dagster run of the `calls_export` job over a range of days."""

from __future__ import annotations

from datetime import date

import dagster as dg

from calltexts_assets.assets.partitions import period_for_days, range_tags
from calltexts_assets.orchestration.run_summary import finish_run
from calltexts_assets.resources.ledger import ledger_for
from calltexts_assets.settings import load_settings


def export_run_config(summaries: bool) -> dict:
    config: dict = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if summaries:
        config["ops"] = {"summaries": {"config": {"generate_summary": True}}}
    return config


def run_export(period_from: date, period_to: date, *, summaries: bool = False) -> int:
    from calltexts_assets.definitions import build_definitions

    settings = load_settings()
    defs = build_definitions(settings)
    job = defs.resolve_job_def("calls_export")
    period = period_for_days(period_from, period_to)
    print(f"Exporting {period.label} ({len(period.days)} days) in one run...")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={**range_tags(period_from, period_to), "actor": "calltexts run"},
            run_config=export_run_config(summaries),
            raise_on_error=False,
        )
        # No daemon runs the sensors here: record the run for the metrics directly.
        # (The resources hold unresolved EnvVars outside a run: read the settings directly.)
        ledger = ledger_for(settings.ledger_url())
        finish_run(
            instance,
            result.run_id,
            ledger,
            succeeded=result.success,
            budget_usd=settings.budget_usd,
            pushgateway_url=settings.pushgateway(),
        )
    statuses = ledger.totals(period.export_ids).statuses
    print(f"Run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
    print("Calls by status: " + ", ".join(f"{k}={v}" for k, v in sorted(statuses.items())))
    recordings = ledger.stored_recordings(period.export_ids)
    if recordings:  # source/format: link/mp3 (CALL_RECORD_URL), drive/wav (Bitrix24 Drive)...
        print(
            "Recordings by source/format: " + ", ".join(f"{k}={v}" for k, v in recordings.items())
        )
    for evaluation in result.get_asset_check_evaluations():
        verdict = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        print(f"Check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}: {verdict}")
    print(f"Outputs: {settings.home / 'exports'} (registry and report under {period.label}/)")
    return 0 if result.success else 1
