"""Who took a call and which line it came on: employee names from `user.get`, line names
from `voximplant.line.get` (docs/specs/bitrix24_wire.md §12).

Names are a courtesy, not the export: a portal that refuses them (no `user_brief` scope,
no permission to see the lines) or fails to answer after the retries leaves the ids as they
are, with one note saying why. Credentials refused outright still stop the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calltexts_assets.clients.bitrix24.errors import Bitrix24AuthError, Bitrix24Error
from calltexts_assets.clients.bitrix24.wire import PAGE_SIZE, Batching, as_dict

USER_METHOD = "user.get"
LINE_METHOD = "voximplant.line.get"
# Refusals that mean "not allowed to read this", not "the credentials are wrong".
_NOT_ALLOWED = frozenset({"insufficient_scope", "access_denied"})
_NAME_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_name(value: Any) -> str:
    """A name from the portal as one short line (it reaches CSV cells and file headers)."""
    text = " ".join(_CONTROL.sub(" ", str(value or "")).split())
    return text[:_NAME_CHARS]


def full_name(user: Mapping[str, Any]) -> str:
    """`NAME LAST_NAME` as the docs' examples print a user; either alone when the other
    is empty."""
    return clean_name(" ".join(clean_name(user.get(k)) for k in ("NAME", "LAST_NAME")))


@dataclass
class Names:
    """Names by id, and why some could not be had ("" when nothing was refused)."""

    names: dict[str, str] = field(default_factory=dict)
    refused: str = ""


def _refusal(exc: Bitrix24Error) -> str:
    return exc.code.lower() if exc.code.lower() in _NOT_ALLOWED else ""


class DirectoryMixin(Batching):
    """Part of `Bitrix24Client`: the portal's employees and lines by id."""

    def employee_names(self, user_ids: Iterable[str]) -> Names:
        """Full names of `user_ids` (numeric ids only), 50 ids per `user.get` command and up
        to 50 commands per `batch`. Ids the portal does not return (deleted users, bots)
        stay without a name."""
        ids = sorted({i for i in user_ids if i.isdigit()}, key=int)
        found = Names()
        chunks = [ids[n : n + PAGE_SIZE] for n in range(0, len(ids), PAGE_SIZE)]
        for first in range(0, len(chunks), PAGE_SIZE):
            commands = {
                f"u{n}": (USER_METHOD, {"FILTER": {"@ID": chunk}})
                for n, chunk in enumerate(chunks[first : first + PAGE_SIZE], start=first)
            }
            try:
                answer = self.batch(commands)
            except Bitrix24Error as exc:
                if isinstance(exc, Bitrix24AuthError) and not _refusal(exc):
                    raise  # the credentials themselves: the run stops as for any method
                found.refused = f"{USER_METHOD}: {exc.code}"
                return found
            for name in commands:
                if name in answer.result_error:
                    code = answer.error_code(name)
                    found.refused = found.refused or f"{USER_METHOD}: {code}"
                    continue
                users = answer.result.get(name)
                for user in users if isinstance(users, list) else []:
                    user = as_dict(user)
                    user_id, name_text = str(user.get("ID") or ""), full_name(user)
                    if user_id in ids and name_text:
                        found.names[user_id] = name_text
        return found

    def line_names(self) -> Names:
        """Every line the portal lists, `{"reg150907": "SIP line", ...}`."""
        try:
            answer = self.call(LINE_METHOD)
        except Bitrix24Error as exc:
            if isinstance(exc, Bitrix24AuthError) and not _refusal(exc):
                raise
            return Names(refused=f"{LINE_METHOD}: {exc.code}")
        lines = as_dict(answer.get("result"))
        return Names({clean_name(k): clean_name(v) for k, v in lines.items() if clean_name(v)})

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError  # Bitrix24Client.call
