"""Every finished run is recorded for metrics and alerting, failed ones included; runs whose
process died are cleaned up."""

import dagster as dg

from calltexts_assets.orchestration.dead_runs import describe, reap_dead_runs
from calltexts_assets.orchestration.run_summary import finish_run
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.settings import load_settings


def _record(
    context: dg.RunStatusSensorContext,
    ledger: LedgerResource,
    settings: ExportSettings,
    *,
    succeeded: bool,
) -> None:
    run_id = context.dagster_run.run_id
    summary = finish_run(
        context.instance,
        run_id,
        ledger.get(),
        succeeded=succeeded,
        budget_usd=settings.budget_usd,
        pushgateway_url=load_settings().pushgateway(),
    )
    context.log.info(f"recorded run {run_id} as {summary.status}")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="record_export_success",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def record_export_success(
    context: dg.RunStatusSensorContext, ledger: LedgerResource, export_settings: ExportSettings
) -> None:
    _record(context, ledger, export_settings, succeeded=True)


@dg.run_failure_sensor(
    name="record_export_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records a failed run (metrics: call_export_runs_total{status='failure'}, "
    "call_export_last_run_failed) so the run-error alert fires.",
)
def record_export_failure(
    context: dg.RunFailureSensorContext, ledger: LedgerResource, export_settings: ExportSettings
) -> None:
    _record(context, ledger, export_settings, succeeded=False)


@dg.sensor(
    name="reap_dead_runs",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks `calltexts run` runs of this host whose process died (kill -9, OOM) as "
    "failed and frees the pool slots they held, so that later runs do not wait forever.",
)
def reap_dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    reaped = reap_dead_runs(context.instance)
    if reaped:
        context.log.warning(describe(reaped))
    return dg.SkipReason(f"{len(reaped)} dead runs cleaned up")
