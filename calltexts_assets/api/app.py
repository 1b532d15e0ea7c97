"""The trigger API: start an export over a period, follow it, scrape its metrics."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from calltexts_assets.api.body import CallExportBody, parse_body
from calltexts_assets.api.launcher import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SUMMARY_TAG,
    TOKEN_TAG,
    ExportRequest,
    Launcher,
    LaunchError,
    RunState,
)
from calltexts_assets.api.tokens import (
    ANONYMOUS,
    EXPORT_READ,
    EXPORT_RUN,
    METRICS_READ,
    Caller,
    TokenCheck,
    denied,
    require,
    scoped_key,
)
from calltexts_assets.listing.periods import PeriodError, PeriodPolicy
from calltexts_assets.runlog.log import scrubbed_logger
from calltexts_assets.state.audit import AuditEvent, AuditJournal
from calltexts_assets.state.idempotency import IdempotencyStore, StoredKey, request_hash

log = scrubbed_logger(__name__)

TASK_PATH = "/tasks/call_export"
REPLAYED_HEADER = "Idempotent-Replayed"
_RETRY = {"Retry-After": "5"}
# What a run's status adds beyond Dagster's: its period's progress, cost and files.
RunDetails = Callable[[RunState], dict[str, Any]]
Estimator = Callable[[date, date], dict[str, Any]]
MAX_BODY_BYTES = 16 * 1024  # three small fields; anything near this size is not ours
REPLAY_POLL_SEC = 0.1
# Longer than a launch may take (the GraphQL client's timeout is 60 s): a reservation this
# old with no run behind it belongs to a request that died.
ABANDONED_AFTER = timedelta(minutes=5)


def _json(status_code: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=_dumps(payload),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _error(status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status_code, {"detail": detail}, headers)


def _idempotency_key(request: Request) -> str | Response:
    raw = request.headers.get("Idempotency-Key")
    if raw is None or not raw.strip():
        return _error(400, "the Idempotency-Key header is required (a UUID, e.g. uuid4())")
    try:
        return str(uuid.UUID(raw.strip()))  # one spelling per key: lower case, hyphens
    except ValueError:
        return _error(400, f"the Idempotency-Key header must be a UUID, got {raw[:64]!r}")


def _replay(stored_status: int, body: bytes) -> Response:
    return Response(
        content=body,
        status_code=stored_status,
        media_type="application/json",
        headers={REPLAYED_HEADER: "true"},
    )


_BODY_SCHEMA = {
    "requestBody": {
        "content": {"application/json": {"schema": CallExportBody.model_json_schema()}}
    },
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "format": "uuid"},
        }
    ],
}


@dataclass(frozen=True)
class InFlight:
    """A key whose first request is still launching: the route waits for it off the
    worker threads (a replay must not hold one while it waits)."""

    key: str
    request_hash: str
    raw: Any
    caller: Caller


class ExportTasks:
    """What the task endpoints do, over a launcher and an idempotency store. Blocking (the
    store and the launcher talk to databases): the routes run each call off the event loop.

    A key is bound to its run as soon as the run exists: the run carries the key as a tag,
    so a request whose launch timed out, or died, is answered with that run on retry; a
    reservation left by a request that died before launching expires after
    `abandoned_after`, and the next request with the key launches."""

    def __init__(
        self,
        launcher: Launcher,
        store: IdempotencyStore,
        policy: PeriodPolicy,
        *,
        abandoned_after: timedelta = ABANDONED_AFTER,
        run_details: RunDetails | None = None,
        estimator: Estimator | None = None,
    ) -> None:
        self.launcher, self.store, self.policy = launcher, store, policy
        self.abandoned_after = abandoned_after
        self.run_details = run_details
        self.estimator = estimator

    def _export(self, key: str, raw: Any, caller: Caller = ANONYMOUS) -> ExportRequest:
        body = parse_body(raw)
        period_from, period_to = self.policy.resolve(
            body.period_from, body.period_to, allow_long_period=body.allow_long_period
        )
        token = None if caller is ANONYMOUS else caller.name
        return ExportRequest(period_from, period_to, body.generate_summary, key, token)

    def dry_run(self, raw: Any) -> Response:
        try:
            export = self._export("", raw)
        except PeriodError as exc:
            return _error(422, str(exc))
        if self.estimator is None:
            return _error(503, "dry runs need Bitrix24 credentials in the API's environment")
        return _json(200, {"dry_run": True, **self.estimator(export.period_from, export.period_to)})

    def start(self, key: str, raw: Any, caller: Caller = ANONYMOUS) -> Response | InFlight:
        """`key` as stored: the client's key in its token's space (`tokens.scoped_key`)."""
        if isinstance(raw, dict) and raw.get("dry_run") is True:
            return self.dry_run(raw)
        hash_ = request_hash(raw)
        # A known key answers first: its request was valid when it was made, even if
        # "today" has moved on since (defaults, the 90-day limit).
        known = self.store.get(key)
        if known is None:
            try:
                export = self._export(key, raw, caller)
            except PeriodError as exc:
                return _error(422, str(exc))
            known = self.store.reserve(key, hash_)  # the database picks one winner
            if known is None:
                return self._launch(key, export, raw)
        return self.answer_known(key, hash_, known, raw, caller)

    def answer_known(
        self, key: str, hash_: str, known: StoredKey, raw: Any, caller: Caller = ANONYMOUS
    ) -> Response | InFlight:
        """The stored answer of a key; for a key in flight, its run once it exists."""
        if known.request_hash != hash_:
            return _error(422, "this Idempotency-Key was used with a different request body")
        if known.completed:
            return _replay(known.status_code or 500, known.response_body or b"")
        run_id = self.launcher.find(key)
        if run_id is not None:
            return self._bound(key, run_id)
        if self.store.take_over(key, hash_, self.abandoned_after):
            try:
                export = self._export(key, raw, caller)
            except PeriodError as exc:
                self.store.release(key)
                return _error(422, str(exc))
            return self._launch(key, export, raw)
        return InFlight(key, hash_, raw, caller)

    def poll(self, pending: InFlight) -> Response | InFlight:
        """One more look at a key in flight."""
        known = self.store.get(pending.key)
        if known is None:  # its launch failed and released it: the client may retry
            return _error(409, "the first request with this key failed; retry it", _RETRY)
        return self.answer_known(
            pending.key, pending.request_hash, known, pending.raw, pending.caller
        )

    def _launch(self, key: str, export: ExportRequest, raw: Any) -> Response:
        try:
            run_id = self.launcher.launch(export)
        except Exception as exc:
            # A launch that timed out on our side may have gone through: bind the key to
            # that run instead of freeing it for a second one.
            run_id = self.launcher.find(key)
            if run_id is None:
                self.store.release(key)
                if isinstance(exc, LaunchError):
                    return _error(503, str(exc))
                raise
        return self._bound(key, run_id, export, self._defaults(raw))

    def _defaults(self, raw: Any) -> dict[str, str]:
        """What the server chose for the ends the request left out, said in the answer."""
        given = raw if isinstance(raw, dict) else {}
        chosen = {}
        if given.get("period_to") is None:
            chosen["period_to"] = "not given: the last complete day (yesterday, portal time)"
        if given.get("period_from") is None:
            chosen["period_from"] = (
                f"not given: {self.policy.default_days} days before period_to, or before "
                "today when period_to is not given either"
            )
        return chosen

    def _bound(
        self,
        key: str,
        run_id: str,
        export: ExportRequest | None = None,
        defaults: dict[str, str] | None = None,
    ) -> Response:
        if export is not None:
            period = {"from": export.period_from.isoformat(), "to": export.period_to.isoformat()}
        else:
            state = self.launcher.status(run_id)
            tags = state.tags if state else {}
            period = {"from": tags.get(RANGE_START_TAG), "to": tags.get(RANGE_END_TAG)}
        payload: dict[str, Any] = {
            "run_id": run_id,
            "period": period,
            "status_url": f"{TASK_PATH}/{run_id}",
        }
        if defaults:
            payload["defaults"] = defaults
        content = _dumps(payload)
        self.store.complete(key, 202, content)
        return Response(content=content, status_code=202, media_type="application/json")

    def status(self, run_id: str, caller: Caller = ANONYMOUS) -> Response:
        """Any run with export:read; with export:run only, the runs its token launched,
        without the files' addresses."""
        state = self.launcher.status(run_id) if _is_run_id(run_id) else None
        if state is None:
            return _error(404, f"no call export run {run_id[:64]!r}")
        reads_all = caller.may(EXPORT_READ)
        if not reads_all and state.tags.get(TOKEN_TAG) != caller.name:
            return denied(403, "insufficient_scope", EXPORT_READ)
        summary = state.tags.get(SUMMARY_TAG)
        body: dict[str, Any] = {
            "run_id": state.run_id,
            "status": state.status,
            "period": {
                "from": state.tags.get(RANGE_START_TAG),
                "to": state.tags.get(RANGE_END_TAG),
            },
            "generate_summary": None if summary is None else summary == "true",
            "created_at": _iso(state.created_at),
            "started_at": _iso(state.started_at),
            "finished_at": _iso(state.finished_at),
        }
        if self.run_details is not None:
            details = self.run_details(state)
            if not reads_all:
                details.pop("artifacts", None)
            body |= details
        return _json(200, body)


