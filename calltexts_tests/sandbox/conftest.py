"""The sandbox portal served over loopback for its tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette

from calltexts_sandbox.portal.app import create_portal_app
from calltexts_sandbox.portal.state import PortalConfig
from calltexts_sandbox.runtime import serve_portal
from calltexts_tests.sandbox.portal_support import Served, fake_audio


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(rows: list[dict[str, Any]] | None = None, **kwargs: Any) -> Served:
        kwargs.setdefault("audio_renderer", fake_audio)
        kwargs.setdefault("config", PortalConfig(rate_per_sec=0))
        app: Starlette = create_portal_app(rows, **kwargs)
        server, storage = serve_portal(app)
        served = Served(server, storage, app.state.portal)
        started.append(served)
        return served

    yield start
    for served in started:
        served.server.stop()
        served.storage.stop()
