"""Injected misbehaviour of the emulated portal: what the tests and benchmarks ask for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, Response

from calltexts_sandbox.portal.errors import (
    ApiError,
    expired_token,
    insufficient_scope,
    operation_time_limit,
)

RECORDS = "records"  # the recordings: the storage host's links and the Drive downloads
# Answer the whole HTTP request.
REQUEST_KINDS = frozenset(
    {"status", "latency", "expired_token", "insufficient_scope", "html", "missing", "truncate"}
)
# Fail one method call: the whole answer of a plain call, one command's `result_error`
# inside a batch (how the portal reports them: docs §3, §4).
COMMAND_KINDS = frozenset({"operation_time_limit", "access_denied", "not_found"})
FAULT_KINDS = REQUEST_KINDS | COMMAND_KINDS

_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>{status}</title></head>"
    "<body><h1>{status}</h1><p>The portal is temporarily unavailable.</p></body></html>"
)
_DEFAULT_ERRORS = {
    429: ("QUERY_LIMIT_EXCEEDED", "Too many requests"),
    503: ("QUERY_LIMIT_EXCEEDED", "Too many requests"),
    500: ("INTERNAL_SERVER_ERROR", "Internal server error"),
}


@dataclass
class Fault:
    """One injected misbehaviour; `times=None` keeps it until cleared.

    Request kinds: `status` (HTTP `status`, default 503, JSON `error`), `latency`
    (`delay_sec`, then the normal answer), `expired_token` (401), `insufficient_scope`
    (401, as real portals answer it), `html` (an HTML page with `status` 200 or 502),
    `missing` (records: 404 or 410), `truncate` (records: full Content-Length,
    `truncate_at` of the body, then the connection is dropped).
    Command kinds: `operation_time_limit` (the method's budget is spent), `access_denied`,
    `not_found` (disk.file.get: the Drive file is gone), for the commands of method
    `target` (and, with `record_ids`, only those Drive files).
    `target`: a method name, `batch`, `records`, or `*` for every REST method.
    """

    kind: str
    target: str = "*"
    times: int | None = 1
    status: int | None = None
    error: str | None = None
    description: str | None = None
    delay_sec: float = 0.0
    retry_after: float | None = None
    record_ids: tuple[str, ...] | None = None
    truncate_at: float = 0.5
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        self.target = self.target.lower()
        if self.record_ids is not None:
            self.record_ids = tuple(str(r) for r in self.record_ids)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)} - {"fired"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        return cls(**dict(data))

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, endpoints: set[str], record_id: str | None) -> bool:
        if self.spent or self.kind in COMMAND_KINDS:
            return False
        if record_id is not None:
            if self.target != RECORDS:
                return False
            return self.record_ids is None or record_id in self.record_ids
        return self.target in endpoints or (self.target == "*" and RECORDS not in endpoints)

    def matches_command(self, method: str, record_id: str | None) -> bool:
        if self.spent or self.kind not in COMMAND_KINDS or self.target not in (method, "*"):
            return False
        return self.record_ids is None or record_id in self.record_ids

    def command_error(self) -> ApiError:
        if self.kind == "operation_time_limit":
            return operation_time_limit()
        if self.kind == "access_denied":
            return ApiError(403, "ACCESS_DENIED", "Access denied")
        return ApiError(400, "ERROR_NOT_FOUND", "Could not find entity with id '{id}'.")


def json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(dict(body), status_code=status, headers=dict(headers or {}))


def fault_response(fault: Fault) -> Response:
    if fault.kind == "expired_token":
        return json_response(401, expired_token().body())
    if fault.kind == "insufficient_scope":
        return json_response(401, insufficient_scope(webhook=False).body())
    if fault.kind == "html":
        status = fault.status or 200
        return HTMLResponse(_HTML_PAGE.format(status=status), status_code=status)
    if fault.kind == "missing":
        status = fault.status or 404
        return json_response(status, {"error": "NOT_FOUND", "error_description": "File not found"})
    status = fault.status or 503
    error, description = _DEFAULT_ERRORS.get(status, ("ERROR", f"HTTP {status}"))
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
    body = {"error": fault.error or error, "error_description": fault.description or description}
    return json_response(status, body, headers)
