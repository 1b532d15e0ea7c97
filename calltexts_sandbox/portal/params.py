"""Request parameters and `batch` references as the portal's PHP reads them
(docs/specs/bitrix24_wire.md §3)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SUBKEY = re.compile(r"\[([^\[\]]*)\]")
# CRestUtil::processBatchElement: `$result`, `$next`, `$total`, `$time`, `$error`, any case.
_REF = re.compile(r"\$(result|next|total|time|error)((?:\[[^\[\]\s]*\])*)", re.IGNORECASE)
_SECTIONS = {
    "result": "result",
    "next": "result_next",
    "total": "result_total",
    "time": "result_time",
    "error": "result_error",
}


def parse_params(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """`[("FILTER[>ID]", "5")]` -> `{"FILTER": {">ID": "5"}}` (PHP's rules; `a[]` appends)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        parts = [match.group(1), *_SUBKEY.findall(match.group(2))] if match else [key]
        node = out
        for depth, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if depth == len(parts) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return out


def _walk(match: re.Match[str], done: Mapping[str, Mapping[str, Any]]) -> Any:
    """Key by key down the path; the first missing key stops the walk, without an error, at
    the deepest value reached (the whole section when the command itself is missing)."""
    node: Any = done[_SECTIONS[match.group(1).lower()]]
    for key in _SUBKEY.findall(match.group(2)):
        if isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            break
    return node


def resolve_reference(value: str, done: Mapping[str, Mapping[str, Any]]) -> Any:
    """A command parameter with its references substituted: a parameter that is one whole
    reference becomes the value found (an array too); inside a longer string only a scalar
    replaces its reference, otherwise the reference's text stays."""
    whole = _REF.fullmatch(value)
    if whole:
        return _walk(whole, done)

    def scalar(match: re.Match[str]) -> str:
        found = _walk(match, done)
        return match.group(0) if isinstance(found, dict | list) else str(found)

    return _REF.sub(scalar, value)


def php_truthy(value: Any) -> bool:
    """PHP's truthiness of a request value: "" and "0" are false, "false" is true."""
    if isinstance(value, str):
        return value not in ("", "0")
    return bool(value)
