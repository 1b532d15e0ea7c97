"""The request body of `POST /tasks/call_export` and the rules of its period."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError, field_validator

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class PeriodError(ValueError):
    """The request cannot be served as asked; the message says why, for the client."""


class CallExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period_from: date | None = None
    period_to: date | None = None
    generate_summary: StrictBool | None = None
    allow_long_period: StrictBool = False

    @field_validator("period_from", "period_to", mode="before")
    @classmethod
    def _iso_date(cls, value: object) -> object:
        # pydantic alone would also take timestamps and datetimes; the contract is a day.
        if value is None:
            return None
        if not isinstance(value, str) or not _ISO_DATE.match(value):
            raise ValueError(f"must be an ISO date YYYY-MM-DD, got {value!r}")
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a calendar date") from exc


def parse_body(raw: object) -> CallExportBody:
    """The body, or PeriodError naming every bad field."""
    if not isinstance(raw, dict):
        raise PeriodError("the body must be a JSON object")
    try:
        return CallExportBody.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "body"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            problems.append(f"{where}: {message}")
        raise PeriodError("; ".join(problems)) from exc


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

    def resolve(self, body: CallExportBody) -> tuple[date, date]:
        today, last = self.today(), self.last_day()
        period_to = body.period_to or last
        # "the 60 days before": before today by default, before period_to when it is given
        anchor = body.period_to or today
        period_from = body.period_from or anchor - timedelta(days=self.default_days)
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
        if days > self.max_days and not body.allow_long_period:
            raise PeriodError(
                f"the period has {days} days, more than {self.max_days}; "
                'send "allow_long_period": true to export it anyway'
            )
        return period_from, period_to
