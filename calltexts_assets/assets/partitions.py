"""The one partitioning of every asset: calendar days in the portal's time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from calltexts_assets.settings import load_settings

_settings = load_settings()
PORTAL_TIMEZONE = _settings.timezone
PARTITIONS_START = _settings.partitions_start

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START.isoformat(), timezone=PORTAL_TIMEZONE, end_offset=0
)

# By default a 60-day backfill is one run (one process, one Bitrix24 listing), not 60.
single_run = dg.BackfillPolicy.single_run()

# What every asset of the graph shares: `@dg.asset(**DAILY_SINGLE_RUN, ...)`. The code
# location replaces the policy with the deployment's (`backfill_policy`, in definitions.py).
DAILY_SINGLE_RUN = {"partitions_def": daily_partitions, "backfill_policy": single_run}


def backfill_policy(run_days: int) -> dg.BackfillPolicy:
    """The backfill shape of CALLTEXTS_BACKFILL_RUN_DAYS: 0, one run over the whole range;
    N, runs of N days each, which the instance's run queue and launcher spread over
    processes, containers or pods. The ledger makes the results the same either way."""
    if run_days <= 0:
        return single_run
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=run_days)


def with_backfill_policy(
    assets: list[dg.AssetsDefinition], policy: dg.BackfillPolicy
) -> list[dg.AssetsDefinition]:
    """`assets` with `policy` (all assets share one, so a backfill's runs cover the same days
    of every asset)."""
    return [asset.with_attributes(backfill_policy=policy) for asset in assets]


@dataclass(frozen=True)
class RunPeriod:
    """The days a run covers: one partition, or the whole range of a single-run backfill."""

    days: tuple[date, ...]
    start: datetime  # aware, portal time zone, inclusive
    end: datetime  # exclusive

    @property
    def first(self) -> date:
        return self.days[0]

    @property
    def last(self) -> date:
        return self.days[-1]

    @property
    def export_ids(self) -> list[str]:
        """Ledger run ids: one per day."""
        return [d.isoformat() for d in self.days]

    @property
    def label(self) -> str:
        return f"{self.first.isoformat()}_{self.last.isoformat()}"


def period_for_days(first: date, last: date, tz: str = PORTAL_TIMEZONE) -> RunPeriod:
    zone = ZoneInfo(tz)
    days = tuple(first + timedelta(days=i) for i in range((last - first).days + 1))
    start = datetime(first.year, first.month, first.day, tzinfo=zone)
    end_day = last + timedelta(days=1)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone)
    return RunPeriod(days=days, start=start, end=end)


def run_period(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> RunPeriod:
    """The run's period through the range API, which works for one partition and for ranges
    (`context.partition_key` raises inside a range run)."""
    key_range = context.partition_key_range
    return period_for_days(date.fromisoformat(key_range.start), date.fromisoformat(key_range.end))


# Run tags of `calltexts run` when it runs only the days that changed (ops.export_plan): the
# period whose registry, report and QA sample the run makes again, around the run's days.
FILES_FROM_TAG = "calltexts/files_from"
FILES_TO_TAG = "calltexts/files_to"


def files_period(context: dg.AssetExecutionContext) -> RunPeriod:
    """The period of the files a run writes for its range (registry, report, QA sample): the
    run's own, or the wider one its tags name when it runs only a period's changed days."""
    own = run_period(context)
    tags = context.run.tags
    first, last = tags.get(FILES_FROM_TAG), tags.get(FILES_TO_TAG)
    if not first or not last:
        return own
    wider = period_for_days(date.fromisoformat(first), date.fromisoformat(last))
    return wider if wider.first <= own.first and own.last <= wider.last else own


def export_day(started_at: datetime, tz: str = PORTAL_TIMEZONE) -> str:
    """The partition (ledger run id) a call belongs to: its start date in the portal zone."""
    return started_at.astimezone(ZoneInfo(tz)).date().isoformat()


def range_tags(first: date, last: date) -> dict[str, str]:
    """Run tags of a single-run backfill over [first, last]."""
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def files_tags(period: RunPeriod) -> dict[str, str]:
    """Run tags asking for `period`'s files from a run over some of its days."""
    return {FILES_FROM_TAG: period.first.isoformat(), FILES_TO_TAG: period.last.isoformat()}


def days_of_run_tags(tags: dict[str, str]) -> list[str]:
    """Export ids (days) a run covered, from its partition tags; [] when not partitioned."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    first = tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/asset_partition_range_end")
    if not first or not last:
        return []
    return period_for_days(date.fromisoformat(first), date.fromisoformat(last)).export_ids
