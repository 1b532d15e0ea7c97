"""When the configured models shut down, and what to do about it.

The date comes from the service: `GET /v1/models` lists each model with an optional
`shutdown_date` (`YYYY-MM-DD`, or null when none is announced; docs/specs/openai_models.md
§1). The API names no replacement, so the replacement OpenAI's deprecations page recommends
is kept here (§2). A compatible server without the endpoint or the field is fine: nothing is
known, nothing is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

# Warn this many days before a shutdown (the issue's choice; OpenAI gives >= 6 months'
# notice for generally available models, §2).
WARN_DAYS = 60

# Recommended replacements, from developers.openai.com/api/docs/deprecations (§2).
_TRANSCRIBE_NEXT = "gpt-transcribe"
_CHAT_NEXT = "gpt-6-luna"
REPLACEMENTS: dict[str, str] = {
    **dict.fromkeys(
        ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
         "gpt-4o-mini-transcribe-2025-03-20", "gpt-4o-mini-transcribe-2025-12-15",
         "gpt-4o-transcribe-diarize"),
        _TRANSCRIBE_NEXT,
    ),
    **dict.fromkeys(
        ("gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "gpt-4o-mini",
         "gpt-4o-mini-2024-07-18", "gpt-4.1", "gpt-4.1-2025-04-14", "gpt-4.1-mini",
         "gpt-4.1-mini-2025-04-14"),
        _CHAT_NEXT,
    ),
}  # fmt: skip

OK, WARN, REFUSE, UNKNOWN = "ok", "warn", "refuse", "unknown"


def shutdown_dates(body: Any) -> dict[str, date | None]:
    """`GET /v1/models`'s list as {model id: shutdown date or None}. Entries without the
    field (a compatible server) or with an unreadable one count as "none announced"."""
    data = body.get("data") if isinstance(body, Mapping) else None
    found: dict[str, date | None] = {}
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            continue
        raw = item.get("shutdown_date")
        try:
            found[item["id"]] = date.fromisoformat(raw) if isinstance(raw, str) else None
        except ValueError:
            found[item["id"]] = None
    return found


@dataclass(frozen=True)
class ModelNotice:
    """What is known of one configured model's lifecycle."""

    setting: str  # WHISPER_MODEL, SUMMARY_MODEL
    model: str
    status: str  # OK, WARN, REFUSE, UNKNOWN (the server lists no such model / no list)
    shutdown: date | None = None
    days_left: int | None = None
    replacement: str = ""

    @property
    def message(self) -> str:
        """One line for the operator ("" when there is nothing to say)."""
        instead = f"; set {self.setting}={self.replacement}" if self.replacement else ""
        if self.status == REFUSE:
            return (
                f"{self.setting}={self.model}: the model was shut down on {self.shutdown} "
                f"(GET /v1/models){instead}"
            )
        if self.status == WARN:
            return (
                f"{self.setting}={self.model}: the model shuts down on {self.shutdown}, in "
                f"{self.days_left} days (GET /v1/models){instead} before then"
            )
        return ""


def notice(
    setting: str, model: str, dates: Mapping[str, date | None] | None, today: date
) -> ModelNotice:
    """The notice for `model` given the server's dates (None: the list could not be read)."""
    if dates is None or model not in dates:
        return ModelNotice(setting, model, UNKNOWN)
    shutdown = dates[model]
    if shutdown is None:
        return ModelNotice(setting, model, OK)
    days_left = (shutdown - today).days
    status = REFUSE if days_left <= 0 else WARN if days_left <= WARN_DAYS else OK
    return ModelNotice(setting, model, status, shutdown, days_left, REPLACEMENTS.get(model, ""))


class ListsModels(Protocol):
    def model_list(self) -> Any | None: ...


def configured_models(
    service: ListsModels, models: Mapping[str, str], today: date
) -> list[ModelNotice]:
    """One `GET /v1/models`, a notice per configured model ({setting: model})."""
    body = service.model_list()
    dates = shutdown_dates(body) if body is not None else None
    return [notice(setting, model, dates, today) for setting, model in models.items()]
