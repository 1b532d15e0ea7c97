"""Run an ASGI app of the sandbox on a loopback port in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass
class RunningServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, public_host: str | None = None
) -> RunningServer:
    """Start `app` with uvicorn on host:port (0 picks a free port); returns once it accepts.
    Loopback only, unless `public_host` names the host clients reach it by (a container of
    the Docker stack, where the sandbox is a service on the stack's network).

    The socket is bound here and handed to uvicorn: a port picked first and bound later
    could be taken in between by another process of a busy machine."""
    if host not in ("127.0.0.1", "localhost", "::1") and not public_host:
        raise ValueError("the sandbox only listens on loopback")
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"sandbox-{port}", daemon=True
    )
    thread.start()
    # Only a failure waits this long: a loaded machine may take seconds to start a thread.
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"sandbox server on {host}:{port} did not start")
        time.sleep(0.01)
    return RunningServer(url=f"http://{public_host or host}:{port}", server=server, thread=thread)
