"""The trigger API: the Idempotency-Key contract, period validation, status, health."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_webserver.app import create_app_from_workspace_process_context
from fastapi.testclient import TestClient

from calltexts_assets.api.app import ABANDONED_AFTER, MAX_BODY_BYTES, create_app
from calltexts_assets.api.launcher import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SUMMARY_TAG,
    DagsterLauncher,
    ExportRequest,
    LaunchError,
    RunState,
    run_tags,
)
from calltexts_assets.listing.periods import PeriodPolicy
from calltexts_assets.state.idempotency import IdempotencyStore, idempotency_keys, request_hash
from calltexts_assets.state.ledger import Ledger
from calltexts_sandbox.server import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
MOSCOW = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=MOSCOW)
POLICY = PeriodPolicy(
    timezone="Europe/Moscow",
    now=lambda: NOW,
    last_exportable_day=lambda: date(2026, 11, 24),  # daily partitions end yesterday
    first_exportable_day=date(2025, 1, 1),
)
BODY = {"period_from": "2026-11-01", "period_to": "2026-11-03", "generate_summary": True}


@dataclass
class FakeLauncher:
    delay: float = 0.0
    fail: bool = False
    # the run is created, then the launch call fails on our side (a timeout)
    times_out_after_creating: bool = False
    gate: threading.Event | None = None  # launch() waits for it
    launched: list[ExportRequest] = field(default_factory=list)
    runs: dict[str, ExportRequest] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def launch(self, request: ExportRequest) -> str:
        time.sleep(self.delay)  # widens the race window of concurrent requests
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.fail:
            raise LaunchError("Dagster did not launch the run: webserver unreachable")
        run_id = str(uuid.uuid4())
        with self.lock:
            self.launched.append(request)
            self.runs[run_id] = request
        if self.times_out_after_creating:
            raise LaunchError("cannot reach the Dagster webserver (ReadTimeout)")
        return run_id

    def status(self, run_id: str) -> RunState | None:
        request = self.runs.get(run_id)
        if request is None:
            return None
        return RunState(run_id=run_id, status="QUEUED", tags=run_tags(request))

    def find(self, idempotency_key: str) -> str | None:
        with self.lock:
            found = [r for r, req in self.runs.items() if req.idempotency_key == idempotency_key]
        return found[0] if found else None


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    yield ledger.engine
    ledger.dispose()


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def client(engine: sa.Engine, launcher: FakeLauncher) -> TestClient:
    app = create_app(launcher, IdempotencyStore(engine), policy=POLICY, replay_wait_sec=5)
    return TestClient(app)


def post(client: TestClient, body: object, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/tasks/call_export", json=body, headers=headers)


def new_key() -> str:
    return str(uuid.uuid4())


def stored_keys(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(idempotency_keys)).scalar_one()


def test_launches_one_run_over_the_range(client: TestClient, launcher: FakeLauncher) -> None:
    response = post(client, BODY, new_key())
    assert response.status_code == 202, response.text
    payload = response.json()
    assert payload["period"] == {"from": "2026-11-01", "to": "2026-11-03"}
    assert payload["status_url"] == f"/tasks/call_export/{payload['run_id']}"
    [launch] = launcher.launched
    tags = run_tags(launch)
    assert tags[RANGE_START_TAG] == "2026-11-01"
    assert tags[RANGE_END_TAG] == "2026-11-03"
    assert tags[SUMMARY_TAG] == "true"


def test_same_key_replays_the_stored_bytes(client: TestClient, launcher: FakeLauncher) -> None:
    key = new_key()
    first = post(client, BODY, key)
    again = post(client, BODY, key)
    # the same UUID in another spelling is the same key
    upper = post(client, BODY, key.upper())
    assert first.status_code == again.status_code == upper.status_code == 202
    assert first.content == again.content == upper.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(launcher.launched) == 1


def test_same_key_with_another_body_is_422(client: TestClient, launcher: FakeLauncher) -> None:
    key = new_key()
    assert post(client, BODY, key).status_code == 202
    conflict = post(client, {**BODY, "period_to": "2026-11-04"}, key)
    assert conflict.status_code == 422
    assert "different request body" in conflict.json()["detail"]
    assert len(launcher.launched) == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [(None, "is required"), ("", "is required"), ("not-a-uuid", "must be a UUID")],
)
def test_missing_or_invalid_key_is_400(
    client: TestClient, launcher: FakeLauncher, key: str | None, message: str
) -> None:
    response = post(client, BODY, key)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert launcher.launched == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"period_from": "2026/11/01"}, "period_from: must be an ISO date"),
        ({"period_from": "2026-02-30"}, "is not a calendar date"),
        ({"period_to": 1732406400}, "period_to: must be an ISO date"),
        ({"period_from": "2026-11-05", "period_to": "2026-11-01"}, "is after period_to"),
        ({"period_from": "2026-11-01", "period_to": "2026-12-01"}, "is in the future"),
        ({"period_from": "2026-11-26"}, "is in the future"),
        ({"period_to": "2026-11-25"}, "not complete yet; the last day to export is 2026-11-24"),
        ({"period_from": "2026-01-01", "period_to": "2026-11-01"}, "allow_long_period"),
        ({"period_from": "2024-12-31"}, "before the first exportable day 2025-01-01"),
        ({"generate_summary": "yes"}, "generate_summary: Input should be a valid boolean"),
        ({"period": "2026-11"}, "period: unknown field"),
        (["2026-11-01"], "must be a JSON object"),
    ],
)
def test_bad_input_is_422_and_launches_nothing(
    client: TestClient, launcher: FakeLauncher, engine: sa.Engine, body: object, message: str
) -> None:
    response = post(client, body, new_key())
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert launcher.launched == []
    assert stored_keys(engine) == 0  # a rejected request does not burn its key


def test_body_that_is_not_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/tasks/call_export",
        content=b"{period_from:",
        headers={"Idempotency-Key": new_key(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


def test_long_period_when_allowed(client: TestClient, launcher: FakeLauncher) -> None:
    body = {"period_from": "2026-01-01", "period_to": "2026-11-01", "allow_long_period": True}
    assert post(client, body, new_key()).status_code == 202
    assert launcher.launched[0].period_from == date(2026, 1, 1)


def test_defaults_are_the_60_days_before_today(client: TestClient, launcher: FakeLauncher) -> None:
    response = post(client, {}, new_key())
    assert response.status_code == 202
    # today is 2026-11-25 in Moscow; its partition is not complete, so the run ends yesterday
    assert response.json()["period"] == {"from": "2026-09-26", "to": "2026-11-24"}
    assert launcher.launched[0].generate_summary is None  # the deployment's default


def test_an_open_end_is_said_in_the_answer(client: TestClient, launcher: FakeLauncher) -> None:
    """Without period_to the run goes up to yesterday: the answer says so, not only the
    period (issue #24: a POST with period_from alone was a silent 36-day run)."""
    answer = post(client, {"period_from": "2026-10-20"}, new_key()).json()
    assert answer["period"] == {"from": "2026-10-20", "to": "2026-11-24"}
    assert answer["defaults"] == {
        "period_to": "not given: the last complete day (yesterday, portal time)"
    }
    both = post(client, {"period_from": "2026-11-01", "period_to": "2026-11-02"}, new_key())
    assert "defaults" not in both.json()


def test_empty_body_replays_on_another_day(engine: sa.Engine, launcher: FakeLauncher) -> None:
    """The key guards the request as sent: defaults resolved later do not make it new."""
    key = new_key()
    first = post(TestClient(create_app(launcher, IdempotencyStore(engine), policy=POLICY)), {}, key)
    tomorrow = PeriodPolicy(now=lambda: datetime(2026, 11, 26, 10, 0, tzinfo=MOSCOW))
    later = TestClient(create_app(launcher, IdempotencyStore(engine), policy=tomorrow))
    again = post(later, {}, key)
    assert first.content == again.content
    assert len(launcher.launched) == 1


def test_a_replay_is_not_judged_by_todays_rules(engine: sa.Engine, launcher: FakeLauncher) -> None:
    """85 days when first sent; 95 days (over the limit) ten days later: still a replay."""
    key, body = new_key(), {"period_from": "2026-09-01"}
    first = post(
        TestClient(create_app(launcher, IdempotencyStore(engine), policy=POLICY)), body, key
    )
    later = PeriodPolicy(now=lambda: datetime(2026, 12, 5, 10, 0, tzinfo=MOSCOW))
    again = post(
        TestClient(create_app(launcher, IdempotencyStore(engine), policy=later)), body, key
    )
    assert first.status_code == again.status_code == 202
    assert first.content == again.content
    assert len(launcher.launched) == 1


def test_failed_launch_releases_the_key(client: TestClient, launcher: FakeLauncher) -> None:
    key = new_key()
    launcher.fail = True
    failed = post(client, BODY, key)
    assert failed.status_code == 503
    assert "webserver unreachable" in failed.json()["detail"]
    launcher.fail = False
    retried = post(client, BODY, key)
    assert retried.status_code == 202
    assert len(launcher.launched) == 1


def test_concurrent_requests_with_one_key_launch_one_run(
    engine: sa.Engine, launcher: FakeLauncher
) -> None:
    launcher.delay = 0.3
    app = create_app(launcher, IdempotencyStore(engine), policy=POLICY, replay_wait_sec=10)
    key = new_key()
    with serve_in_thread(app) as server, ThreadPoolExecutor(max_workers=8) as pool:

        def send(_: int) -> httpx.Response:
            return httpx.post(
                f"{server.url}/tasks/call_export",
                json=BODY,
                headers={"Idempotency-Key": key},
                timeout=30,
            )

        responses = list(pool.map(send, range(8)))
    assert len(launcher.launched) == 1
    assert {r.status_code for r in responses} == {202}
    assert len({r.content for r in responses}) == 1


def test_status_of_a_run(client: TestClient) -> None:
    run_id = post(client, BODY, new_key()).json()["run_id"]
    response = client.get(f"/tasks/call_export/{run_id}")
    assert response.status_code == 200
    payload = response.json()
    assert payload["status"] == "QUEUED"
    assert payload["period"] == {"from": "2026-11-01", "to": "2026-11-03"}
    assert payload["generate_summary"] is True
    assert client.get(f"/tasks/call_export/{uuid.uuid4()}").status_code == 404
    assert client.get("/tasks/call_export/..%2Fetc").status_code == 404


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_documents_the_body_and_header(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/tasks/call_export"]["post"]
    assert "period_from" in str(operation["requestBody"])
    assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"])


# -- the real launcher: an in-process Dagster webserver over the real code location -----------
# (private dagster modules only here, to host the webserver in the test process)


@pytest.fixture
def dagster_webserver(tmp_path: Path) -> Iterator[tuple[str, dg.DagsterInstance]]:
    """The project's dagster.yaml in a fresh DAGSTER_HOME, and a webserver on loopback."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="calltexts_assets.definitions", attribute="defs"),
        location_name="calltexts",
    )
    with (
        dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance,
        WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as workspace,
        serve_in_thread(create_app_from_workspace_process_context(workspace)) as server,
    ):
        yield server.url, instance


def test_real_launcher_queues_one_range_run(
    dagster_webserver: tuple[str, dg.DagsterInstance], engine: sa.Engine
) -> None:
    url, instance = dagster_webserver
    launcher = DagsterLauncher(url, lambda: instance)
    client = TestClient(create_app(launcher, IdempotencyStore(engine), policy=POLICY))
    key = new_key()
    first = post(client, BODY, key)
    again = post(client, BODY, key)
    assert first.status_code == again.status_code == 202, first.text
    assert first.content == again.content
    assert post(client, {**BODY, "generate_summary": False}, key).status_code == 422

    [run] = instance.get_runs()
    assert run.run_id == first.json()["run_id"]
    assert run.job_name == "calls_export"
    assert run.tags[RANGE_START_TAG] == "2026-11-01"
    assert run.tags[RANGE_END_TAG] == "2026-11-03"
    assert run.tags["calltexts/idempotency_key"] == key
    assert launcher.find(key) == run.run_id and launcher.find(new_key()) is None
    assert run.run_config == {"ops": {"summaries": {"config": {"generate_summary": True}}}}

    status = client.get(first.json()["status_url"])
    assert status.status_code == 200
    # dagster.yaml queues runs; the daemon (not running here) would start it
    assert status.json()["status"] == "QUEUED"
    assert status.json()["period"] == {"from": "2026-11-01", "to": "2026-11-03"}


def test_real_launcher_reports_what_dagster_refused(
    dagster_webserver: tuple[str, dg.DagsterInstance], engine: sa.Engine
) -> None:
    url, instance = dagster_webserver
    launcher = DagsterLauncher(url, lambda: instance, job_name="no_such_job")
    client = TestClient(create_app(launcher, IdempotencyStore(engine), policy=POLICY))
    response = post(client, BODY, new_key())
    assert response.status_code == 503
    assert "JobNotFoundError" in response.json()["detail"], response.text
    assert instance.get_runs() == []


def test_real_launcher_without_a_webserver(engine: sa.Engine) -> None:
    from calltexts_sandbox.server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    launcher = DagsterLauncher(url, dg.DagsterInstance.ephemeral)
    client = TestClient(create_app(launcher, IdempotencyStore(engine), policy=POLICY))
    response = post(client, BODY, new_key())
    assert response.status_code == 503
    assert f"cannot reach the Dagster webserver at {url}" in response.json()["detail"]


def test_purge_forgets_old_completed_keys_only(engine: sa.Engine) -> None:
    now = [datetime(2026, 11, 1, tzinfo=MOSCOW)]
    store = IdempotencyStore(engine, clock=lambda: now[0])
    store.reserve("old-done", "h")
    store.complete("old-done", 202, b"{}")
    store.reserve("old-pending", "h")
    now[0] = datetime(2026, 12, 15, tzinfo=MOSCOW)
    store.reserve("new-done", "h")
    store.complete("new-done", 202, b"{}")
    assert store.purge(timedelta(days=30)) == 1
    assert store.get("old-done") is None
    assert store.get("old-pending") is not None  # its request may still be running
    assert store.get("new-done") is not None


# -- faults: a key is bound to its run; hostile bodies; waits that hold no thread -----------


def test_a_launch_that_timed_out_after_creating_the_run_is_bound_to_it(
    client: TestClient, launcher: FakeLauncher
) -> None:
    key = new_key()
    launcher.times_out_after_creating = True
    first = post(client, BODY, key)
    launcher.times_out_after_creating = False
    retried = post(client, BODY, key)
    assert first.status_code == retried.status_code == 202
    assert first.json()["run_id"] == retried.json()["run_id"]
    assert len(launcher.launched) == 1


def _reserve(engine: sa.Engine, key: str, age: timedelta) -> None:
    """A reservation left by a request that died `age` ago."""
    made = datetime.now(UTC) - age
    IdempotencyStore(engine, clock=lambda: made).reserve(key, request_hash(BODY))


def test_a_request_that_died_after_launching_is_answered_with_its_run(
    client: TestClient, launcher: FakeLauncher, engine: sa.Engine
) -> None:
    key = new_key()
    _reserve(engine, key, timedelta(seconds=1))
    launched = launcher.launch(ExportRequest(date(2026, 11, 1), date(2026, 11, 3), True, key))
    retried = post(client, BODY, key)
    assert retried.status_code == 202 and retried.json()["run_id"] == launched
    assert retried.json()["period"] == {"from": "2026-11-01", "to": "2026-11-03"}
    assert len(launcher.launched) == 1


def test_a_reservation_abandoned_before_launching_expires(
    client: TestClient, launcher: FakeLauncher, engine: sa.Engine
) -> None:
    fresh, stale = new_key(), new_key()
    _reserve(engine, fresh, timedelta(seconds=1))
    _reserve(engine, stale, ABANDONED_AFTER + timedelta(seconds=1))
    assert post(client, BODY, stale).status_code == 202  # launched now
    assert len(launcher.launched) == 1
    busy = post(client, BODY, fresh)  # its request may still be launching
    assert busy.status_code == 409 and busy.headers["Retry-After"]
    assert len(launcher.launched) == 1


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000],
    ids=["arrays", "objects"],
)
def test_json_nested_deeply_is_400_not_500(client: TestClient, body: bytes) -> None:
    response = client.post(
        "/tasks/call_export",
        content=body[: MAX_BODY_BYTES - 1],
        headers={"Idempotency-Key": new_key(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_a_large_body_is_refused_unread(client: TestClient, launcher: FakeLauncher) -> None:
    sent = 0

    def stream() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(4096):  # 256 MiB if read to the end
            sent += 1
            yield b" " * 65536

    response = client.post(
        "/tasks/call_export", content=stream(), headers={"Idempotency-Key": new_key()}
    )
    assert response.status_code == 413 and not launcher.launched
    declared = client.post(
        "/tasks/call_export",
        content=b"{}",
        headers={"Idempotency-Key": new_key(), "Content-Length": str(400 * 2**20)},
    )
    assert declared.status_code == 413


def test_replays_waiting_for_a_launch_leave_the_api_responsive(
    engine: sa.Engine, launcher: FakeLauncher
) -> None:
    """60 replays of a key in flight (more than the 40 worker threads) while its launch is
    held: /healthz still answers, then every replay gets the run."""
    launcher.gate = threading.Event()
    app = create_app(launcher, IdempotencyStore(engine), policy=POLICY, replay_wait_sec=20)
    key = new_key()
    with serve_in_thread(app) as server, ThreadPoolExecutor(max_workers=61) as pool:

        def send(_: int) -> httpx.Response:
            return httpx.post(
                f"{server.url}/tasks/call_export",
                json=BODY,
                headers={"Idempotency-Key": key},
                timeout=30,
            )

        first = pool.submit(send, 0)
        time.sleep(0.2)  # the first request holds the key
        replays = [pool.submit(send, n) for n in range(1, 61)]
        time.sleep(0.5)
        health = httpx.get(f"{server.url}/healthz", timeout=10)
        launcher.gate.set()
        answers = [first.result(), *(r.result() for r in replays)]
    assert health.status_code == 200
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["run_id"] for a in answers}) == 1 and len(launcher.launched) == 1


def test_a_dry_run_estimates_and_launches_nothing(
    engine: sa.Engine, launcher: FakeLauncher
) -> None:
    asked: list[tuple[date, date]] = []

    def estimator(first: date, last: date) -> dict:
        asked.append((first, last))
        return {"calls": 7, "left_to_pay": {"cost_usd": "0.0420"}}

    app = create_app(launcher, IdempotencyStore(engine), policy=POLICY, estimator=estimator)
    client = TestClient(app)
    answer = post(client, {**BODY, "dry_run": True}, new_key())
    assert answer.status_code == 200
    assert answer.json() == {"dry_run": True, "calls": 7, "left_to_pay": {"cost_usd": "0.0420"}}
    assert asked == [(date(2026, 11, 1), date(2026, 11, 3))]
    assert not launcher.launched and stored_keys(engine) == 0
    bad = post(client, {"period_from": "2026-13-01", "dry_run": True}, new_key())
    assert bad.status_code == 422
    no_portal = TestClient(create_app(launcher, IdempotencyStore(engine), policy=POLICY))
    assert post(no_portal, {**BODY, "dry_run": True}, new_key()).status_code == 503
