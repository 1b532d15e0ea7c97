"""What a `calltexts run` of a period has to do, found before any Dagster run (#26).

A re-run of a period that is done needs no Dagster run at all: one that materializes every
asset of 60 days writes ~400 events for nothing (most of a no-op's time). The plan asks
Bitrix24 for the period's calls (a new or changed call must be found), and compares, day by
day, the listing with the one call_list last kept in the ledger, the day's last run with
success, every call's work and files with what the ledger says (the checks the steps run
themselves: a missing or edited recording, transcript or summary is work), and Dagster's
materializations of every asset. The period's files (registry, report, QA sample) must be as
they were written (sha256) from the ledger's rows as they are now, under the same settings.

`calltexts run` then runs only the days that changed (with the whole period's files made
again), or nothing. A backfill launched from the UI or a schedule runs every day it is given,
as before: the plan is the CLI's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg

from calltexts_assets.assets.call_list import rejected_day
from calltexts_assets.assets.partitions import RunPeriod, export_day
from calltexts_assets.audio.fetch import already_stored, needs_fetch
from calltexts_assets.clients.storage import Storage, unchanged_since
from calltexts_assets.files.storage_keys import deliverable_keys, qa_sample_key
from calltexts_assets.listing.directory import RunDirectory
from calltexts_assets.listing.tally import DayFingerprints, Listing
from calltexts_assets.resources.export_settings import ExportSettings, outputs_stamp
from calltexts_assets.state.ledger import SUMMARY_FIELDS, CallRecord, Ledger
from calltexts_assets.summaries.step import needs_summary
from calltexts_assets.transcripts.step import needs_work

# Every asset a run of the export job materializes for each day (summaries only when on).
ASSETS = ("call_list", "raw_audio", "transcripts", "registry_csv", "cost_report", "qa_sample")
# The assets that write the period's files: all a run needs when only the files are stale.
FILE_ASSETS = ("registry_csv", "cost_report", "qa_sample")


@dataclass
class ExportPlan:
    period: RunPeriod
    calls: int = 0  # listed by Bitrix24 for the period (valid rows, as call_list counts)
    changed: dict[str, str] = field(default_factory=dict)  # day -> why it must run
    files: str = ""  # why the period's files must be made again ("" : they stand)

    @property
    def nothing_to_do(self) -> bool:
        return not self.changed and not self.files

    @property
    def asset_selection(self) -> list[dg.AssetKey] | None:
        """Only the files' assets when no day changed (the calls' rows stay as they are, so
        the files made are those of the ledger as it stands); None: every asset."""
        return None if self.changed else [dg.AssetKey(name) for name in FILE_ASSETS]

    @property
    def run_days(self) -> tuple[date, date]:
        """The days the run must cover: the changed days' span, or (only the files are out
        of date) the period's last day, whose run makes the period's files again."""
        if not self.changed:
            return self.period.last, self.period.last
        days = sorted(self.changed)
        return date.fromisoformat(days[0]), date.fromisoformat(days[-1])

    def describe(self) -> str:
        first, last = self.run_days
        if self.nothing_to_do:
            return "nothing"
        shown = [f"{day} ({why})" for day, why in sorted(self.changed.items())[:3]]
        more = len(self.changed) - len(shown)
        parts = [", ".join(shown) + (f" and {more} more" if more > 0 else "")] if shown else []
        if self.files:
            parts.append(f"the period's files ({self.files})")
        return f"{'; '.join(parts)}: running {first.isoformat()} .. {last.isoformat()}"


def listed_days(
    batches: Iterable[list[dict[str, Any]]], period: RunPeriod, directory: Any
) -> tuple[DayFingerprints, int]:
    """Each day's listing fingerprint, exactly as call_list keeps it, and the calls listed."""
    listing = Listing()
    fingerprints = DayFingerprints()
    for rows in batches:
        calls, invalid = listing.add(rows, enrich=directory.named)
        for call in calls:
            fingerprints.add(export_day(call.started_at), call)
        for row in invalid:
            fingerprints.add_rejected(rejected_day(row, period), row)
    return fingerprints, listing.calls


