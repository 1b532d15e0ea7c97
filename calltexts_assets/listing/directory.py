"""Listed calls with the names a reader needs: the employee, the line, the CRM card.

Each employee is asked for once per run, the lines once per run; a portal that refuses
names leaves the ids and one note naming what is missing (docs/specs/bitrix24_wire.md §12).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from calltexts_assets.listing.calls import Call, crm_card_path


class NamesAnswer(Protocol):
    names: dict[str, str]
    refused: str


class NamesSource(Protocol):
    """What the directory needs of the Bitrix24 client (`clients.bitrix24.directory`)."""

    portal_origin: str

    def employee_names(self, user_ids: Iterable[str]) -> NamesAnswer: ...

    def line_names(self) -> NamesAnswer: ...


_SHOWN = {
    "user.get": ("employee names", "the registry and the report show employee ids only"),
    "voximplant.line.get": ("line names", "lines are shown as the portal's ids"),
}
_GRANT = {
    "user.get": "add the `user_brief` scope to the webhook or application",
    "voximplant.line.get": "the webhook's user needs the 'Management of numbers' permission",
}
_REFUSALS = ("insufficient_scope", "access_denied")


def refusal_note(refused: str) -> str:
    """One line for the run: what was not read, why, and what to do about it."""
    method, _, code = refused.partition(": ")
    what, effect = _SHOWN[method]
    advice = _GRANT[method] if code.lower() in _REFUSALS else "the next run asks again"
    return f"{what} were not read ({refused}): {effect}; {advice}."


class RunDirectory:
    """The run's cache of names; `named(calls)` returns the calls with them."""

    def __init__(self, source: NamesSource) -> None:
        self._source = source
        self._employees: dict[str, str] = {}
        self._asked: set[str] = set()
        self._lines: dict[str, str] | None = None
        self._employees_refused = False
        self.notes: list[str] = []  # one per refused method, for the run's metadata and log

    def _note(self, refused: str) -> None:
        self.notes.append(refusal_note(refused))

    def _learn(self, calls: Sequence[Call]) -> None:
        if self._lines is None:
            answer = self._source.line_names()
            self._lines = answer.names
            if answer.refused:
                self._note(answer.refused)
        unknown = {c.portal_user_id for c in calls if c.portal_user_id} - self._asked
        if unknown and not self._employees_refused:
            answer = self._source.employee_names(unknown)
            self._employees.update(answer.names)
            if answer.refused:
                self._employees_refused = True
                self._note(answer.refused)
        self._asked |= unknown

    def named(self, calls: Sequence[Call]) -> list[Call]:
        if not calls:
            return []
        self._learn(calls)
        lines = self._lines or {}
        origin = self._source.portal_origin.rstrip("/")
        named = []
        for call in calls:
            path = crm_card_path(call.crm_entity_type, call.crm_entity_id)
            named.append(
                replace(
                    call,
                    employee_name=self._employees.get(call.portal_user_id, ""),
                    line_name=lines.get(call.portal_number, ""),
                    crm_url=f"{origin}{path}" if path else "",
                )
            )
        return named
