"""`calltexts dev` from a fresh home: UI + daemon + API + sandbox, and a run launched through
the API that the daemon carries out; a busy port is one line naming the option."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from calltexts_assets.ops.cli import main
from calltexts_assets.settings import portal_today
from calltexts_sandbox.server import free_port

REPO = Path(__file__).resolve().parents[2]


def test_a_busy_port_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dev", "--ui-port", str(port), "--api-port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"calltexts dev: port {port} (the Dagster UI) is in use: choose another with --ui-port"
    )


def _wait_for(url: str, deadline: float, process: subprocess.Popen[bytes], log: Path) -> None:
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-4000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered:\n{log.read_text()[-4000:]}")


def _start_dev(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """`calltexts dev` in a session of its own, on free loopback ports, from the repository
    (whose dagster.yaml is not DAGSTER_HOME's), once its API and UI answer."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    ui_port, api_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BITRIX24_", "OPENAI_", "CHATGPT_", "CALLTEXTS_", "DAGSTER_"))
    }
    env |= {
        "DAGSTER_HOME": str(dagster_home),
        "CALLTEXTS_HOME": str(tmp_path / "home"),
        "CALLTEXTS_RETRY_SCALE": "0.001",
    }
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "calltexts_assets.ops.cli", "dev", "--days", "3",
             "--calls-per-day", "3", "--ui-port", str(ui_port), "--api-port", str(api_port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        _wait_for(f"http://127.0.0.1:{api_port}/healthz", deadline, process, log)
        _wait_for(f"http://127.0.0.1:{ui_port}/server_info", deadline, process, log)
    except BaseException:
        _stop(process)
        raise
    return process, ui_port, api_port, log


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    process, ui_port, api_port, log = _start_dev(tmp_path)
    try:
        yield f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{api_port}", log
    finally:
        _stop(process)


def _alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(process.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return left


def _with_dagster_home(dagster_home: Path) -> list[psutil.Process]:
    """Every process on the machine whose environment names this test's DAGSTER_HOME."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("DAGSTER_HOME") == str(dagster_home):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name
)
def test_a_stop_signal_to_calltexts_dev_stops_everything_it_started(
    tmp_path: Path, signum: signal.Signals
) -> None:
    process, ui_port, api_port, log = _start_dev(tmp_path)
    try:
        started = psutil.Process(process.pid).children(recursive=True)
        commands = " | ".join(" ".join(p.cmdline()) for p in started)
        for part in ("dagster dev", "dagster_webserver", "dagster._daemon"):
            assert part in commands, commands
        assert _with_dagster_home(tmp_path / "dagster_home")

        os.kill(process.pid, signum)  # to `calltexts dev` alone, as a supervisor sends it
        assert process.wait(timeout=120) == 0, log.read_text()[-4000:]

        assert _alive(started) == []
        assert _alive(_with_dagster_home(tmp_path / "dagster_home")) == []
        listening = {
            c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN
        }
        assert not listening & {ui_port, api_port}
    finally:
        _stop(process)
        for leftover in _with_dagster_home(tmp_path / "dagster_home"):
            leftover.kill()
    # `dagster dev` ran in DAGSTER_HOME, without warnings about its dagster.yaml or `dg dev`
    output = log.read_text()
    assert "Launching Dagster services" in output, output[-4000:]
    assert "Found a dagster instance configuration" not in output
    assert "No dagster instance configuration file" not in output
    assert "superseded" not in output and "dg dev" not in output


@pytest.mark.slow
def test_dev_serves_the_ui_the_api_and_the_sandbox_and_the_daemon_runs_the_export(
    dev: tuple[str, str, Path],
) -> None:
    ui, api, log = dev
    output = log.read_text()
    first = portal_today() - timedelta(days=3)
    last = portal_today() - timedelta(days=1)
    assert f"Dagster UI:  {ui}" in output and f"API:         {api}/tasks/call_export" in output
    assert f"SANDBOX calls: {first} .. {last}, 3 a day" in output

    launched = httpx.post(
        f"{api}/tasks/call_export",
        json={"period_from": last.isoformat(), "period_to": last.isoformat()},
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=60,
    )
    assert launched.status_code == 202, launched.text
    status_url = f"{api}{launched.json()['status_url']}"
    deadline = time.monotonic() + 240
    answer: dict = {"status": ""}
    while time.monotonic() < deadline and answer["status"] not in ("SUCCESS", "FAILURE"):
        time.sleep(2)
        answer = httpx.get(status_url, timeout=10).json()
    assert answer["status"] == "SUCCESS", log.read_text()[-4000:]
    # the status tells the period's progress, cost and where the files are
    progress = answer["progress"]
    assert progress["calls"] == 3 and progress["finished"] == 3 and progress["percent"] == 100
    assert progress["transcribed"] >= 1 and progress["cost_usd"] > 0
    label = f"{last}_{last}"
    assert answer["artifacts"]["registry"].endswith(f"registry/calls_{label}.csv")
    assert answer["artifacts"]["report_pdf"].endswith(f"reports/summary_{label}.pdf")
    assert Path(answer["artifacts"]["run_log"]).exists()
