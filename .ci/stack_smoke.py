"""Stack smoke test (#27): the Docker stack of deploy/docker, started for real, with the sandbox
as a service of its own.

1. Docker: installed (Debian's docker.io, docker-compose, debootstrap, iptables) and its daemon
   started when absent; anything that keeps Docker from starting fails this test, loudly.
2. Cold build and start (images on a Debian base made here with debootstrap, no registry;
   images and the base already on the machine are reused) with BASE_IMAGE=local.
3. The embedded one-run export of 4 sandbox days (`calltexts run`, SQLite, in a container of
   the code image against the same sandbox): the registry's bytes and the STT's count.
4. The same 4 days as a backfill of 1-day runs, 2 at a time, launched through the webserver's
   GraphQL API: every run SUCCESS, the 4-day registry (rebuilt from the ledger by
   registry_csv) byte for byte the embedded one, each call transcribed once (the STT
   emulator's counter), the shared STT limit never exceeded (its most requests in flight),
   Prometheus scraping the API with the alert rules loaded.
5. Everything removed but the images, a warm start, the backfill again with one run's container
   killed (`docker kill`) mid-way, then the backfill re-run: it completes, same bytes.
6. Teardown: containers (runs' too), volumes, networks, and the Docker daemon if started here.
Figures (build + start cold and warm, walls, the stack's peak memory) are printed at the end.

    .venv/bin/python .ci/stack_smoke.py        # make stack-smoke (benchmarks/README.md: #27)
    .venv/bin/python .ci/stack_smoke.py --build-only   # step 1 and the images; Docker left up
    .venv/bin/python .ci/stack_smoke.py --stop-daemon  # stops a daemon step 1 started

.ci/run builds the images with --build-only while the suite runs, then runs the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "deploy" / "docker" / "stack.sh"
DOCKER = "/usr/bin/docker"  # Debian's; another docker CLI may come first on PATH
SOCKET = "/var/run/docker.sock"
# The pid of a Docker daemon this test started, and its log (both outlive a --build-only run).
DAEMON_MARK = Path("/var/run/calltexts-stack-smoke.dockerd")
DAEMON_LOG = Path("/var/log/calltexts-stack-smoke-dockerd.log")
GRAPHQL = "http://127.0.0.1:3000/graphql"
API = "http://127.0.0.1:8080"
PORTAL = "http://127.0.0.1:8724"
STT = "http://127.0.0.1:8725"
# Every asset, as the UI's "Materialize all" backfills them; the registry is what is compared.
ASSETS = ["call_list", "raw_audio", "transcripts", "summaries", "registry_csv", "cost_report"]
STT_LIMIT = 2  # CALLTEXTS_STT_MAX_IN_FLIGHT of the stack: below 2 runs x CALLTEXTS_CONCURRENCY
CALLS_PER_DAY = 4
SANDBOX_ENV = {
    "BITRIX24_WEBHOOK_URL": "http://sandbox:8724/rest/1/sandboxwebhookcode/",
    "OPENAI_BASE_URL": "http://sandbox:8725/v1",
    "OPENAI_API_KEY": "sk-sandbox-key",
    "CALLTEXTS_RECORDING_HOSTS": "sandbox",
    "CALLTEXTS_SANDBOX": "true",
    "CALLTEXTS_CONCURRENCY": "3",
    # The sandbox's tone calls hold no speech for the voice detector: whole recordings go to
    # the STT (whisper-1's one pass), so that each recorded call is transcribed.
    "WHISPER_MODEL": "whisper-1",
    "STT_SEND": "all",
}
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL = """
query($id: String!, $tag: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename ... on PartitionBackfill { status } ... on PythonError { message }
  }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $tag}]}) {
    __typename ... on Runs { results { runId status tags { key value } } }
  }
}"""


class Failed(Exception):
    """A check failed or the stack could not start: one line for the CI log."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)
    print(f"  ok: {message}", flush=True)


def sh(*args: str, env: dict[str, str] | None = None, timeout: float = 1200) -> str:
    result = subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise Failed(f"`{' '.join(args)[:160]}` exited {result.returncode}:\n" + "\n".join(tail))
    return result.stdout


# --- Docker on this machine ------------------------------------------------------------


