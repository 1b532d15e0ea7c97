"""`CallSteps` inside a Dagster step: the run's id, its log and its run log file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

from calltexts_assets.runlog.log import RunLog
from calltexts_assets.state.ledger import CallRecord, Ledger
from calltexts_assets.state.steps import CallSteps, RunStopped, StepOutcome

StepContext = dg.AssetExecutionContext | dg.OpExecutionContext
UNFINISHED_STATUSES = list(NOT_FINISHED_STATUSES)


def open_for_dagster_run(directory: str | Path, context: StepContext) -> RunLog:
    """The run log of the Dagster run of `context`: named after the run's creation time, so
    every step of the run appends to the same file."""
    run_id = context.run.run_id
    record = context.instance.get_run_record_by_id(run_id)
    return RunLog(directory, run_id, started_at=record.create_timestamp if record else None)


def release_claims_of_finished_runs(instance: dg.DagsterInstance, ledger: Ledger) -> int:
    """Claims of runs that are over (a run killed mid-stage keeps its claims until the
    reaper marks it failed): the calls are free for this run at once."""
    holders = ledger.claimants()
    if not holders:
        return 0
    live = {
        record.dagster_run.run_id
        for record in instance.get_run_records(
            dg.RunsFilter(run_ids=list(holders), statuses=UNFINISHED_STATUSES)
        )
    }
    return ledger.release_claims_of(holders - live)


def call_steps(
    context: StepContext,
    ledger: Ledger,
    *,
    stage: str,
    failure_status: str | None,
    log_dir: str | Path,
    needed: Callable[[CallRecord], bool],
    settled: Callable[[CallRecord], StepOutcome | None] = lambda record: None,
    summed: tuple[str, ...] = (),
) -> CallSteps:
    released = release_claims_of_finished_runs(context.instance, ledger)
    if released:
        context.log.info(f"{stage}: {released} calls claimed by runs that are over were freed")
    return CallSteps(
        ledger,
        stage=stage,
        failure_status=failure_status,
        run_id=context.run.run_id,
        open_run_log=lambda: open_for_dagster_run(log_dir, context),
        warn=context.log.warning,
        needed=needed,
        settled=settled,
        summed=summed,
    )


@contextmanager
def stopping_the_step() -> Iterator[None]:
    """A stage stopped by a run-wide error fails the step with its message."""
    try:
        yield
    except RunStopped as exc:
        raise dg.Failure(
            description=str(exc), metadata={"calls_done_before_stop": exc.calls_done}
        ) from exc.cause
