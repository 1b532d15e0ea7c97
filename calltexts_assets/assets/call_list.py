"""call_list: every call of the run's days, as Bitrix24 telephony statistics list them."""

import hashlib
from collections import Counter
from typing import Any

import dagster as dg

from calltexts_assets.assets.partitions import DAILY_SINGLE_RUN, export_day, run_period
from calltexts_assets.calls import Call, InvalidCallRow, call_from_row, calls_fingerprint
from calltexts_assets.cost import forecast
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource


def normalise_rows(rows: list[dict[str, Any]]) -> tuple[list[Call], list[tuple[str, str]]]:
    """Valid calls (first occurrence of each key wins) and (placeholder id, reason) of the rest."""
    calls: dict[tuple[str, str], Call] = {}
    invalid: list[tuple[str, str]] = []
    for row in rows:
        try:
            call = call_from_row(row)
        except InvalidCallRow as exc:
            # The unsafe id never becomes a key; a stable placeholder keeps the row visible.
            digest = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()[:12]
            invalid.append((f"invalid-{digest}", str(exc)))
            continue
        calls.setdefault((call.call_id, call.record_id), call)
    return list(calls.values()), invalid


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
    rows = client.list_calls(period.start, period.end)
    calls, invalid = normalise_rows(rows)

    by_day: dict[str, list[Call]] = {day: [] for day in period.export_ids}
    for call in calls:
        by_day.setdefault(export_day(call.started_at), []).append(call)
    actor = context.run.tags.get("dagster/user", context.run.tags.get("actor", "dagster"))
    for day, day_calls in by_day.items():
        db.start_export(day, day, day, actor=actor, dagster_run_id=context.run.run_id)
        db.upsert_listed(day, day_calls, dagster_run_id=context.run.run_id)
    for placeholder, reason in invalid:
        context.log.error(f"statistic row rejected: {reason}")
        db.record_invalid(period.first.isoformat(), placeholder, reason)

    with_recording = [c for c in calls if c.has_recording]
    plan = forecast(
        [c.duration_sec for c in with_recording],
        price_per_minute=export_settings.price_per_minute_usd,
        usd_rub_rate=export_settings.usd_rub_rate,
    )
    per_day = Counter(export_day(c.started_at) for c in calls)
    return dg.MaterializeResult(
        metadata={
            "period": period.label,
            "calls": len(calls),
            "calls_with_recording": len(with_recording),
            "minutes": dg.FloatMetadataValue(round(sum(c.duration_sec for c in calls) / 60, 1)),
            "rejected_rows": len(invalid),
            "calls_per_day": dg.JsonMetadataValue(dict(sorted(per_day.items()))),
            "forecast_billable_minutes": plan.minutes,
            "forecast_cost_usd": dg.FloatMetadataValue(float(plan.cost_usd)),
            "forecast_cost_rub": dg.FloatMetadataValue(float(plan.cost_rub)),
            "bitrix24_requests": client.stats.requests,
            "bitrix24_retries": client.stats.retries,
            "bitrix24_limit_hits": client.stats.limit_hits,
        },
        data_version=dg.DataVersion(calls_fingerprint(calls)),
    )
