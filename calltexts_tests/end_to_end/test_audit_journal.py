"""The audit journal after what users do: a CLI run, a UI run (a GraphQL launch on a real
webserver), an API run (a real API server with a token), a retention, a backup and its
restore into a fresh home: one line each, and no phone number anywhere in it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from dagster_graphql import DagsterGraphQLClient

from calltexts_assets.api.tokens import token_digest
from calltexts_assets.state.audit import audit_events
from calltexts_assets.state.ledger import database_engine
from calltexts_sandbox.runtime import Sandbox
from calltexts_sandbox.server import free_port
from calltexts_tests.support.child_run import REPO_ROOT, ChildLayout
from calltexts_tests.support.sandboxed import SANDBOX_START, make_sandbox, sandbox_child_env

TOKEN = "ctk_journal-test-secret"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = make_sandbox(tmp_path_factory.mktemp("cache"), days=3, calls_per_day=3)
    yield box
    box.stop()


def _wait_http(url: str, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer at {url}")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "calltexts_assets.ops.cli", *args],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def _rows(ledger_url: str) -> list[dict]:
    engine = database_engine(ledger_url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(audit_events))]
    engine.dispose()
    return rows


def _finished(client: DagsterGraphQLClient, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish")


def test_one_line_per_action_and_no_phone_number(sandbox: Sandbox, tmp_path: Path) -> None:
    layout = ChildLayout.under(tmp_path / "a")
    # No daemon here: the webserver starts each run itself, as the UI's "Launch run" does
    # under the default coordinator.
    with (layout.dagster_home / "dagster.yaml").open("a") as config:
        config.write(
            "run_coordinator:\n  module: dagster._core.run_coordinator\n"
            "  class: DefaultRunCoordinator\n"
        )
    token_line = f"journal-test:{token_digest(TOKEN)}:export:run,export:read"
    env = sandbox_child_env(sandbox, layout, extra={"CALLTEXTS_API_TOKENS": token_line})
    days = [(SANDBOX_START + timedelta(days=n)).isoformat() for n in range(3)]
    # 1. the CLI
    _cli(env, "run", "--from", days[0], "--to", days[0])
    # 2. the UI: a GraphQL launch on a real webserver (runs start at once: no run queue)
    ui_port, api_port = free_port(), free_port()
    env["DAGSTER_WEBSERVER_URL"] = f"http://127.0.0.1:{ui_port}"
    webserver = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-m", "calltexts_assets.definitions",
         "-h", "127.0.0.1", "-p", str(ui_port)],
        env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = subprocess.Popen(
        [sys.executable, "-m", "calltexts_assets.ops.cli", "api", "serve", "--port", str(api_port)],
        env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{ui_port}/server_info", webserver, "dagster-webserver")
        _wait_http(f"http://127.0.0.1:{api_port}/healthz", api, "the API")
        client = DagsterGraphQLClient("127.0.0.1", port_number=ui_port, timeout=120)
        ui_run = client.submit_job_execution(
            "calls_export", tags={RANGE_START: days[1], RANGE_END: days[1]}
        )
        assert _finished(client, ui_run) == "SUCCESS"
        # 3. the API, with its token
        answer = httpx.post(
            f"http://127.0.0.1:{api_port}/tasks/call_export",
            json={"period_from": days[0], "period_to": days[2]},
            headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": str(uuid.uuid4())},
            timeout=120,
        )
        assert answer.status_code == 202, answer.text
        api_run = answer.json()["run_id"]
        assert _finished(client, api_run) == "SUCCESS"
    finally:
        for process in (api, webserver):
            process.terminate()
            process.wait(timeout=60)
    # 4. retention, 5. a backup and its restore into a fresh home
    _cli(env, "retention")
    _cli(env, "backup", str(tmp_path / "backups"))
    (backup,) = (tmp_path / "backups").iterdir()
    fresh = ChildLayout.under(tmp_path / "b")
    env_b = sandbox_child_env(sandbox, fresh)
    _cli(env_b, "restore", str(backup))
    table = _cli(env_b, "audit", "--since", "1d").stdout
    print("\n" + table)

    original, rows = _rows(layout.ledger_url), _rows(fresh.ledger_url)
    kinds = sorted((r["event"], r["via"]) for r in rows)
    done = [("run_started", "cli"), ("run_started", "ui"), ("export", "api"), ("retention", "cli")]
    # The backup's line follows the copy, in the ledger it was taken of; the restored
    # ledger holds what the backup held, then the restore.
    assert sorted((r["event"], r["via"]) for r in original) == sorted([*done, ("backup", "cli")])
    assert kinds == sorted([*done, ("restore", "cli")]), kinds
    by_event = {(r["event"], r["via"]): r for r in rows}
    assert by_event[("export", "api")]["run_id"] == api_run
    assert by_event[("export", "api")]["actor"] == "journal-test"
    assert by_event[("run_started", "ui")]["run_id"] == ui_run
    assert by_event[("run_started", "cli")]["period_from"] == days[0]
    assert backup.name in by_event[("restore", "cli")]["detail"]
    lines = [
        json.loads(line)
        for path in sorted((fresh.home / "logs" / "audit").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert sorted((e["event"], e["via"]) for e in lines) == kinds
    assert len(table.strip().splitlines()) == 1 + len(rows)

    # No phone number anywhere: the table, the JSON lines, the printed table, in any spelling.
    numbers = {
        re.sub(r"\D", "", row[field])
        for row in sandbox.portal.rows
        for field in ("PHONE_NUMBER", "PORTAL_NUMBER")
        if len(re.sub(r"\D", "", row.get(field) or "")) >= 7
    }
    assert numbers
    journal = "\n".join(
        [
            str(rows + original),
            table,
            *(
                p.read_text()
                for home in (layout.home, fresh.home)
                for p in (home / "logs" / "audit").glob("*")
            ),
        ]
    )
    digits = re.sub(r"\D", "", journal)
    assert not [n for n in numbers if n in digits]
    assert TOKEN not in journal
