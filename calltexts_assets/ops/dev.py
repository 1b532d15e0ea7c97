"""`calltexts dev`: the Dagster UI and daemon, the HTTP API launching on that UI, and the
sandbox when no Bitrix24 credentials are set: what a newcomer starts from a fresh clone."""

from __future__ import annotations

import socket
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace
from datetime import date, timedelta

from calltexts_assets.settings import Settings, load_settings, portal_today

DEV_SANDBOX_DAYS = 60  # the default export period, so README's examples have calls


class PortsBusy(Exception):
    """One line per port in use, naming the option that changes it."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(ui_port: int, api_port: int) -> None:
    busy = [
        f"port {port} ({what}) is in use: choose another with {option}"
        for port, what, option in (
            (ui_port, "the Dagster UI", "--ui-port"),
            (api_port, "the API", "--api-port"),
        )
        if port_in_use(port)
    ]
    if ui_port == api_port:
        busy.append(f"--ui-port and --api-port are both {ui_port}: give them different ports")
    if busy:
        raise PortsBusy("\n".join(busy))


def run_dev(
    settings: Settings,
    *,
    ui_port: int,
    api_port: int,
    sandbox_days: int = DEV_SANDBOX_DAYS,
    calls_per_day: int = 20,
    seed: int = 7,
) -> int:
    """Blocks until `dagster dev` exits (Ctrl-C)."""
    from calltexts_assets.api import build_app
    from calltexts_sandbox.runtime import sandbox_environment, serve_in_thread

    check_ports(ui_port, api_port)
    ui_url = f"http://127.0.0.1:{ui_port}"
    first: date = portal_today(settings.timezone) - timedelta(days=sandbox_days)
    sandboxed = not settings.credentials_configured
    sandbox = (
        sandbox_environment(seed=seed, start=first, days=sandbox_days, calls_per_day=calls_per_day)
        if sandboxed
        else nullcontext()
    )
    with sandbox as running:
        # The sandbox pointed the environment at itself: read it again; the API launches
        # its runs on the UI started here.
        api_settings = replace(load_settings(), dagster_webserver_url=ui_url)
        with serve_in_thread(build_app(api_settings), port=api_port) as api:
            print(f"Dagster UI:  {ui_url}")
            print(f"API:         {api.url}/tasks/call_export (metrics at {api.url}/metrics)")
            if running is not None:
                last = first + timedelta(days=sandbox_days - 1)
                print(f"SANDBOX Bitrix24 portal: {running.portal_url}")
                print(f"SANDBOX STT server:      {running.stt_url}")
                print(f"SANDBOX calls: {first} .. {last}, {calls_per_day} a day (seed {seed})")
            command = [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-m",
                "calltexts_assets.definitions",
                "--host",
                "127.0.0.1",
                "--port",
                str(ui_port),
            ]
            return subprocess.call(command)