async def _bounded_body(request: Request) -> bytes | Response:
    """The body, or 413 past MAX_BODY_BYTES (read no further: a client may send GBs)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _error(413, f"the body may have at most {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _error(413, f"the body may have at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    launcher: Launcher,
    store: IdempotencyStore,
    *,
    policy: PeriodPolicy | None = None,
    metrics_registry: CollectorRegistry | None = None,
    replay_wait_sec: float = 10.0,
    run_details: RunDetails | None = None,
    estimator: Estimator | None = None,
    tokens: TokenCheck | None = None,
    journal: AuditJournal | None = None,
) -> FastAPI:
    """The API over a launcher and an idempotency store (both injectable for tests).

    `tokens`: who may do what (bearer tokens); None serves everyone as `ANONYMOUS`, which
    `serve` allows on loopback only. `journal`: every export request and run read goes there."""
    tasks = ExportTasks(
        launcher,
        store,
        policy or PeriodPolicy(),
        run_details=run_details,
        estimator=estimator,
    )
    registry = metrics_registry or CollectorRegistry(auto_describe=False)
    app = FastAPI(title="calltexts", version="1")

    def caller_of(request: Request) -> Caller | Response:
        return ANONYMOUS if tokens is None else tokens.caller(request)

    def audit(
        event: str, request: Request, who: Caller | Response, answer: Response, **fields: Any
    ) -> None:
        if journal is None:
            return
        try:
            journal.record(_audit_event(event, request, who, answer, **fields))
        except Exception as exc:  # the answer stands; the failure is loud in the log
            log.error("audit journal: cannot record a %s: %s", event, type(exc).__name__)

    async def start(request: Request, caller: Caller) -> tuple[Response, str | None, Any]:
        key = _idempotency_key(request)
        if isinstance(key, Response):
            return key, None, None
        raw_body = await _bounded_body(request)
        if isinstance(raw_body, Response):
            return raw_body, key, None
        try:
            raw = json.loads(raw_body) if raw_body.strip() else {}
        except (ValueError, RecursionError):  # a body nested 100,000 deep is not JSON to us
            return _error(400, "the body is not valid JSON"), key, None
        # Off the event loop, so that concurrent requests with one key race on the database;
        # a key in flight is awaited here, holding no worker thread between looks.
        answer = await run_in_threadpool(tasks.start, scoped_key(caller, key), raw, caller)
        deadline = time.monotonic() + replay_wait_sec
        while isinstance(answer, InFlight):
            if time.monotonic() >= deadline:
                busy = _error(409, "a request with this key is still being processed", _RETRY)
                return busy, key, raw
            await asyncio.sleep(REPLAY_POLL_SEC)
            answer = await run_in_threadpool(tasks.poll, answer)
        return answer, key, raw

    @app.post(TASK_PATH, status_code=202, openapi_extra=_BODY_SCHEMA)
    async def start_export(request: Request) -> Response:
        caller = caller_of(request)
        allowed = require(caller, EXPORT_RUN)
        key, raw = None, None
        if isinstance(allowed, Response):
            answer = allowed
        else:
            answer, key, raw = await start(request, allowed)
        event = "export_estimate" if isinstance(raw, dict) and raw.get("dry_run") else "export"
        await run_in_threadpool(audit, event, request, caller, answer, key=key, raw=raw)
        return answer

    # Sync handlers run in FastAPI's thread pool: the instance and the database block.
    @app.get(TASK_PATH + "/{run_id}")
    def export_status(run_id: str, request: Request) -> Response:
        caller = caller_of(request)
        if isinstance(caller, Response):
            answer = caller
        elif not (caller.may(EXPORT_READ) or caller.may(EXPORT_RUN)):
            answer = denied(403, "insufficient_scope", EXPORT_READ)
        else:
            answer = tasks.status(run_id, caller)
        run = run_id if _is_run_id(run_id) else None
        audit("run_read", request, caller, answer, run_id=run)
        return answer

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        caller = require(caller_of(request), METRICS_READ)
        if isinstance(caller, Response):
            return caller
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            with store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unreachable: %s", type(exc).__name__)
            return _json(503, {"status": "error", "database": "unreachable"})
        return _json(200, {"status": "ok"})

    return app


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _audit_event(
    event: str,
    request: Request,
    caller: Caller | Response,
    answer: Response,
    *,
    key: str | None = None,
    raw: Any = None,
    run_id: str | None = None,
) -> AuditEvent:
    """What the journal keeps of one request: the caller's token name (never the token),
    its address, the period and flags asked for, and the answer (never the body's text)."""
    outcome = str(answer.status_code)
    challenge = answer.headers.get("www-authenticate", "")
    if 'error="' in challenge:
        outcome += " " + challenge.split('error="', 1)[1].split('"', 1)[0]
    if answer.headers.get(REPLAYED_HEADER):
        outcome += " replayed"
    period: dict[str, Any] = {}
    if answer.status_code in (200, 202):
        answered = json.loads(bytes(answer.body))
        run_id = answered.get("run_id") or run_id
        period = answered.get("period") or {}
    asked = raw if isinstance(raw, dict) else {}
    first = period.get("from") or asked.get("period_from")
    last = period.get("to") or asked.get("period_to")
    summaries = asked.get("generate_summary")
    return AuditEvent(
        event,
        caller.name if isinstance(caller, Caller) else "-",
        "api",
        outcome,
        client=request.client.host if request.client else None,
        run_id=run_id if isinstance(run_id, str) and _is_run_id(run_id) else None,
        # only what has the shape of a day: the journal quotes nothing a client typed
        period_from=first if isinstance(first, str) and _DAY.fullmatch(first) else None,
        period_to=last if isinstance(last, str) and _DAY.fullmatch(last) else None,
        summaries=summaries if isinstance(summaries, bool) else None,
        idempotency_key=key,
    )


def _is_run_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
