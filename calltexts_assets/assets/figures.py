"""The figures of a materialization: each partition's own, and the run's totals.

A range run (single-run backfill) materializes every partition of its range with the
metadata it returns; figures returned that way would show the whole range's totals on each
day. So each day's own figures go to its partition (`add_asset_metadata`), under the same
keys every day (zeros where a day had nothing), and the run's totals go into one JSON entry,
`run_totals`, which the UI does not plot per partition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from calltexts_assets.assets.partitions import RunPeriod
from calltexts_assets.billing.tariffs import Tariff, Tariffs
from calltexts_assets.clients.stt_models import PROFILES
from calltexts_assets.resources.export_settings import ExportSettings

Figures = Mapping[str, int | float]


def record_day_figures(
    context: dg.AssetExecutionContext,
    period: RunPeriod,
    figures_of: Callable[[str], Figures],
    *,
    asset_key: dg.AssetKey | None = None,
) -> None:
    for day in period.export_ids:
        context.add_asset_metadata(dict(figures_of(day)), asset_key=asset_key, partition_key=day)


def run_totals(period: RunPeriod, totals: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "period": period.label,
        "run_totals": dg.JsonMetadataValue({"period": period.label, **totals}),
    }


def minutes(seconds: float) -> float:
    return round(seconds / 60, 2)


def usd(amount: float) -> float:
    return round(amount, 4)


def tariffs(settings: ExportSettings) -> Tariffs:
    """Each model's tariff (billing/tariffs.py): the configured models' from the settings,
    the others' from OpenAI's list prices (clients/stt_models.py)."""
    listed = {
        name: Tariff.of(profile.price_per_minute_usd, profile.billing_unit)
        for name, profile in PROFILES.items()
        if profile.price_per_minute_usd is not None
    }
    fallback = settings.fallback_model
    return Tariffs(
        Tariff.of(settings.price_per_minute_usd, settings.billing_unit),
        settings.stt_model,
        Tariff.of(settings.fallback_price_per_minute_usd, settings.fallback_billing_unit)
        if fallback
        else None,
        fallback,
        listed,
    )
