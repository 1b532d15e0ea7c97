"""openai 3.x (the maintained line) sends every request through the project's own httpx
client: through the one proxy setting (CHATGPT_PROXY_URL) to a real server on loopback, and
within reach of respx (docs/specs/openai_models.md §6)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import openai
import pytest

from calltexts_assets.clients.model_lifecycle import WARN, configured_models
from calltexts_assets.clients.openai_base import OpenAIConnection
from calltexts_assets.clients.whisper import WhisperClient
from calltexts_sandbox.server import RunningServer
from calltexts_sandbox.stt.app import SttEmulator


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain HTTP forward proxy: it records each absolute-URI request and relays it."""

    seen: ClassVar[list[str]] = []

    def _relay(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        skip = {"host", "content-length", "proxy-connection", "connection"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        answer = httpx.request(self.command, self.path, content=body, headers=headers)
        self.send_response(answer.status_code)
        for name in ("content-type",):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _relay

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def proxy() -> Iterator[str]:
    _ForwardProxy.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def stt_server() -> Iterator[RunningServer]:
    with SttEmulator(api_key="sk-line").serve() as running:
        yield running


def test_the_sdk_is_the_maintained_line() -> None:
    assert int(openai.__version__.split(".")[0]) >= 3


def test_requests_go_through_the_one_proxy_setting(proxy: str, stt_server: RunningServer) -> None:
    connection = OpenAIConnection(
        api_key="sk-line", base_url=f"{stt_server.url}/v1", proxy_url=proxy
    )
    stt = WhisperClient(connection, model="whisper-1")
    notices = configured_models(stt, {"WHISPER_MODEL": "whisper-1"}, date(2027, 1, 10))
    assert notices[0].status == WARN and notices[0].shutdown == date(2027, 2, 26)
    assert _ForwardProxy.seen == [f"GET {stt_server.url}/v1/models"]
    # The model list goes without the SDK (issue #26); the SDK's own requests take the same way.
    listed = stt.client().models.list()
    assert "whisper-1" in {model.id for model in listed.data}
    assert _ForwardProxy.seen == [f"GET {stt_server.url}/v1/models"] * 2
    stt.close()
