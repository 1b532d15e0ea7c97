"""A 30-day SANDBOX backfill as one run and as runs of 5 days, 3 at a time (#16).

Everything is the production path on one machine: a PostgreSQL Dagster instance and a
PostgreSQL ledger (scratch databases on 127.0.0.1:5432), `dagster-daemon run` with the
QueuedRunCoordinator (3 runs at once) and the DefaultRunLauncher (each run a process of the
code location's gRPC server), the backfill launched through Dagster's GraphQL API as the UI
launches it, and the shared STT limit (CALLTEXTS_STT_MAX_IN_FLIGHT) in the ledger database.

Three backfills of the same days, each on fresh databases and storage:
  1) one run (CALLTEXTS_BACKFILL_RUN_DAYS=0);
  2) runs of 5 days (=5), at most 3 at once;
  3) the same, one run killed with SIGKILL mid-way while it holds STT slots; its days are
     backfilled again once the backfill is over.
Printed: registry bytes (sha256) and rows, STT requests per call, duplicate downloads, the
STT emulator's most requests in flight against the shared limit, wall times and ratio, and
for 3) how long the killed run's slots took to come back.

    .venv/bin/python benchmarks/multi_run.py          # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
import sqlalchemy as sa
import yaml
from dagster import DagsterInstance, RunsFilter
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.instance.ref import InstanceRef
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from calltexts_assets.state.ledger import Ledger
from calltexts_assets.state.shared_limits import create_shared_tables, limit_slots
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.databases import postgres_database

ASSETS = ["call_list", "raw_audio", "transcripts", "summaries", "registry_csv", "qa_sample",
          "cost_report"]  # fmt: skip
BIN = Path(sys.executable).parent
DONE = {
    BulkActionStatus.COMPLETED,
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--calls-per-day", type=int, default=6)
    p.add_argument("--run-days", type=int, default=5, help="days per run of the multi-run shape")
    p.add_argument("--runs-at-once", type=int, default=3)
    p.add_argument("--stt-limit", type=int, default=4, help="CALLTEXTS_STT_MAX_IN_FLIGHT")
    p.add_argument("--concurrency", type=int, default=4, help="CALLTEXTS_CONCURRENCY per run")
    p.add_argument("--stt-latency-ms", type=float, default=1500, help="per audio minute")
    p.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    return p.parse_args()


@dataclass
class Shape:
    name: str
    wall_sec: float = 0.0
    runs: dict[str, int] = field(default_factory=dict)  # status -> runs
    calls: int = 0
    transcribed: int = 0
    stt_requests_ledger: int = 0
    stt_transcriptions: int = 0
    stt_max_in_flight: int = 0
    slots_max_held: int = 0
    downloads: int = 0
    with_audio: int = 0
    registry_sha: str = ""
    rows_sha: str = ""
    kill: dict[str, Any] = field(default_factory=dict)


def _instance_yaml(pg_url: str, runs_at_once: int) -> dict[str, Any]:
    return {
        "storage": {"postgres": {"postgres_url": pg_url}},
        "run_queue": {"dequeue_interval_seconds": 1},
        "concurrency": {
            "runs": {"max_concurrent_runs": runs_at_once},
            # One transcription step per running run: the requests are bounded by the slots.
            "pools": {"default_limit": runs_at_once, "granularity": "op"},
        },
        "run_monitoring": {
            "enabled": True,
            "poll_interval_seconds": 5,
            "free_slots_after_run_end_seconds": 5,
        },
        "telemetry": {"enabled": False},
    }


def _environment(sandbox: Sandbox, root: Path, ledger_url: str, run_days: int,
                 args: argparse.Namespace) -> dict[str, str]:  # fmt: skip
    scrubbed = ("BITRIX24_", "OPENAI_", "CHATGPT_", "CALLTEXTS_", "DAGSTER_", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(scrubbed)}
    return (
        env
        | sandbox.environment()
        | {
            "DAGSTER_HOME": str(root / "dagster_home"),
            "CALLTEXTS_HOME": str(root / "home"),
            "CALLTEXTS_DATABASE_URL": ledger_url,
            "CALLTEXTS_CONCURRENCY": str(args.concurrency),
            "CALLTEXTS_STT_MAX_IN_FLIGHT": str(args.stt_limit),
            "CALLTEXTS_BACKFILL_RUN_DAYS": str(run_days),
            "BITRIX24_REQUESTS_PER_SECOND": "2",
            "PYTHONPATH": str(harness.REPO_ROOT),
        }
    )


def _launch_backfill(context: Any, days: list[str]) -> str:
    result = execute_dagster_graphql(
        context,
        LAUNCH_PARTITION_BACKFILL_MUTATION,
        variables={
            "backfillParams": {
                "assetSelection": [{"path": [name]} for name in ASSETS],
                "partitionNames": days,
            }
        },
    )
    answer = result.data["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill refused: {json.dumps(answer)[:500]}")
    return answer["backfillId"]


def _held(engine: sa.Engine) -> list[tuple[str, int]]:
    c = limit_slots.c
    with engine.connect() as conn:
        return [(o, p) for o, p in conn.execute(
            sa.select(c.owner, c.pid).where(c.holder.is_not(None)))]  # fmt: skip


def _wait(instance: DagsterInstance, backfill_id: str, engine: sa.Engine, shape: Shape,
          sandbox: Sandbox, kill_at: int | None) -> None:  # fmt: skip
    """Until the backfill is over; meanwhile the slots held, and the kill when asked."""
    killed: tuple[str, int] | None = None
    while instance.get_backfill(backfill_id).status not in DONE:
        held = _held(engine)
        shape.slots_max_held = max(shape.slots_max_held, len(held))
        done = sandbox.stt.stats()["transcriptions"]
        if kill_at is not None and killed is None and done >= kill_at and held:
            owner, pid = held[0]
            share = sum(1 for o, _ in held if o == owner)
            os.kill(pid, signal.SIGKILL)
            killed = (owner, pid)
            shape.kill = {"run": owner, "pid": pid, "slots_held": share, "at": time.monotonic(),
                          "transcribed_before": done}  # fmt: skip
        gone = killed is not None and all(p != killed[1] for _, p in held)
        if gone and "back_sec" not in shape.kill:
            shape.kill["back_sec"] = time.monotonic() - shape.kill["at"]
        time.sleep(0.2)


def _registry_rows(home: Path, first: str, last: str) -> list[str]:
    """Data rows of every registry the backfill's runs wrote, in period order."""
    exports = home / "exports"
    rows: list[str] = []
    for folder in sorted(exports.glob("*_*")):
        start, _, end = folder.name.partition("_")
        if first <= start and end <= last and (folder / "registry").exists():
            csv = folder / "registry" / f"calls_{folder.name}.csv"
            rows += csv.read_text(encoding="utf-8-sig").splitlines()[1:]
    return rows