def call_work(
    settings: ExportSettings, store: Storage, *, summaries: bool
) -> Callable[[CallRecord], str]:
    """What is left to do of a call ("" : nothing), by the steps' own tests of their work."""
    verify = settings.verify_checksums

    def work(record: CallRecord) -> str:
        if needs_fetch(record, retry_missing=settings.retry_missing_audio) and not (
            already_stored(record, storage=store, verify_checksum=verify)
        ):
            return f"call {record.call_id}: recording to download"
        if needs_work(record, store, verify=verify):
            return f"call {record.call_id}: transcript to make"
        if summaries and needs_summary(record, store, verify=verify):
            return f"call {record.call_id}: summary to make"
        return ""

    return work


def stale_files(period: RunPeriod, ledger: Ledger, store: Storage, settings: ExportSettings) -> str:
    """Why the period's registry, report or QA sample must be made again ("" : they stand)."""
    rows, rows_but_summaries = ledger.period_stamps(period.export_ids, (), SUMMARY_FIELDS)
    files = dict.fromkeys(
        deliverable_keys(period.first, period.last).values(), outputs_stamp(settings, rows)
    )
    files[qa_sample_key(period.first, period.last)] = outputs_stamp(settings, rows_but_summaries)
    for key, expected in files.items():
        name = key.rsplit("/", 1)[-1]
        kept = ledger.deliverable(key)
        if kept is None:
            return f"{name} never written"
        if kept["stamp"] != expected:
            return f"{name} older than the ledger or the settings"
        if kept["sha256"] == "":  # left unwritten on purpose (e.g. an incomplete workbook)
            continue
        written = kept["written_at"]
        if not unchanged_since(
            store, key, kept["sha256"], written, verify=settings.verify_checksums
        ):
            return f"{name} missing or changed"
    return ""


def plan_export(
    period: RunPeriod,
    *,
    batches: Iterable[list[dict[str, Any]]],
    directory: Any,
    ledger: Ledger,
    store: Storage,
    instance: dg.DagsterInstance,
    settings: ExportSettings,
    summaries: bool,
) -> ExportPlan:
    fingerprints, calls = listed_days(batches, period, directory)
    plan = ExportPlan(period, calls=calls)
    days = period.export_ids
    exports = ledger.exports(days)
    for day in days:
        export = exports.get(day)
        if export is None:
            plan.changed[day] = "never exported"
        elif export["status"] != "success":
            plan.changed[day] = f"last run {export['status']}"
        elif export.get("listing_fingerprint") != fingerprints.of(day):
            plan.changed[day] = "Bitrix24 lists other calls"
    keys = ASSETS + (("summaries",) if summaries else ())
    for name in keys:
        done = instance.get_materialized_partitions(dg.AssetKey(name))
        for day in days:
            if day not in done:
                plan.changed.setdefault(day, f"{name} not materialized")
    work = call_work(settings, store, summaries=summaries)
    for record in ledger.iter_records([d for d in days if d not in plan.changed]):
        left = work(record)
        if left:
            plan.changed.setdefault(record.run_id, left)
    if not plan.changed:
        plan.files = stale_files(period, ledger, store, settings)
    return plan


def plan_with_portal(
    period: RunPeriod,
    defs: dg.Definitions,
    ledger: Ledger,
    store: Storage,
    instance: dg.DagsterInstance,
    *,
    summaries: bool,
) -> ExportPlan:
    """The plan, with the Bitrix24 client a run's resource would build (EnvVars resolved)."""
    resources: Any = defs.resources
    with resources["bitrix24"].process_config_and_initialize_cm() as bitrix24:
        client = bitrix24.get_client()  # closed with the resource
        return plan_export(
            period,
            batches=client.iter_call_batches(period.start, period.end),
            directory=RunDirectory(client),
            ledger=ledger,
            store=store,
            instance=instance,
            settings=resources["export_settings"],
            summaries=summaries,
        )
