"""`calltexts run`: one Dagster run of the `calls_export` job over a range of days, with its
progress on the terminal and, at the end, what it did and where the files are."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import date, datetime
from functools import partial
from typing import Any, TextIO

import dagster as dg

from calltexts_assets.assets.figures import minutes, usd
from calltexts_assets.assets.partitions import RunPeriod, files_tags, period_for_days, range_tags
from calltexts_assets.files.storage_keys import deliverable_keys
from calltexts_assets.ops.export_plan import ExportPlan, plan_with_portal
from calltexts_assets.orchestration.dead_runs import describe as describe_reaped
from calltexts_assets.orchestration.dead_runs import process_tags, reap_dead_runs
from calltexts_assets.orchestration.run_summary import finish_run, run_totals_by_asset
from calltexts_assets.resources.ledger import ledger_for
from calltexts_assets.runlog.log import log_file_name, scrub_text
from calltexts_assets.settings import Settings, load_settings
from calltexts_assets.state.ledger import Ledger, Status
from calltexts_assets.state.progress import (
    PROGRESS_RECORD,
    ProgressWatch,
    bar,
    describe,
    snapshot,
)


def export_run_config(summaries: bool) -> dict:
    config: dict = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if summaries:
        config["ops"] = {"summaries": {"config": {"generate_summary": True}}}
    return config


# The figures are the period's (every run's work), not this run's: a re-run that has
# nothing to do must not read as new spend (nor does it show them: `only_changes`).
PERIOD_LABEL = "Period (all runs): "


def _progress(read: Any, out: TextIO) -> ProgressWatch:
    """A bar redrawn in place on a terminal; a plain line every 10 % elsewhere (CI, cron)."""
    if out.isatty():
        return ProgressWatch(
            read, lambda line: print(f"\r{PERIOD_LABEL}{line}", end="", file=out, flush=True),
            live=True, interval=1.0, render=bar, only_changes=True,
        )  # fmt: skip
    return ProgressWatch(
        read,
        lambda line: print(f"{PERIOD_LABEL}{line}", file=out, flush=True),
        every_pct=10,
        interval=5.0,
        only_changes=True,
    )


_LEFTOVERS = {
    "leftover_spool_files_removed": "spool files",
    "leftover_piece_folders_removed": "piece folders",
    "leftover_partial_writes_removed": "partial writes",
}


def _console_without_progress(init_context: dg.InitLoggerContext) -> logging.Logger:
    """Dagster's console logger without the assets' progress lines: the terminal has its own,
    and the lines stay in the run's event log for the UI."""
    console = dg.colored_console_logger.logger_fn(init_context)
    console.addFilter(lambda record: not getattr(record, PROGRESS_RECORD, False))
    return console


CONSOLE = dg.LoggerDefinition(
    _console_without_progress,
    config_schema=dg.colored_console_logger.config_schema,
    description="Dagster's console logger without the progress lines `calltexts run` draws itself.",
)


def summary_lines(
    run_id: str,
    succeeded: bool,
    period: RunPeriod,
    totals: Mapping[str, Mapping[str, Any]],
    paths: Mapping[str, str],
) -> list[str]:
    """What the run did (new work, what was already done, its cost) and where its files are."""
    listed = totals.get("call_list", {})
    header = (
        f"Run {run_id}: {'succeeded' if succeeded else 'FAILED'} | {period.label}: "
        f"{listed.get('calls', 0)} calls listed"
    )
    return [header, *work_lines(totals), *(f"{name}: {path}" for name, path in paths.items())]


