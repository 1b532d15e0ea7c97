"""The trigger API: start an export over a period, follow it, scrape its metrics."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from calltexts_assets.api.body import CallExportBody, parse_body
from calltexts_assets.api.idempotency import IdempotencyStore, StoredKey, request_hash
from calltexts_assets.api.launcher import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SUMMARY_TAG,
    ExportRequest,
    Launcher,
    LaunchError,
)
from calltexts_assets.core.periods import PeriodError, PeriodPolicy
from calltexts_assets.core.runlog import scrubbed_logger

log = scrubbed_logger(__name__)

TASK_PATH = "/tasks/call_export"
REPLAYED_HEADER = "Idempotent-Replayed"
_RETRY = {"Retry-After": "5"}


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


class ExportTasks:
    """What the task endpoints do, over a launcher and an idempotency store. Blocking (the
    store and the launcher talk to databases): the routes run it off the event loop."""

    def __init__(
        self,
        launcher: Launcher,
        store: IdempotencyStore,
        policy: PeriodPolicy,
        replay_wait_sec: float,
    ) -> None:
        self.launcher, self.store, self.policy = launcher, store, policy
        self.replay_wait_sec = replay_wait_sec

    def answer_known(self, key: str, hash_: str, known: StoredKey) -> Response:
        """The stored answer of a key, once its first request has one."""
        if known.request_hash != hash_:
            return _error(422, "this Idempotency-Key was used with a different request body")
        if not known.completed:
            waited = self.store.wait_completed(key, self.replay_wait_sec)
            if waited is None:  # its launch failed and released it: the client may retry
                return _error(409, "the first request with this key failed; retry it", _RETRY)
            known = waited
        if known.status_code is None or known.response_body is None:
            return _error(409, "a request with this key is still being processed", _RETRY)
        return _replay(known.status_code, known.response_body)

    def start(self, request: Request, raw_body: bytes) -> Response:
        key = _idempotency_key(request)
        if isinstance(key, Response):
            return key
        try:
            raw = json.loads(raw_body) if raw_body.strip() else {}
        except ValueError:
            return _error(400, "the body is not valid JSON")
        hash_ = request_hash(raw)
        # A known key answers first: its request was valid when it was made, even if
        # "today" has moved on since (defaults, the 90-day limit).
        known = self.store.get(key)
        if known is not None:
            return self.answer_known(key, hash_, known)
        try:
            body = parse_body(raw)
            period_from, period_to = self.policy.resolve(
                body.period_from, body.period_to, allow_long_period=body.allow_long_period
            )
        except PeriodError as exc:
            return _error(422, str(exc))
        known = self.store.reserve(key, hash_)  # the database picks one winner among racers
        if known is not None:
            return self.answer_known(key, hash_, known)
        return self._launch(key, ExportRequest(period_from, period_to, body.generate_summary, key))

    def _launch(self, key: str, export: ExportRequest) -> Response:
        try:
            run_id = self.launcher.launch(export)
        except LaunchError as exc:
            self.store.release(key)
            return _error(503, str(exc))
        except Exception:
            self.store.release(key)
            raise
        payload = {
            "run_id": run_id,
            "period": {"from": export.period_from.isoformat(), "to": export.period_to.isoformat()},
            "status_url": f"{TASK_PATH}/{run_id}",
        }
        content = _dumps(payload)
        self.store.complete(key, 202, content)
        return Response(content=content, status_code=202, media_type="application/json")

    def status(self, run_id: str) -> Response:
        state = self.launcher.status(run_id) if _is_run_id(run_id) else None
        if state is None:
            return _error(404, f"no call export run {run_id[:64]!r}")
        summary = state.tags.get(SUMMARY_TAG)
        return _json(
            200,
            {
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
            },
        )


def create_app(
    launcher: Launcher,
    store: IdempotencyStore,
    *,
    policy: PeriodPolicy | None = None,
    metrics_registry: CollectorRegistry | None = None,
    replay_wait_sec: float = 10.0,
) -> FastAPI:
    """The API over a launcher and an idempotency store (both injectable for tests)."""
    tasks = ExportTasks(launcher, store, policy or PeriodPolicy(), replay_wait_sec)
    registry = metrics_registry or CollectorRegistry(auto_describe=False)
    app = FastAPI(title="calltexts", version="1")

    @app.post(TASK_PATH, status_code=202, openapi_extra=_BODY_SCHEMA)
    async def start_export(request: Request) -> Response:
        raw_body = await request.body()
        # Off the event loop, so that concurrent requests with one key really race on the
        # database.
        return await run_in_threadpool(tasks.start, request, raw_body)

    # Sync handlers run in FastAPI's thread pool: the instance and the database block.
    @app.get(TASK_PATH + "/{run_id}")
    def export_status(run_id: str) -> Response:
        return tasks.status(run_id)

    @app.get("/metrics")
    def metrics() -> Response:
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


def _is_run_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
