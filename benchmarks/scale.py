"""Benchmark: peak RSS of a 60-day backfill against the number of calls.

    python benchmarks/scale.py                      # ~9,000 and ~20,000 audio minutes
    python benchmarks/scale.py --minutes 900,2000   # quick

For each target, the sandbox is seeded with 60 days x N calls (N chosen for the target
audio minutes), one export run goes through it in a child process (the `calltexts run` code
path), then a no-op re-run of the same days. Printed: calls, audio minutes, ledger rows and
size, peak RSS of the pipeline process, and how RSS changes per 1,000 calls.

Memory mode (default), so that the run measures the pipeline's bookkeeping within the time
budget: recordings are slices of one mono MP3, and the STT emulator reads durations from
headers instead of listening. The pipeline's code path is that of mono recordings: <= 15 min
sent as they are, longer ones decoded and chunked. `--faithful` uses the full sandbox instead
(stereo/mono mix, listening STT; ~25 min for both sizes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import harness
from harness import RunFigures, Workload

MINUTES_PER_CALL = 1.0107  # seed 7: 9,096 audio minutes over 9,000 calls (60 x 150)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", default="9000,20000", help="audio-minute targets")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--stt-latency-ms", type=float, default=5.0)
    parser.add_argument("--faithful", action="store_true", help="full sandbox (slow)")
    parser.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    return parser.parse_args(argv)


def _run_point(
    args: argparse.Namespace, target: int, work: Path
) -> tuple[Workload, RunFigures, RunFigures]:
    per_day = max(1, round(target / args.days / MINUTES_PER_CALL))
    first, last = harness.period_ending_yesterday(args.days)
    load = Workload.seed(first, args.days, per_day)
    served = "" if args.faithful else " (memory mode: every recording served as mono)"
    print(f"\n~{target:,} audio minutes: {load.describe()}{served}")
    if args.faithful:
        seconds, rendered, listened = harness.warm_audio_cache(load, args.cache_dir, workers=2)
        print(
            f"  warm-up (excluded): rendered {rendered} recordings and listened to {listened} "
            f"in {seconds:,.0f} s"
        )
    sandbox = harness.start_benchmark_sandbox(load, args.cache_dir)
    stt_kind = harness.SttEmulator
    if not args.faithful:
        sandbox.portal.audio = harness.SlicedRecordings()
        stt_kind = harness.HeaderOnlyStt
    latency = args.stt_latency_ms / 1000
    try:
        runs = [
            harness.run_export_child(
                label,
                sandbox,
                work / str(target),
                first,
                last,
                concurrency=args.concurrency,
                stt_latency_per_min=latency,
                stt_kind=stt_kind,
                heard_cache=harness.HeardCache(harness.HEARD_CACHE) if args.faithful else None,
            )
            for label in (f"backfill-{target}", f"no-op-{target}")
        ]
    finally:
        sandbox.stop()
        harness.remove_tree(work / str(target))
    for fig in runs:
        harness.print_run(fig, audio_minutes=load.audio_minutes if "backfill" in fig.label else 0)
    return load, runs[0], runs[1]


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    targets = [int(m) for m in args.minutes.split(",")]
    mode = "FAITHFUL sandbox" if args.faithful else "memory mode (sliced mono audio, header STT)"
    print(f"SANDBOX benchmark: peak RSS vs calls, {mode}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {harness.machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"settings: {args.days} days, concurrency {args.concurrency}, portal and client at "
        f"2 req/s, STT latency {args.stt_latency_ms:g} ms per audio minute"
    )
    work = Path(tempfile.mkdtemp(prefix="calltexts-scale-"))
    points = [_run_point(args, target, work) for target in targets]
    harness.remove_tree(work)

    print("\nsummary (peak RSS = VmHWM of the pipeline process; tree = with ffmpeg children)")
    header = (
        f"{'calls':>7} {'audio min':>10} {'ledger rows':>11} {'ledger MiB':>10} "
        f"{'backfill RSS':>12} {'tree':>6} {'no-op RSS':>9} {'backfill s':>10} {'no-op s':>7}"
    )
    print(header)
    for load, full, noop in points:
        print(
            f"{full.calls:>7} {load.audio_minutes:>10,.0f} {full.ledger_rows:>11} "
            f"{full.ledger_bytes / 2**20:>10.1f} {full.child['peak_rss_mib']:>12.0f} "
            f"{full.peak_rss_tree_mib:>6.0f} {noop.child['peak_rss_mib']:>9.0f} "
            f"{full.wall_sec:>10.0f} {noop.wall_sec:>7.1f}"
        )
    if len(points) >= 2:
        (_, a, na), (_, b, nb) = points[0], points[-1]
        calls = (b.calls - a.calls) / 1000
        print(
            f"per 1,000 more calls: backfill RSS "
            f"{(b.child['peak_rss_mib'] - a.child['peak_rss_mib']) / calls:+.1f} MiB, no-op RSS "
            f"{(nb.child['peak_rss_mib'] - na.child['peak_rss_mib']) / calls:+.1f} MiB, ledger "
            f"{(b.ledger_bytes - a.ledger_bytes) / 2**20 / calls:+.2f} MiB on disk"
        )
    return 0


if __name__ == "__main__":
    harness.run_main(main)
