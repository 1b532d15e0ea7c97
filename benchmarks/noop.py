"""Benchmark: a no-op re-run (everything already done) and how it grows with the period.

    python benchmarks/noop.py                      # 60 days x 2 calls, re-runs of 30 and 60 days
    python benchmarks/noop.py --profile            # and where a 60-day no-op's time goes

A first export of `--days` sandbox days with few calls per day (one child run), then no-op
re-runs of the last `--short-days` and of all `--days` days, each twice:
- `run_export` timed inside a child (`calltexts_tests/support/child_run.py`: the import
  of the run path apart, then `export_run.run_export`),
- the whole `calltexts run --from --to` as a child process (Python start-up, the CLI's checks,
  imports, the run, its summary), wall time from start to exit.
The growth per day is (60-day figure - 30-day figure) / 30. The machine's 1-minute load
average is printed beside each figure: on a shared 2-core machine it moves the figures.
`--profile` cProfiles one more 60-day no-op and splits its time into imports, Dagster event
writes and the rest. Packages the run imported although a no-op needs none of them are listed.
`--baseline-tree DIR` (another commit's source, e.g. `git archive <commit> | tar -x -C DIR`)
runs each no-op of that tree right after this tree's, against the same state: before and
after in the same machine state, as far as a shared machine allows.
"""

from __future__ import annotations

import argparse
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import harness
from harness import Workload

from calltexts_tests.support.child_run import REPO_ROOT, ChildLayout, child_env

# Packages a no-op has no use for (issue #26): what it imports of them is needless.
NEEDLESS = ("openai", "boto3", "botocore", "dagster_aws", "fpdf", "polars", "fastapi", "uvicorn")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--short-days", type=int, default=30)
    parser.add_argument("--calls-per-day", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="no-op runs of each kind")
    parser.add_argument("--profile", action="store_true", help="cProfile one 60-day no-op")
    parser.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    parser.add_argument("--keep", action="store_true", help="keep the run root")
    parser.add_argument("--baseline-tree", type=Path, help="also run this source tree's no-ops")
    return parser.parse_args(argv)


def _cli_run(
    sandbox: harness.Sandbox, root: Path, first: date, last: date, tree: Path = REPO_ROOT
) -> tuple[float, float, int]:
    """`calltexts run --from first --to last` in a child: (wall s, load average, exit code)."""
    layout = ChildLayout.under(root)
    with harness.fresh_stt(0.03) as (_, stt_server):
        env = child_env(
            layout,
            webhook_url=sandbox.webhook_url,
            stt_base_url=f"{stt_server.url}/v1",
            api_key=harness.SANDBOX_API_KEY,
            extra={"PYTHONPATH": str(tree)},
        )
        cmd = [sys.executable, "-m", "calltexts_assets.ops.cli", "run"]
        cmd += ["--from", first.isoformat(), "--to", last.isoformat()]
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        with open(root / "cli.log", "ab") as log:
            code = subprocess.run(cmd, env=env, cwd=tree, stdout=log, stderr=log).returncode
        wall = time.monotonic() - started
    return wall, (load_before + os.getloadavg()[0]) / 2, code