def backfill(sandbox: Sandbox, work: Path, name: str, days: list[str], run_days: int,
             args: argparse.Namespace, *, kill: bool = False) -> Shape:  # fmt: skip
    shape = Shape(name)
    root = work / name.replace(" ", "_")
    (root / "dagster_home").mkdir(parents=True)
    sandbox.portal.reset_stats()
    sandbox.stt.reset()
    with postgres_database("bench_instance") as pg_instance, \
            postgres_database("bench_ledger") as pg_ledger:  # fmt: skip
        (root / "dagster_home" / "dagster.yaml").write_text(
            yaml.safe_dump(_instance_yaml(pg_instance, args.runs_at_once))
        )
        workspace = root / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
            "module_name": "calltexts_assets.definitions", "location_name": "calltexts",
            "working_directory": str(harness.REPO_ROOT)}}]}))  # fmt: skip
        env = _environment(sandbox, root, pg_ledger, run_days, args)
        saved = dict(os.environ)
        os.environ.update(env)  # the GraphQL context's code server reads the same settings
        ledger = Ledger(pg_ledger)  # the tables, before the first run races to make them
        create_shared_tables(ledger.engine)
        daemon_log = (root / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            env=env, cwd=root, stdout=daemon_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(root / "dagster_home")))
            expected = sum(1 for r in sandbox.portal.rows if r.get("RECORD_FILE_ID"))
            with define_out_of_process_context(str(workspace), None, instance) as context:
                started = time.monotonic()
                first_id = _launch_backfill(context, days)
                kill_at = expected // 3 if kill else None
                _wait(instance, first_id, ledger.engine, shape, sandbox, kill_at)
                ids = [first_id]
                if kill:  # the killed run's days again: the ledger skips what is done
                    killed = instance.get_run_by_id(shape.kill["run"])
                    assert killed is not None
                    shape.kill["status"] = killed.status.value
                    tags = killed.tags
                    again = harness._days(
                        date.fromisoformat(tags["dagster/asset_partition_range_start"]),
                        date.fromisoformat(tags["dagster/asset_partition_range_end"]),
                    )
                    shape.kill["days"] = len(again)
                    ids.append(_launch_backfill(context, [d.isoformat() for d in again]))
                    _wait(instance, ids[-1], ledger.engine, shape, sandbox, None)
                shape.wall_sec = time.monotonic() - started
            for backfill_id in ids:
                runs = instance.get_run_records(RunsFilter(tags={"dagster/backfill": backfill_id}))
                for record in runs:
                    status = record.dagster_run.status.value
                    shape.runs[status] = shape.runs.get(status, 0) + 1
            if kill:
                shape.kill["backfill_status"] = instance.get_backfill(ids[-1]).status.value
            rows = _registry_rows(root / "home", days[0], days[-1])
            shape.rows_sha = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            # The 30-day registry from the ledger, one run, whatever shape made the ledger.
            subprocess.run(
                [str(BIN / "dagster"), "asset", "materialize", "-m", "calltexts_assets.definitions",
                 "--select", "registry_csv", "--partition-range", f"{days[0]}...{days[-1]}"],
                env=env | {"CALLTEXTS_BACKFILL_RUN_DAYS": "0"}, cwd=root, check=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            daemon_log.close()
            os.environ.clear()
            os.environ.update(saved)

        records = ledger.records(days)
        shape.calls = len(records)
        shape.transcribed = sum(r.status == "transcribed" for r in records)
        shape.with_audio = sum(r.audio_path is not None for r in records)
        shape.stt_requests_ledger = sum(r.stt_requests or 0 for r in records)
        ledger.dispose()
    stt = sandbox.stt.stats()
    shape.stt_transcriptions = stt["transcriptions"]
    shape.stt_max_in_flight = stt["max_in_flight"]
    served = sandbox.portal.stats()["http_requests"]
    shape.downloads = served.get("records", 0)  # links and Drive files, each served once
    home = root / "home"
    whole = home / "exports" / f"{days[0]}_{days[-1]}" / "registry"
    shape.registry_sha = hashlib.sha256(
        (whole / f"calls_{days[0]}_{days[-1]}.csv").read_bytes()
    ).hexdigest()
    return shape


def report(shape: Shape, limit: int) -> None:
    per_call = shape.stt_requests_ledger / max(shape.transcribed, 1)
    print(f"  {shape.name}: wall {shape.wall_sec:,.1f} s; runs {shape.runs}")
    print(f"    calls {shape.calls}, transcribed {shape.transcribed} of {shape.with_audio} with "
          f"audio; STT requests per call (ledger) {per_call:.3f}; STT emulator transcriptions "
          f"{shape.stt_transcriptions}")  # fmt: skip
    print(f"    recording downloads {shape.downloads} for {shape.with_audio} recordings: "
          f"{shape.downloads - shape.with_audio} duplicate")  # fmt: skip
    print(f"    STT max in flight (emulator) {shape.stt_max_in_flight}, slots max held "
          f"{shape.slots_max_held}; shared limit {limit}")  # fmt: skip
    print(f"    30-day registry sha256 {shape.registry_sha[:16]}; rows of the runs' own "
          f"registries sha256 {shape.rows_sha[:16]}")  # fmt: skip
    if shape.kill:
        back = shape.kill.get("back_sec", float("nan"))
        print(f"    killed run {shape.kill['run'][:8]} (pid {shape.kill['pid']}) with "
              f"{shape.kill['slots_held']} slots held after {shape.kill['transcribed_before']} "
              f"transcriptions; its slots back after {back:.2f} s; "
              f"run {shape.kill['status']}; its {shape.kill['days']} days backfilled again: "
              f"{shape.kill['backfill_status']}")  # fmt: skip


def main() -> int:
    args = _args()
    first, last = harness.period_ending_yesterday(args.days)
    workload = harness.Workload.seed(first, args.days, args.calls_per_day)
    days = [(first + timedelta(days=n)).isoformat() for n in range(args.days)]
    print("SANDBOX benchmark: multi-run backfill with a shared STT limit (#16)")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {harness.machine()}")
    print(f"period: {first} .. {last}; workload: {workload.describe()}")
    print(f"settings: CALLTEXTS_CONCURRENCY {args.concurrency} per run; "
          f"CALLTEXTS_STT_MAX_IN_FLIGHT {args.stt_limit}; STT latency {args.stt_latency_ms:g} ms "
          f"per audio minute; portal 2 req/s; PostgreSQL instance and ledger; dagster-daemon, "
          f"QueuedRunCoordinator, DefaultRunLauncher")  # fmt: skip
    warm, rendered, _ = harness.warm_audio_cache(workload, args.cache_dir, os.cpu_count() or 1)
    print(f"warm-up (excluded): {rendered} recordings rendered in {warm:.1f} s")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="calltexts-multirun-"))
    sandbox = harness.start_benchmark_sandbox(workload, args.cache_dir)
    sandbox.stt.latency_per_audio_min_sec = args.stt_latency_ms / 1000
    multi = f"{-(-args.days // args.run_days)} runs of {args.run_days} days"
    try:
        one = backfill(sandbox, work, "1 run", days, 0, args)
        report(one, args.stt_limit)
        many = backfill(sandbox, work, multi, days, args.run_days, args)
        report(many, args.stt_limit)
        killed = backfill(sandbox, work, f"{multi}, one killed", days, args.run_days, args,
                          kill=True)  # fmt: skip
        report(killed, args.stt_limit)
    finally:
        sandbox.stop()
        if not args.keep:
            harness.remove_tree(work)
    same = one.registry_sha == many.registry_sha == killed.registry_sha
    print("\nsummary")
    print(f"  registry bytes equal (30-day registry, sha256): {same}")
    print(f"  rows of the {multi} registries = rows of the 1-run registry: "
          f"{many.rows_sha == killed.rows_sha == one.rows_sha}")  # fmt: skip
    print(f"  STT requests per call: 1 run {one.stt_requests_ledger / one.transcribed:.3f}, "
          f"{multi} {many.stt_requests_ledger / many.transcribed:.3f}")  # fmt: skip
    print(f"  duplicate downloads: 1 run {one.downloads - one.with_audio}, "
          f"{multi} {many.downloads - many.with_audio}")  # fmt: skip
    print(f"  STT max in flight vs limit {args.stt_limit}: {one.stt_max_in_flight}, "
          f"{many.stt_max_in_flight}, {killed.stt_max_in_flight}")  # fmt: skip
    print(f"  wall: 1 run {one.wall_sec:.1f} s, {multi} ({args.runs_at_once} at once) "
          f"{many.wall_sec:.1f} s: ratio {many.wall_sec / one.wall_sec:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
