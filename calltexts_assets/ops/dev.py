"""`calltexts dev`: the Dagster UI and daemon, the HTTP API launching on that UI, and the
sandbox when no Bitrix24 credentials are set: what a newcomer starts from a fresh clone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import nullcontext, suppress
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from calltexts_assets.settings import Settings, load_settings, portal_today

DEV_SANDBOX_DAYS = 60  # the default export period, so README's examples have calls

# Each stops `calltexts dev` and everything it started: Ctrl-C, a supervisor's SIGTERM, the
# terminal closing. The first asks `dagster dev` to stop its webserver and daemon; a second
# kills what is left.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# `dagster dev` is marked superseded by `dg dev` (dagster/_cli/dev.py, 1.13.27). With a target
# (`-m module`), `dg dev` calls the very same `dev_command_impl` (dagster_dg_cli/cli/dev.py):
# moving would only add dagster-dg-cli and dagster-dg-core to the lock, and a dg project
# layout, for the same processes. The warning is therefore silenced, for this one message.
_IGNORE_SUPERSEDED = "ignore:Function `dev_command` is superseded"


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
    content: str = "speech",
) -> int:
    """Blocks until `dagster dev` exits or this process is told to stop (STOP_SIGNALS)."""
    from calltexts_assets.api.server import build_app
    from calltexts_sandbox.runtime import available_content, sandbox_environment, serve_in_thread

    check_ports(ui_port, api_port)
    ui_url = f"http://127.0.0.1:{ui_port}"
    first: date = portal_today(settings.timezone) - timedelta(days=sandbox_days)
    sandboxed = not settings.credentials_configured
    if sandboxed:
        content, note = available_content(content)
        if note:
            print(note)
    sandbox = (
        sandbox_environment(
            seed=seed,
            start=first,
            days=sandbox_days,
            calls_per_day=calls_per_day,
            content=content,
        )
        if sandboxed
        else nullcontext()
    )
    with sandbox as running:
        # The sandbox pointed the environment at itself: read it again; the API launches
        # its runs on the UI started here.
        current = load_settings()
        api_settings = replace(current, dagster_webserver_url=ui_url)
        with serve_in_thread(build_app(api_settings), port=api_port) as api:
            print(f"Dagster UI:  {ui_url}")
            print(f"API:         {api.url}/tasks/call_export (metrics at {api.url}/metrics)")
            if running is not None:
                last = first + timedelta(days=sandbox_days - 1)
                print(f"SANDBOX Bitrix24 portal: {running.portal_url}")
                print(f"SANDBOX STT server:      {running.stt_url}")
                print(f"SANDBOX calls: {first} .. {last}, {calls_per_day} a day (seed {seed})")
            return run_dagster_dev(current, ui_port)


def dagster_dev_command(settings: Settings, ui_port: int) -> tuple[list[str], Path, dict[str, str]]:
    """The command, its working folder and environment. It runs in DAGSTER_HOME: `dagster dev`
    warns about a dagster.yaml in its working folder other than DAGSTER_HOME's (the
    repository's, copied there by `make dev`), and the instance reads DAGSTER_HOME's only.
    The code location keeps the folder `calltexts dev` was started in."""
    here = Path.cwd()
    command = [
        sys.executable, "-m", "dagster", "dev", "-m", "calltexts_assets.definitions",
        "-d", str(here), "--host", "127.0.0.1", "--port", str(ui_port),
    ]  # fmt: skip
    env = settings.child_environment()
    env["PYTHONWARNINGS"] = ",".join(filter(None, (env.get("PYTHONWARNINGS"), _IGNORE_SUPERSEDED)))
    home = Path(settings.dagster_home).resolve() if settings.dagster_home else None
    # A DAGSTER_HOME that is no folder: `dagster dev` itself says so, from here.
    return command, home if home and home.is_dir() else here, env


def run_dagster_dev(settings: Settings, ui_port: int) -> int:
    """Runs `dagster dev` in a process group of its own, stopped as a whole on STOP_SIGNALS:
    the webserver, the daemon and the code servers never outlive `calltexts dev`."""
    command, folder, env = dagster_dev_command(settings, ui_port)
    received: list[int] = []
    group: list[int] = []  # the child's, once started (a signal may come before)

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        # What a terminal's Ctrl-C does to a foreground group: `dagster dev` shuts its
        # services down in order. Asked again: no more waiting.
        for pid in group:
            _signal_group(pid, signal.SIGINT if len(received) == 1 else signal.SIGKILL)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        child = subprocess.Popen(command, cwd=folder, env=env, start_new_session=True)
        group.append(child.pid)
        if received:
            _signal_group(child.pid, signal.SIGINT)
        code = child.wait()
    finally:
        for pid in group:
            _signal_group(pid, signal.SIGKILL)  # whatever outlived `dagster dev`
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if received else code


def _signal_group(group: int, signum: int) -> None:
    with suppress(ProcessLookupError):  # the group is gone: nothing left to stop
        os.killpg(group, signum)
