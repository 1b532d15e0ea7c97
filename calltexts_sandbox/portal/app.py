"""The emulated Bitrix24 portal over HTTP: Starlette ASGI apps on the state of `portal.py`.

The portal (`create_portal_app`):
- `/rest/<user_id>/<code>/<method>.json` (webhook) and `/rest/<method>.json` with `auth`
  (OAuth; in the query or the body). Params from the query string, a form or a JSON body,
  Bitrix-style nested keys. Methods: `voximplant.statistic.get`, `disk.file.get`, `batch`,
  `scope`, `server.time`. A wrong webhook is INVALID_CREDENTIALS, no credentials
  NO_AUTH_FOUND, an unknown token invalid_token, an expired one expired_token (401 each);
  a method outside the granted scopes insufficient_scope (inside a batch: that command).
- `/rest/download.json?auth=..&token=disk|..` and `/rest/<user>/<code>/download/?token=..`:
  the Drive files' DOWNLOAD_URL, in the leaky bucket unless `download_metered` is off.
- `/oauth/token/`: the authorization server's refresh (point BITRIX24_OAUTH_SERVER here).
- `/_sandbox/faults` (GET list, POST add, DELETE clear), `/_sandbox/stats` (GET),
  `/_sandbox/reset-stats` (POST), `/_sandbox/seed` (POST `{seed,start,days,calls_per_day,tz}`
  or `{rows:[...]}`). The same controls exist in Python on `app.state.portal` (a `Portal`).
The storage host (`create_storage_app`, served on another loopback host name): the
CALL_RECORD_URL links, signed ones refused (403) once their `expires` is past.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calltexts_sandbox.calls.seed import SeedSpec
from calltexts_sandbox.portal.errors import ApiError, access_denied
from calltexts_sandbox.portal.faults import RECORDS, Fault, fault_response, json_response
from calltexts_sandbox.portal.files import (
    AudioRenderer,
    DeliberateTruncation,
    TruncatedBody,
    audio_response,
    drive_record_id,
    renderer_for,
)
from calltexts_sandbox.portal.params import parse_params
from calltexts_sandbox.portal.state import Portal, PortalConfig

# -- HTTP ----------------------------------------------------------------------------------


class _QuietTruncation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DeliberateTruncation)


_quiet = _QuietTruncation()


async def _read_params(request: Request) -> dict[str, Any]:
    pairs: list[tuple[str, Any]] = list(request.query_params.multi_items())
    merged = parse_params(pairs)
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError as exc:
                raise ApiError(400, "INVALID_REQUEST", "body is not valid JSON") from exc
            if not isinstance(body, dict):
                raise ApiError(400, "INVALID_REQUEST", "body must be a JSON object")
            merged.update(body)
        elif "form" in ctype:
            form = await request.form(max_fields=10_000)
            merged.update(parse_params((k, v) for k, v in form.multi_items() if isinstance(v, str)))
    return merged


def _segments(path: str) -> tuple[list[str], str]:
    segments = [s for s in path.split("/") if s]
    method = segments[-1].lower().removesuffix(".json") if segments else ""
    return [*segments[:-1], method], method


async def _api(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    segments, method = _segments(request.path_params["path"])
    if method == "download":
        return await _drive_download(request, portal, segments)
    portal._count(method)
    try:
        params = await _read_params(request)
        endpoints = {method}
        if method == "batch" and isinstance(params.get("cmd"), dict):
            endpoints |= {
                str(q).partition("?")[0].strip().lower().removesuffix(".json")
                for q in params["cmd"].values()
            }
        caller = portal.caller(segments, params, str(request.base_url))
        # A refused request consumes no fault: the fault plan stays what the test wrote.
        admitted = portal._admit(caller.app_key)
        delay, fault = portal._take_faults(endpoints, None) if admitted else (0.0, None)
        if delay:
            await asyncio.sleep(delay)
        if not admitted:
            response = json_response(
                503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
            )
        elif fault is not None:
            response = fault_response(fault)
        elif method == "batch":
            started = time.time()
            body = await run_in_threadpool(portal.batch, params, caller)
            body["time"] = portal.limiter.time_block(caller.app_key, "batch", started)
            response = json_response(200, body)
        else:
            body = await run_in_threadpool(portal.call_method, method, params, caller)
            response = json_response(200, body)
    except ApiError as exc:
        response = json_response(exc.status, exc.body())
    portal._count_response(response.status_code)
    return response


async def _serve_recording(portal: Portal, record_id: str | None) -> Response:
    """The recording's bytes, with the faults injected on `records`."""
    portal._count(RECORDS)
    delay, fault = portal._take_faults({RECORDS}, record_id)
    if delay:
        await asyncio.sleep(delay)
    if fault is not None and fault.kind != "truncate":
        response = fault_response(fault)
        portal._count_response(response.status_code)
        return response
    found = await run_in_threadpool(portal.recording, record_id) if record_id else None
    if found is None:
        response = json_response(404, {"error": "NOT_FOUND", "error_description": "File not found"})
        portal._count_response(response.status_code)
        return response
    _row, fmt, audio = found
    portal._count_response(200)
    if fault is not None:
        data = audio.read_bytes() if isinstance(audio, Path) else audio
        return TruncatedBody(data, fault.truncate_at, fmt)  # type: ignore[return-value]
    return audio_response(audio, fmt, f"{record_id}.{fmt}")


