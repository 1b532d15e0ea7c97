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

from calltexts_assets.assets.partitions import RunPeriod, period_for_days, range_tags
from calltexts_assets.files.storage_keys import deliverable_keys
from calltexts_assets.orchestration.dead_runs import describe as describe_reaped
from calltexts_assets.orchestration.dead_runs import process_tags, reap_dead_runs
from calltexts_assets.orchestration.run_summary import finish_run, run_totals_by_asset
from calltexts_assets.resources.ledger import ledger_for
from calltexts_assets.runlog.log import log_file_name
from calltexts_assets.settings import Settings, load_settings
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
    audio, texts = totals.get("raw_audio", {}), totals.get("transcripts", {})
    listed = totals.get("call_list", {})
    new = {
        "downloaded": audio.get("downloaded", 0),
        "transcribed": texts.get("transcribed_now", 0),
        "failed": audio.get("failed", 0) + texts.get("failed_now", 0),
    }
    lines = [
        f"Run {run_id}: {'succeeded' if succeeded else 'FAILED'} | {period.label}: "
        f"{listed.get('calls', 0)} calls listed"
    ]
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
    lines += [f"{name}: {path}" for name, path in paths.items()]
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
    print(f"Exporting {period.label} ({len(period.days)} days) in one run...", file=out)
    with dg.DagsterInstance.get() as instance:
        reaped = reap_dead_runs(instance)
        if reaped:
            print(describe_reaped(reaped), file=out, flush=True)  # before it may be killed
        read = partial(snapshot, ledger, period.export_ids)
        before = read()
        with _progress(read, out):
            result = job.execute_in_process(
                instance=instance,
                tags={
                    **range_tags(period_from, period_to),
                    "actor": "calltexts run",
                    **process_tags(),
                },
                run_config=export_run_config(summaries),
                raise_on_error=False,
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
    storage = defs.resources["storage"].get()  # type: ignore[index,union-attr]
    created = record.create_timestamp if record else None
    for line in summary_lines(
        result.run_id, result.success, period, totals, _paths(settings, period, storage, created)
    ):
        print(line, file=out)
    after = read()
    if after != before:  # a run that changed nothing has no progress to show
        final = describe(after, None).rsplit(" | ETA", 1)[0]
        print(f"{PERIOD_LABEL}{final}", file=out)
    recordings = ledger.stored_recordings(period.export_ids)
    if recordings:  # source/format: link/mp3 (CALL_RECORD_URL), drive/wav (Bitrix24 Drive)...
        listed = ", ".join(f"{k}={v}" for k, v in recordings.items())
        print(f"Recordings by source/format: {listed}", file=out)
    for evaluation in result.get_asset_check_evaluations():
        verdict = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        print(f"Check {name}: {verdict}", file=out)
    return 0 if result.success else 1
