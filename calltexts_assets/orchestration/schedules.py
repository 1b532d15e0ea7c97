"""When exports run by themselves: yesterday every night, the last 60 days every week."""

from datetime import timedelta

import dagster as dg

from calltexts_assets.assets.partitions import (
    PORTAL_TIMEZONE,
    daily_partitions,
    range_tags,
)
from calltexts_assets.orchestration.jobs import calls_export

CATCH_UP_DAYS = 60


def _last_60_days(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    last = context.scheduled_execution_time.date() - timedelta(days=1)
    first = max(last - timedelta(days=CATCH_UP_DAYS - 1), daily_partitions.start.date())
    if first > last:
        return dg.SkipReason("no complete day in the partitions yet")
    return dg.RunRequest(
        run_key=f"catch-up-{first.isoformat()}-{last.isoformat()}",
        tags={**range_tags(first, last), "actor": "weekly_catch_up"},
    )


def build_schedules(running: bool) -> list[dg.ScheduleDefinition]:
    """The schedules, on only when the deployment says so (CALLTEXTS_SCHEDULES_RUNNING): a
    developer's `make dev` pointed at a real portal must not start paying for
    transcriptions at 03:00."""
    status = dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
    # Yesterday's partition (the last complete day in the portal's zone), at 03:00 local time.
    daily_export = dg.build_schedule_from_partitioned_job(
        calls_export, name="daily_export", hour_of_day=3, minute_of_hour=0, default_status=status
    )
    weekly_catch_up = dg.ScheduleDefinition(
        name="weekly_catch_up",
        job=calls_export,
        cron_schedule="0 5 * * 0",
        execution_timezone=PORTAL_TIMEZONE,
        default_status=status,
        execution_fn=_last_60_days,
        description=f"One run over the last {CATCH_UP_DAYS} days. Every step skips what is "
        "done (stored audio, written transcripts), so only missing work costs anything.",
    )
    return [daily_export, weekly_catch_up]