async def _drive_download(request: Request, portal: Portal, segments: list[str]) -> Response:
    """A Drive file's DOWNLOAD_URL: the caller's credentials are checked as for any REST
    call (an OAuth link dies with its token), then the link's signature (docs §2). Counted
    as `download` (a REST request) and, served or not, as one of the `records`; it takes a
    place in the leaky bucket only when `download_metered` (the default)."""
    portal._count("download")
    try:
        params = dict(request.query_params)
        caller = portal.caller([*segments[:-1], "download"], params, str(request.base_url))
        # The download handler is a REST call: metered unless the portal is told it is not
        # (`PortalConfig.download_metered`; docs/specs/bitrix24_downloads.md).
        if portal.config.download_metered and not portal._admit(caller.app_key):
            return json_response(
                503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
            )
        token = params.get("token", "")
        record_id = drive_record_id(token)
        auth = caller.auth
        identity = f"{auth['user']}|{auth['code']}" if caller.webhook else auth["token"]
        signature = token.rsplit("|", 1)[-1]
        query = token.split("|")[1] if record_id else ""
        if record_id is None or not portal.signer.valid(signature, "disk", query, identity):
            error = access_denied()
            error.description = "Access denied! Link check failed"
            raise error
    except ApiError as exc:
        portal._count(RECORDS)
        response = json_response(exc.status, exc.body())
        portal._count_response(response.status_code)
        return response
    return await _serve_recording(portal, record_id)