def work_lines(totals: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """New work, work already done or re-made for free, and the period's cost."""
    audio, texts = totals.get("raw_audio", {}), totals.get("transcripts", {})
    lines: list[str] = []
    new = {
        "downloaded": audio.get("downloaded", 0),
        "transcribed": texts.get("transcribed_now", 0),
        "failed": audio.get("failed", 0) + texts.get("failed_now", 0),
    }
    summaries = totals.get("summaries", {})
    free = {
        "remade": (texts.get("transcripts_remade", 0), summaries.get("summaries_remade", 0)),
        "adopted": (
            audio.get("recordings_adopted", 0),
            texts.get("answers_adopted", 0),
            summaries.get("summaries_adopted", 0),
        ),
    }
    if not any(new.values()) and not any(map(any, free.values())):
        lines.append(
            "Nothing new: every call of the period was already done (0 downloads, 0 "
            f"transcriptions); {texts.get('transcribed_total', 0)} transcripts stand."
        )
    else:
        lines.append(
            f"New: {new['downloaded']} recordings downloaded, {new['transcribed']} calls "
            f"transcribed ({texts.get('audio_minutes_now', 0)} audio min, "
            f"${texts.get('cost_usd_now', 0):.4f}), {new['failed']} failed; skipped as already "
            f"done: {audio.get('skipped_already_stored', 0)} recordings, "
            f"{texts.get('skipped_already_done', 0)} transcripts."
        )
    if any(free["remade"]):
        lines.append(
            "Re-made from the stored answers at no cost (missing or changed since written): "
            f"{free['remade'][0]} transcripts, {free['remade'][1]} summaries."
        )
    if any(free["adopted"]):
        recordings, answers, summarised = free["adopted"]
        lines.append(
            "Adopted from storage, nothing paid (the ledger had no record of them): "
            f"{recordings} recordings, {answers} STT answers, {summarised} summaries."
        )
    leftovers = [
        f"{number} {what}"
        for name, what in _LEFTOVERS.items()
        if (number := audio.get(name, texts.get(name, 0)))
    ]
    if leftovers:
        lines.append(f"Leftovers of runs that are over, removed: {', '.join(leftovers)}.")
    lines.append(
        f"Period cost: ${texts.get('cost_usd_total', 0):.4f} for "
        f"{texts.get('audio_minutes_total', 0)} audio min of {texts.get('transcribed_total', 0)} "
        "transcribed calls."
    )
    return lines


_LABELS = {
    "registry": "Registry",
    "registry_xlsx": "Registry (xlsx)",
    "report_md": "Report",
    "report_pdf": "Report (PDF)",
}


def _paths(
    settings: Settings, period: RunPeriod, storage: Any, run_created: datetime | None
) -> dict[str, str]:
    keys = deliverable_keys(period.first, period.last)
    found = {_LABELS[name]: storage.uri(key) for name, key in keys.items() if storage.exists(key)}
    if run_created is not None:
        found["Run log"] = str(settings.log_dir / log_file_name(run_created))
    return found


def _period_totals(
    totals: Mapping[str, Mapping[str, Any]], ledger: Ledger, period: RunPeriod, listed: int | None
) -> dict[str, dict[str, Any]]:
    """The run's totals with the period's figures from the ledger: a run of only the changed
    days (or none) must still say what the whole period holds and costs."""
    held = ledger.totals(period.export_ids)
    shown = {name: dict(values) for name, values in totals.items()}
    shown.setdefault("transcripts", {}).update(
        transcribed_total=held.count(Status.TRANSCRIBED),
        audio_minutes_total=minutes(held.transcribed_seconds),
        cost_usd_total=usd(held.transcribed_cost),
    )
    if listed is not None:
        shown.setdefault("call_list", {})["calls"] = listed
    return shown


def _plan(
    defs: dg.Definitions,
    period: RunPeriod,
    ledger: Ledger,
    storage: Any,
    instance: dg.DagsterInstance,
    summaries: bool,
    out: TextIO,
) -> ExportPlan | None:
    """What changed since the last export (ops.export_plan); None when it cannot be told (the
    portal refused the listing, say): then the whole period runs, and its run says why."""
    try:
        return plan_with_portal(period, defs, ledger, storage, instance, summaries=summaries)
    except Exception as exc:
        said = scrub_text(str(exc)).splitlines()[0][:300] if str(exc) else type(exc).__name__
        print(f"Could not tell what changed ({said}): running the whole period.", file=out)
        return None


def _print_files(ledger: Ledger, period: RunPeriod, paths: Mapping[str, str], out: TextIO) -> None:
    recordings = ledger.stored_recordings(period.export_ids)
    for name, path in paths.items():
        print(f"{name}: {path}", file=out)
    if recordings:
        listed = ", ".join(f"{k}={v}" for k, v in recordings.items())
        print(f"Recordings by source/format: {listed}", file=out)


def run_export(
    period_from: date, period_to: date, *, summaries: bool = False, out: TextIO = sys.stdout
) -> int:
    from calltexts_assets.definitions import build_definitions

    settings = load_settings()
    defs = build_definitions(settings)
    job = defs.resolve_job_def("calls_export").with_logger_defs({"console": CONSOLE})
    period = period_for_days(period_from, period_to)
    # (The resources hold unresolved EnvVars outside a run: the ledger from the settings.)
    ledger = ledger_for(settings.ledger_url())
    storage = defs.resources["storage"].get()  # type: ignore[index,union-attr]
    wanted = summaries or settings.summaries_enabled
    print(f"Exporting {period.label} ({len(period.days)} days) in one run...", file=out)
    with dg.DagsterInstance.get() as instance:
        reaped = reap_dead_runs(instance)
        if reaped:
            print(describe_reaped(reaped), file=out, flush=True)  # before it may be killed
        plan = _plan(defs, period, ledger, storage, instance, wanted, out)
        if plan is not None and plan.nothing_to_do:
            print(
                f"No run launched: nothing changed since the last export of {period.label} "
                f"({plan.calls} calls listed; the listing, every call's files, the registry, "
                "the report and Dagster's materializations checked).",
                file=out,
            )
            for line in work_lines(_period_totals({}, ledger, period, plan.calls)):
                print(line, file=out)  # "Nothing new", the period's cost
            _print_files(ledger, period, _paths(settings, period, storage, None), out)
            return 0
        first, last = plan.run_days if plan is not None else (period_from, period_to)
        tags = range_tags(first, last)
        if plan is not None:
            print(f"Changed since the last export: {plan.describe()}", file=out, flush=True)
            if (first, last) != (period.first, period.last):
                tags |= files_tags(period)  # the whole period's registry, report, sample
        read = partial(snapshot, ledger, period.export_ids)
        before = read()
        with _progress(read, out):
            result = job.execute_in_process(
                instance=instance,
                tags={**tags, "actor": "calltexts run", **process_tags()},
                run_config=export_run_config(summaries),
                raise_on_error=False,
                asset_selection=plan.asset_selection if plan is not None else None,
            )
        if out.isatty():
            print(file=out)
        # Read once: the summary below and the metrics' record use the same totals.
        totals = run_totals_by_asset(instance, result.run_id)
        # No daemon runs the sensors here: record the run for the metrics directly.
        finish_run(
            instance,
            result.run_id,
            ledger,
            succeeded=result.success,
            budget_usd=settings.budget_usd,
            pushgateway_url=settings.pushgateway(),
            totals=totals,
        )
        record = instance.get_run_record_by_id(result.run_id)
    created = record.create_timestamp if record else None
    shown = _period_totals(totals, ledger, period, plan.calls if plan is not None else None)
    paths = _paths(settings, period, storage, created)
    for line in summary_lines(result.run_id, result.success, period, shown, paths):
        print(line, file=out)
    after = read()
    if after != before:  # a run that changed nothing has no progress to show
        final = describe(after, None).rsplit(" | ETA", 1)[0]
        print(f"{PERIOD_LABEL}{final}", file=out)
    _print_files(ledger, period, {}, out)
    for evaluation in result.get_asset_check_evaluations():
        verdict = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        print(f"Check {name}: {verdict}", file=out)
    return 0 if result.success else 1
