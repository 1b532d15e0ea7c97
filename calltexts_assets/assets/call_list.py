"""call_list: every call of the run's days, as Bitrix24 telephony statistics list them."""

from collections import Counter, defaultdict

import dagster as dg

from calltexts_assets.assets.figures import minutes, record_day_figures, run_totals, usd
from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, RunPeriod, export_day, run_period
from calltexts_assets.billing.cost import (
    billable_minutes,
    billed_seconds_of_request,
    forecast,
    seconds_cost_usd,
)
from calltexts_assets.listing.calls import Call
from calltexts_assets.listing.directory import RunDirectory
from calltexts_assets.listing.tally import DayFingerprints, Listing, Rejected
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.state.ledger import Ledger


@dg.asset(
    **DAILY_SINGLE_RUN,
    group_name="calls",
    kinds={"bitrix24"},
    description="The day's calls from Bitrix24 `voximplant.statistic.get` (all pages), "
    "normalised and recorded in the ledger. Data version = hash of the list.",
)
def call_list(
    context: dg.AssetExecutionContext,
    bitrix24: Bitrix24Resource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> dg.MaterializeResult:
    period = run_period(context)
    db = ledger.get()
    client = bitrix24.get_client()
    actor = context.run.tags.get("dagster/user", context.run.tags.get("actor", "dagster"))
    for day in period.export_ids:
        db.start_export(day, day, day, actor=actor, dagster_run_id=context.run.run_id)

    price, rate = export_settings.price_per_minute_usd, export_settings.usd_rub_rate
    unit = export_settings.billing_unit
    # One `batch` answer (<= 2,500 rows) at a time: a long period is never in memory whole.
    listing = Listing()
    directory = RunDirectory(client)
    days: defaultdict[str, Counter[str]] = defaultdict(Counter)
    fingerprints = DayFingerprints()
    for rows in client.iter_call_batches(period.start, period.end):
        calls, invalid = listing.add(rows, enrich=directory.named)
        by_day: dict[str, list[Call]] = defaultdict(list)
        for call in calls:
            by_day[export_day(call.started_at)].append(call)
        for day, day_calls in by_day.items():
            db.upsert_listed(day, day_calls, dagster_run_id=context.run.run_id)
            for call in day_calls:
                fingerprints.add(day, call)
                days[day].update(calls=1, seconds=call.duration_sec)
                if call.has_recording:
                    days[day].update(
                        with_recording=1,
                        billable_minutes=billable_minutes(call.duration_sec),
                        billed_seconds=billed_seconds_of_request(call.duration_sec, unit),
                    )
        for row in invalid:
            context.log.error(f"statistic row rejected ({row.code}): {row.reason}")
            day = rejected_day(row, period)
            db.record_invalid(day, row.call_id, row.reason, row.code)
            days[day]["rejected"] += 1
            fingerprints.add_rejected(day, row)
    for day in period.export_ids:  # the whole listing is read: each day's is known
        db.set_listing_fingerprint(day, fingerprints.of(day))

    def figures_of(day: str) -> dict[str, int | float]:
        listed = days[day]
        cost = float(seconds_cost_usd(listed["billed_seconds"], price))
        return {
            "calls": listed["calls"],
            "calls_with_recording": listed["with_recording"],
            "minutes": minutes(listed["seconds"]),
            "rejected_rows": listed["rejected"],
            "forecast_billable_minutes": listed["billable_minutes"],
            "forecast_cost_usd": usd(cost),
            "forecast_cost_rub": round(cost * rate, 2),
        }

    record_day_figures(context, period, figures_of)
    for note in directory.notes:
        context.log.warning(note)
    plan = forecast(
        listing.recording_durations, price_per_minute=price, usd_rub_rate=rate, unit=unit
    )
    stats = client.stats
    # One run-level note per directory the portal refused (the ids are kept).
    notes = {"names_not_read": dg.MetadataValue.text("\n".join(directory.notes))}
    return dg.MaterializeResult(
        metadata=(notes if directory.notes else {})
        | run_totals(
            period,
            {
                "calls": listing.calls,
                "calls_with_recording": len(listing.recording_durations),
                "minutes": minutes(listing.seconds),
                "rejected_rows": listing.rejected,
                "calls_per_day": dict(sorted((d, c["calls"]) for d, c in days.items())),
                "forecast_billable_minutes": plan.minutes,
                "forecast_cost_usd": usd(float(plan.cost_usd)),
                "forecast_cost_rub": round(float(plan.cost_rub), 2),
                "bitrix24_requests": stats.requests,
                "bitrix24_retries": stats.retries,
                "bitrix24_limit_hits": stats.limit_hits,
                # OPERATION_TIME_LIMIT refusals, and the pauses for a method's budget to reset
                "bitrix24_blocked": stats.blocked,
                "bitrix24_operating_waits": stats.operating_waits,
                "bitrix24_operating_wait_sec": round(stats.operating_wait_sec, 1),
                "bitrix24_token_refreshes": client.token_refreshes,
            },
        ),
        data_version=dg.DataVersion(listing.fingerprint),
    )


def rejected_day(row: Rejected, period: RunPeriod) -> str:
    """The day a rejected statistic row is shown on: its own, else the period's first."""
    in_period = row.started_at is not None and period.start <= row.started_at < period.end
    return export_day(row.started_at) if in_period and row.started_at else period.first.isoformat()


def require_listed(db: Ledger, period: RunPeriod) -> None:
    """Fail, saying what to materialize, when a day of `period` was never listed: a step
    downstream would otherwise find no calls and report an empty day as done."""
    unlisted = [day for day in period.export_ids if db.export(day) is None]
    if not unlisted:
        return
    shown = ", ".join(unlisted[:5]) + (
        f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
    )
    raise dg.Failure(
        description=f"call_list was never materialized for {shown}, so the calls of "
        f"{'that day' if len(unlisted) == 1 else 'those days'} are not known: materialize "
        "call_list for them first (or the whole calls_export job, as `calltexts run` does)",
        allow_retries=False,
    )
