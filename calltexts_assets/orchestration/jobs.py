"""The job over every asset; schedules and backfills launch it."""

import dagster as dg

# In-process executor: the steps run their own concurrency (threads over the calls), so a
# process per step buys nothing and costs a Python + Dagster start-up (~3 s) per step: a
# no-op run of one partition from the UI took 22 s, most of it starting 6 processes.
calls_export = dg.define_asset_job(
    "calls_export",
    selection=dg.AssetSelection.all(),
    description="Every asset of the export for a day or a range of days (one run over a range).",
    executor_def=dg.in_process_executor,
)