def _shares(profile: Path) -> list[tuple[str, float]]:
    """Seconds of the profiled no-op in imports, Dagster's event writes, and all of it."""
    loaded = pstats.Stats(str(profile))
    imports = events = 0.0
    for (path, _line, name), row in loaded.stats.items():  # type: ignore[attr-defined]
        cumulative = row[3]
        if name == "_find_and_load" and "importlib._bootstrap" in path:
            imports = max(imports, cumulative)  # recursive: the outermost calls' sum
        elif name == "store_event" and "event_log" in path:
            events = max(events, cumulative)  # the sqlite storage's, which holds its base's
    whole = loaded.total_tt  # type: ignore[attr-defined]
    return [("imports", imports), ("Dagster store_event", events), ("import + run_export", whole)]


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    last = harness.period_ending_yesterday(1)[1]
    first = last - timedelta(days=args.days - 1)
    short_first = last - timedelta(days=args.short_days - 1)
    workload = Workload.seed(first, args.days, args.calls_per_day)
    print("SANDBOX benchmark: no-op re-run (everything already done)")
    print(f"machine: {harness.machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"period: {first} .. {last}; workload: {workload.describe()}")
    harness.warm_audio_cache(workload, args.cache_dir, workers=os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="calltexts-noop-"))
    sandbox = harness.start_benchmark_sandbox(workload, args.cache_dir, portal_rate=50)
    try:
        root = work / "main"
        full = harness.run_export_child(
            "first", sandbox, root, first, last, concurrency=10, stt_latency_per_min=0.03
        )
        print(
            f"first export: exit code {full.exit_code}, {full.calls} calls {full.statuses}, "
            f"wall {full.wall_sec:.1f} s"
        )
        if full.exit_code != 0:
            return 1
        trees = {"this tree": REPO_ROOT}
        if args.baseline_tree:
            trees["baseline"] = args.baseline_tree.resolve()
        figures: dict[tuple[str, str, int], list[float]] = {}
        # The first export made the files of all the days, not of the last `--short-days`:
        # a first run of that period makes them (its registry, report and QA sample), so the
        # timed re-runs below are no-ops on both periods.
        for name, tree in trees.items():
            fig = harness.run_export_child(
                f"files-{args.short_days}", sandbox, root, short_first, last,
                concurrency=10, stt_latency_per_min=0.03, tree=tree,
            )  # fmt: skip
            print(
                f"  {name:<9} {args.short_days} days' own files, first made: run_export "
                f"{fig.run_sec:5.2f} s, load {fig.load_average:.1f}, exit {fig.exit_code}"
            )
        print(f"\nno-op re-runs ({args.repeats} of each; load = 1-minute load average):")
        for _ in range(args.repeats):
            for days, start in ((args.short_days, short_first), (args.days, first)):
                for name, tree in trees.items():
                    fig = harness.run_export_child(
                        f"noop-{days}", sandbox, root, start, last,
                        concurrency=10, stt_latency_per_min=0.03, tree=tree,
                    )  # fmt: skip
                    loaded = [p for p in NEEDLESS if p in fig.child.get("packages", [])]
                    downloads = fig.portal["http_requests"].get("records", 0)
                    print(
                        f"  {name:<9} {days:>3} days run_export {fig.run_sec:5.2f} s (import "
                        f"before it {fig.child.get('import_sec', 0):.2f} s, child wall "
                        f"{fig.wall_sec:.2f} s, CPU {fig.pipeline_cpu_sec:.2f} s), load "
                        f"{fig.load_average:.1f}, exit "
                        f"{fig.exit_code}, downloads {downloads}, STT requests "
                        f"{fig.stt['requests']}; needless packages loaded: "
                        f"{loaded or 'none'}"
                    )
                    figures.setdefault((name, "run_export", days), []).append(fig.run_sec)
                    figures.setdefault((name, "child CPU", days), []).append(fig.pipeline_cpu_sec)
                for name, tree in trees.items():
                    wall, load, code = _cli_run(sandbox, root, start, last, tree)
                    print(
                        f"  {name:<9} {days:>3} days calltexts run {wall:5.2f} s, load {load:.1f}, "
                        f"exit {code}"
                    )
                    figures.setdefault((name, "calltexts run", days), []).append(wall)
        print("\nmedians:")
        for name in trees:
            for what in ("run_export", "calltexts run", "child CPU"):
                short = statistics.median(figures[(name, what, args.short_days)])
                long = statistics.median(figures[(name, what, args.days)])
                growth = (long - short) / (args.days - args.short_days)
                print(
                    f"  {name:<9} {what:<14} {args.short_days} days {short:5.2f} s, {args.days} "
                    f"days {long:5.2f} s; GROWTH {growth:+.3f} s per day"
                )
        if args.profile:
            profile = work / "noop.prof"
            fig = harness.run_export_child(
                "noop-profiled", sandbox, root, first, last,
                concurrency=10, stt_latency_per_min=0.03, profile=profile,
            )  # fmt: skip
            shares = _shares(profile)
            whole = shares[-1][1] or float("nan")
            print(f"\nprofiled {args.days}-day no-op (cProfile, load {fig.load_average:.1f}):")
            for name, sec in shares:
                print(f"  {name:<20} {sec:6.2f} s  {sec / whole:6.1%}")
            pstats.Stats(str(profile)).sort_stats("cumulative").print_stats(r"calltexts_", 15)
    finally:
        sandbox.stop()
        if not args.keep:
            harness.remove_tree(work)
        else:
            print(f"run root kept: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