def docker_answers() -> bool:
    return (
        Path(DOCKER).exists()
        and subprocess.run([DOCKER, "info"], capture_output=True, check=False).returncode == 0
    )


def ensure_docker() -> None:
    """Docker installed and its daemon answering. A daemon started here is recorded in
    DAEMON_MARK, so that the run which ends the test (or `--stop-daemon`) stops it, also when
    a `--build-only` run started it."""
    needed = [
        p
        for p in (
            "/usr/bin/docker",
            "/usr/sbin/dockerd",
            "/usr/bin/docker-compose",
            "/usr/sbin/debootstrap",
            "/usr/sbin/iptables",
        )
        if not Path(p).exists()
    ]
    if needed:
        print(f"installing Docker ({', '.join(needed)} missing)", flush=True)
        apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        sh("apt-get", "update", "-qq", env=apt)
        sh(
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "docker.io",
            "docker-compose",
            "debootstrap",
            "iptables",
            env=apt,
        )
    if docker_answers():
        return
    with DAEMON_LOG.open("wb") as log:
        # Its own session: it outlives a --build-only run and the signals sent to its group.
        daemon = subprocess.Popen(
            ["/usr/sbin/dockerd", f"--host=unix://{SOCKET}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    DAEMON_MARK.write_text(str(daemon.pid))
    deadline = time.monotonic() + 60
    while not docker_answers():
        if daemon.poll() is not None or time.monotonic() > deadline:
            stop_daemon()
            tail = DAEMON_LOG.read_text(errors="replace").splitlines()[-10:]
            raise Failed("the Docker daemon did not start:\n" + "\n".join(tail))
        time.sleep(0.5)


def stop_daemon() -> None:
    """Stops the daemon this test started (DAEMON_MARK), if any; a daemon that was running
    before the test is left alone."""
    if not DAEMON_MARK.exists():
        return
    pid = int(DAEMON_MARK.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reaped here when this process started it
            time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
    DAEMON_MARK.unlink(missing_ok=True)


# --- the stack ----------------------------------------------------------------------------


def write_settings(work: Path) -> tuple[dict[str, str], str]:
    """The stack's env file and secret files; the metrics token (in clear)."""
    metrics_token = secrets.token_urlsafe(32)
    secret_dir = work / "secrets"
    secret_dir.mkdir(mode=0o700)
    digest = hashlib.sha256(metrics_token.encode()).hexdigest()
    line = f"prometheus:{digest}:metrics:read:{date.today().isoformat()}"
    (secret_dir / "api_tokens").write_text(line + "\n")
    (secret_dir / "metrics_token").write_text(metrics_token + "\n")
    for name in ("api_tokens", "metrics_token"):
        (secret_dir / name).chmod(0o644)  # read by the containers' own users
    settings = SANDBOX_ENV | {
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "CALLTEXTS_BACKFILL_RUN_DAYS": "1",
        "CALLTEXTS_STT_MAX_IN_FLIGHT": str(STT_LIMIT),
        "CALLTEXTS_SECRETS_DIR": str(secret_dir),
        "SANDBOX_STT_LATENCY_MS": "2000",
    }
    (work / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return settings, metrics_token


def stack_env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DOCKER": DOCKER,
        "ENV_FILE": str(work / "stack.env"),
        "COMPOSE_FILES": "docker-compose.sandbox.yml",
        "BASE_IMAGE": "local",
        "EXTRA_CA": "/etc/ssl/certs/ca-certificates.crt",
    }


def stack(work: Path, command: str) -> None:
    sh(str(STACK), command, env=stack_env(work))


def wait_ready(deadline_sec: float = 300) -> None:
    """The webserver has loaded the code location, the API and the sandbox answer."""
    deadline = time.monotonic() + deadline_sec
    query = (
        "{ workspaceOrError { ... on Workspace { locationEntries {"
        " loadStatus locationOrLoadError { __typename } } } } }"
    )
    while True:
        with contextlib.suppress(httpx.HTTPError, KeyError, TypeError):
            entries = graphql(query)["workspaceOrError"]["locationEntries"]
            loaded = entries and all(
                e["loadStatus"] == "LOADED"
                and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for e in entries
            )
            if (
                loaded
                and httpx.get(f"{API}/healthz", timeout=5).status_code == 200
                and httpx.get(f"{STT}/_sandbox/stats", timeout=5).status_code == 200
            ):
                return
        if time.monotonic() > deadline:
            raise Failed(f"the stack did not become ready in {deadline_sec:.0f} s")
        time.sleep(1)


def graphql(query: str, **variables: Any) -> dict[str, Any]:
    answer = httpx.post(GRAPHQL, json={"query": query, "variables": variables}, timeout=60)
    answer.raise_for_status()
    body = answer.json()
    if body.get("errors"):
        raise Failed(f"GraphQL errors: {json.dumps(body['errors'])[:500]}")
    return body["data"]


def container(service: str) -> str:
    found = sh(
        DOCKER,
        "ps",
        "-q",
        "--filter",
        "label=com.docker.compose.project=calltexts",
        "--filter",
        f"label=com.docker.compose.service={service}",
    ).split()
    if not found:
        raise Failed(f"no running container of the service {service}")
    return found[0]


def seed(days: list[str]) -> int:
    """The days' calls in the sandbox, the STT's counters at 0; the calls with a recording."""
    body = {"seed": 27, "start": days[0], "days": len(days), "calls_per_day": CALLS_PER_DAY}
    answer = httpx.post(f"{PORTAL}/_sandbox/seed", json=body, timeout=120)
    check(answer.status_code == 200, f"sandbox seeded: {answer.json()}")
    httpx.post(f"{STT}/_sandbox/reset", timeout=30).raise_for_status()
    return int(answer.json()["recorded"])


def stt_stats() -> dict[str, Any]:
    return httpx.get(f"{STT}/_sandbox/stats", timeout=30).json()


def registry_path(days: list[str]) -> str:
    period = f"{days[0]}_{days[-1]}"
    return f"/opt/calltexts/var/exports/{period}/registry/calls_{period}.csv"


# --- the runs -----------------------------------------------------------------------------


def embedded_export(work: Path, days: list[str]) -> tuple[bytes, float, int]:
    """`calltexts run` over the days, one process on a SQLite instance and local storage (the
    embedded default), in a container of the code image on the stack's network."""
    home = work / "embedded"
    (home / "dagster_home").mkdir(parents=True)
    environment = [f"--env={k}={v}" for k, v in SANDBOX_ENV.items()]
    started = time.monotonic()
    sh(
        DOCKER,
        "run",
        "--rm",
        "--network",
        "calltexts",
        f"--volume={home}:/opt/calltexts/var",
        "--env=DAGSTER_HOME=/opt/calltexts/var/dagster_home",
        *environment,
        "calltexts-code:latest",
        "calltexts",
        "run",
        "--from",
        days[0],
        "--to",
        days[-1],
    )
    wall = time.monotonic() - started
    registry = (home / registry_path(days).removeprefix("/opt/calltexts/var/")).read_bytes()
    return registry, wall, stt_stats()["transcriptions"]


def launch_backfill(days: list[str]) -> str:
    params = {"assetSelection": [{"path": [a]} for a in ASSETS], "partitionNames": days}
    answer = graphql(LAUNCH, params=params)["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise Failed(f"backfill refused: {json.dumps(answer)[:500]}")
    return answer["backfillId"]


def backfill_state(backfill_id: str) -> tuple[str, list[dict[str, Any]]]:
    data = graphql(BACKFILL, id=backfill_id, tag=backfill_id)
    return data["partitionBackfillOrError"]["status"], data["runsOrError"]["results"]


def running_run_containers() -> list[str]:
    return sh(DOCKER, "ps", "-q", "--filter", "label=dagster/run_id").split()


def wait_backfill(
    backfill_id: str, deadline_sec: float, kill_after: int | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Until the backfill and all of its runs are over; with kill_after, `docker kill` the
    first running run container once the STT has done that many transcriptions."""
    deadline = time.monotonic() + deadline_sec
    killed = None
    while True:
        status, runs = backfill_state(backfill_id)
        busy = [
            r
            for r in runs
            if r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
        ]
        if status in DONE and not busy:
            return runs, killed
        if kill_after is not None and killed is None:
            alive = running_run_containers()
            if alive and stt_stats()["transcriptions"] >= kill_after:
                killed = sh(
                    DOCKER,
                    "inspect",
                    "--format",
                    '{{index .Config.Labels "dagster/run_id"}}',
                    alive[0],
                ).strip()
                sh(DOCKER, "kill", alive[0])
                print(f"  killed the container of run {killed[:8]} mid-way", flush=True)
        if time.monotonic() > deadline:
            raise Failed(f"backfill {backfill_id} not over in {deadline_sec:.0f} s: {status}")
        time.sleep(1)


def stack_registry(days: list[str]) -> bytes:
    """The period's registry rebuilt from the ledger by registry_csv over the range, in one run
    in the code server's container (as an operator would after a multi-run backfill)."""
    code = container("code")
    sh(
        DOCKER,
        "exec",
        "--env=CALLTEXTS_BACKFILL_RUN_DAYS=0",
        code,
        "dagster",
        "asset",
        "materialize",
        "-m",
        "calltexts_assets.definitions",
        "--select",
        "registry_csv",
        "--partition-range",
        f"{days[0]}...{days[-1]}",
    )
    return subprocess.run(
        [DOCKER, "exec", code, "cat", registry_path(days)], capture_output=True, check=True
    ).stdout


def prometheus_scrapes() -> None:
    script = (
        "import httpx, json; t = httpx.get('http://prometheus:9090/api/v1/targets').json();"
        " r = httpx.get('http://prometheus:9090/api/v1/rules').json();"
        " print(json.dumps([[a['health'] for a in t['data']['activeTargets']],"
        " sorted(x['name'] for g in r['data']['groups'] for x in g['rules'])]))"
    )
    deadline = time.monotonic() + 90
    while True:
        health, rules = json.loads(sh(DOCKER, "exec", container("code"), "python3", "-c", script))
        if health == ["up"] or time.monotonic() > deadline:
            break
        time.sleep(3)
    check(health == ["up"], f"Prometheus scrapes the API's /metrics: targets {health}")
    check(len(rules) == 4, f"Prometheus has the alert rules loaded: {', '.join(rules)}")


# --- memory --------------------------------------------------------------------------------


class MemoryPeak:
    """Sum of the resident memory of every container, sampled each second (cgroup v1 or v2)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _resident() -> int:
        total = 0
        roots = [Path("/sys/fs/cgroup/memory/docker"), Path("/sys/fs/cgroup/docker")]
        for root in roots:
            for stat in root.glob("*/memory.stat"):
                with contextlib.suppress(OSError):
                    fields = dict(line.split() for line in stat.read_text().splitlines())
                    total += int(fields.get("total_rss", fields.get("anon", 0)))
        return total

    def _sample(self) -> None:
        while not self._stop.wait(1):
            self.peak = max(self.peak, self._resident())

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the test -------------------------------------------------------------------------------


def build_and_start(work: Path, label: str) -> float:
    started = time.monotonic()
    stack(work, "up")
    wait_ready()
    took = time.monotonic() - started
    print(f"{label} build + start: {took:.0f} s", flush=True)
    return took


def run_smoke(work: Path, figures: dict[str, float]) -> None:
    _, metrics_token = write_settings(work)
    today = date.today()
    days = [(today - timedelta(days=n)).isoformat() for n in range(10, 6, -1)]
    figures["cold"] = build_and_start(work, "cold")
    recorded = seed(days)

    print(f"embedded one-run export of {days[0]}..{days[-1]}", flush=True)
    embedded, figures["embedded_wall"], embedded_stt = embedded_export(work, days)
    check(
        embedded_stt == recorded,
        f"the embedded export transcribed {embedded_stt} calls, {recorded} with a recording",
    )
    seed(days)

    print("backfill: runs of 1 day, 2 at a time, through the webserver's GraphQL", flush=True)
    with MemoryPeak() as memory:
        started = time.monotonic()
        runs, _ = wait_backfill(launch_backfill(days), deadline_sec=1500)
        figures["stack_wall"] = time.monotonic() - started
    figures["peak_mib"] = memory.peak / 2**20
    statuses = sorted(r["status"] for r in runs)
    check(statuses == ["SUCCESS"] * len(days), f"every run SUCCESS: {statuses}")
    stats = stt_stats()
    check(
        stats["transcriptions"] == embedded_stt,
        f"each call transcribed once: {stats['transcriptions']} transcriptions, "
        f"{embedded_stt} in the embedded export",
    )
    check(
        0 < stats["max_in_flight"] <= STT_LIMIT,
        f"STT requests in flight at most {stats['max_in_flight']}, limit {STT_LIMIT}",
    )
    registry = stack_registry(days)
    check(
        registry == embedded,
        f"registry bytes equal to the embedded export's "
        f"({len(registry)} bytes, sha256 {hashlib.sha256(registry).hexdigest()[:16]})",
    )
    gone = (
        not running_run_containers()
        and not sh(DOCKER, "ps", "-aq", "--filter", "label=dagster/run_id").split()
    )
    check(gone, "no run container left behind")
    answer = httpx.get(f"{API}/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    check(answer.status_code == 200, "the API serves /metrics with the metrics token")
    prometheus_scrapes()

    print("everything but the images removed; warm start; a run container killed", flush=True)
    stack(work, "purge")
    figures["warm"] = build_and_start(work, "warm")
    seed(days)
    expected = embedded_stt
    runs, killed = wait_backfill(
        launch_backfill(days), deadline_sec=1500, kill_after=max(1, expected // 3)
    )
    check(killed is not None, f"a run container killed mid-way (run {str(killed)[:8]})")
    rerun, _ = wait_backfill(launch_backfill(days), deadline_sec=600)
    statuses = sorted(r["status"] for r in rerun)
    check(statuses == ["SUCCESS"] * len(days), f"the backfill re-run completes: {statuses}")
    registry = stack_registry(days)
    check(registry == embedded, "after the kill, registry bytes equal to the embedded export's")
    stats = stt_stats()
    print(
        f"  (transcriptions with the kill: {stats['transcriptions']} for {expected} calls; "
        f"max in flight {stats['max_in_flight']})",
        flush=True,
    )


def leftovers() -> list[str]:
    """Containers, volumes and networks of the stack (or its runs) still on the machine."""
    found = []
    for kind, flt in (("container", "label=com.docker.compose.project=calltexts"),
                      ("container", "label=dagster/run_id"),
                      ("volume", "name=calltexts"), ("network", "name=calltexts")):  # fmt: skip
        listed = [DOCKER, kind, "ls", "-q", "--filter", flt] + (
            ["-a"] if kind == "container" else []
        )
        names = subprocess.run(listed, capture_output=True, text=True, check=False).stdout.split()
        found += [f"{kind} {name}" for name in names]
    return found


def teardown(work: Path) -> None:
    """Everything of the stack removed but the images (the cache of the next run); what
    could not be removed fails the test."""
    with contextlib.suppress(Failed, subprocess.TimeoutExpired):
        stack(work, "purge")
    left = leftovers()
    if left:
        raise Failed(f"teardown left {', '.join(left)}")


def build_only() -> int:
    """Docker started and the stack's images built, nothing run: .ci/run builds them while the
    suite runs, then the test proper finds them (and the daemon) ready."""
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="calltexts-stack-") as work:
        try:
            ensure_docker()
            stack(Path(work), "build")
        except Failed as exc:
            print(f"stack smoke test FAILED (building the images): {exc}", file=sys.stderr)
            return 1
    print(f"stack images built in {time.monotonic() - began:.0f} s (Docker left running)")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--build-only"]:
        return build_only()
    if sys.argv[1:] == ["--stop-daemon"]:
        stop_daemon()
        return 0
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="calltexts-stack-"))
    figures: dict[str, float] = {}
    try:
        ensure_docker()
        if leftovers():
            raise Failed(f"a stack is on this machine already: {', '.join(leftovers())}")
        try:
            run_smoke(work, figures)
        except BaseException:  # torn down whatever stopped it; the first failure is reported
            with contextlib.suppress(Failed):
                teardown(work)
            raise
        teardown(work)
    except Failed as exc:
        print(f"stack smoke test FAILED: {exc}", file=sys.stderr)
        print("figures so far: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
        return 1
    finally:
        stop_daemon()
        shutil.rmtree(work, ignore_errors=True)
    print(f"stack smoke test passed in {time.monotonic() - began:.0f} s")
    print("figures: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