async def _oauth_token(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    portal._count("oauth/token")
    params = await _read_params(request)
    status, body = portal.oauth.refresh(params)
    if "access_token" in body:
        base = (portal.config.public_url or str(request.base_url)).rstrip("/")
        body["client_endpoint"] = f"{base}/rest/"
        body["server_endpoint"] = portal.config.oauth_server_endpoint or f"{base}/rest/"
    response = json_response(status, body)
    portal._count_response(status)
    return response


async def _storage(request: Request) -> Response:
    """The storage host: a link's `record_id` names the recording; a signed link is
    refused once it has expired or when its token does not match (an S3-like 403)."""
    portal: Portal = request.app.state.portal
    record_id = request.query_params.get("record_id")
    if "token" in request.query_params or "expires" in request.query_params:
        token = request.query_params.get("token", "")
        try:
            expires = int(request.query_params.get("expires", "0"))
        except ValueError:
            expires = 0
        if expires <= time.time() or not portal.signer.valid(token, "storage", record_id, expires):
            portal._count(RECORDS)
            portal._count_response(403)
            return Response(
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                status_code=403,
                media_type="application/xml",
            )
    return await _serve_recording(portal, record_id)


# -- admin ---------------------------------------------------------------------------------


async def _admin_faults(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    try:
        if request.method == "DELETE":
            portal.clear_faults()
        elif request.method == "POST":
            payload = json.loads(await request.body() or b"{}")
            if isinstance(payload, dict) and "faults" in payload:
                if payload.get("replace"):
                    portal.clear_faults()
                payload = payload["faults"]
            for item in payload if isinstance(payload, list) else [payload]:
                portal.add_fault(item)
    except (ValueError, TypeError) as exc:
        return json_response(400, {"error": "INVALID_FAULT", "error_description": str(exc)})
    return json_response(200, {"faults": [asdict(f) for f in portal.faults]})


async def _admin_stats(request: Request) -> Response:
    return json_response(200, request.app.state.portal.stats())


async def _admin_reset_stats(request: Request) -> Response:
    request.app.state.portal.reset_stats()
    return json_response(200, {"ok": True})


async def _admin_seed(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    try:
        payload = json.loads(await request.body() or b"{}")
        if "rows" in payload:
            count = portal.set_rows(payload["rows"])
        else:
            spec = SeedSpec(
                seed=int(payload.get("seed", 1)),
                start=date.fromisoformat(str(payload["start"])),
                days=int(payload.get("days", 1)),
                calls_per_day=int(payload.get("calls_per_day", 100)),
                tz=str(payload.get("tz", portal.config.tz)),
            )
            count = await run_in_threadpool(portal.seed, spec)
    except (KeyError, ValueError, TypeError) as exc:
        return json_response(400, {"error": "INVALID_SEED", "error_description": str(exc)})
    # with a recording (a Drive file or a link): what an export downloads and transcribes
    recorded = sum(1 for r in portal.rows if r.get("RECORD_FILE_ID") or r.get("CALL_RECORD_URL"))
    return json_response(200, {"rows": count, "recorded": recorded})


def create_portal_app(
    rows: Iterable[Mapping[str, Any]] | None = None,
    *,
    seed: SeedSpec | None = None,
    config: PortalConfig | None = None,
    faults: Iterable[Fault | Mapping[str, Any]] = (),
    audio_renderer: AudioRenderer | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The portal emulator; its state and controls are `app.state.portal` (a `Portal`).

    Data comes from `rows` (statistic rows) or a `seed` spec. `audio_renderer(call_id,
    duration_sec, stereo, fmt) -> bytes` defaults to the sandbox's tone renderer.
    """
    config = config or PortalConfig()
    if rows is None:
        rows = seed.rows() if seed is not None else []
    portal = Portal(rows, config, faults, audio_renderer or renderer_for(config.content), clock)
    logging.getLogger("uvicorn.error").addFilter(_quiet)  # truncation faults are on purpose
    app = Starlette(
        routes=[
            Route("/rest/{path:path}", _api, methods=["GET", "POST"]),
            Route("/oauth/token/", _oauth_token, methods=["GET", "POST"]),
            Route("/_sandbox/faults", _admin_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sandbox/stats", _admin_stats, methods=["GET"]),
            Route("/_sandbox/reset-stats", _admin_reset_stats, methods=["POST"]),
            Route("/_sandbox/seed", _admin_seed, methods=["POST"]),
        ]
    )
    app.state.portal = portal
    return app


def create_storage_app(portal: Portal) -> Starlette:
    """The storage host of the portal's CALL_RECORD_URL links (serve it on its own host
    name and set `portal.config.storage_url` to it)."""
    app = Starlette(routes=[Route("/{path:path}", _storage, methods=["GET"])])
    app.state.portal = portal
    return app


def portal_of(app: Starlette) -> Portal:
    return app.state.portal
