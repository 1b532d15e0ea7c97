"""The job over every asset; schedules and backfills launch it."""

import dagster as dg

calls_export = dg.define_asset_job(
    "calls_export",
    selection=dg.AssetSelection.all(),
    description="Every asset of the export for a day or a range of days (one run over a range).",
)
