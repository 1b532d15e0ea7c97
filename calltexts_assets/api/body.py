"""The request body of `POST /tasks/call_export`."""

from __future__ import annotations

import re
from datetime import date

from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError, field_validator

from calltexts_assets.listing.periods import PeriodError

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class CallExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period_from: date | None = None
    period_to: date | None = None
    generate_summary: StrictBool | None = None
    allow_long_period: StrictBool = False
    # the period's calls, minutes and cost, and what is already done: nothing is launched
    dry_run: StrictBool = False

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
