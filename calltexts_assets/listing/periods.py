"""The rules of an export period, in the portal's time zone: the API and the CLI share them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


class PeriodError(ValueError):
    """The period cannot be exported as asked; the message says why."""


@dataclass(frozen=True)
class PeriodPolicy:
    """Defaults and limits of an export period, in the portal's time zone."""

    timezone: str = "Europe/Moscow"
    default_days: int = 60
    max_days: int = 90
    # The last day that is a partition: yesterday while today's calls are still coming in.
    last_exportable_day: Callable[[], date] | None = None
    first_exportable_day: date | None = None  # the first partition
    now: Callable[[], datetime] | None = None

    def today(self) -> date:
        zone = ZoneInfo(self.timezone)
        return (self.now() if self.now else datetime.now(zone)).astimezone(zone).date()

    def last_day(self) -> date:
        today = self.today()
        return min(today, self.last_exportable_day()) if self.last_exportable_day else today

    def resolve(
        self,
        period_from: date | None,
        period_to: date | None,
        *,
        allow_long_period: bool = False,
    ) -> tuple[date, date]:
        """The period asked for, its open ends filled in; PeriodError when it cannot be
        exported (in the future, not complete yet, before the first partition, too long)."""
        today, last = self.today(), self.last_day()
        asked_to = period_to
        period_to = period_to or last
        # "the 60 days before": before today by default, before period_to when it is given
        anchor = asked_to or today
        period_from = period_from or anchor - timedelta(days=self.default_days)
        for name, day in (("period_from", period_from), ("period_to", period_to)):
            if day > today:
                raise PeriodError(f"{name} {day} is in the future (today is {today})")
        if period_to > last:
            raise PeriodError(
                f"period_to {period_to} is not complete yet; the last day to export is {last}"
            )
        first = self.first_exportable_day
        if first is not None and period_from < first:
            raise PeriodError(
                f"period_from {period_from} is before the first exportable day {first}"
            )
        if period_from > period_to:
            raise PeriodError(f"period_from {period_from} is after period_to {period_to}")
        days = (period_to - period_from).days + 1
        if days > self.max_days and not allow_long_period:
            raise PeriodError(
                f"the period has {days} days, more than {self.max_days}; "
                'send "allow_long_period": true to export it anyway'
            )
        return period_from, period_to
