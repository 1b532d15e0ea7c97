"""Benchmark: a 60-day backfill of the sandbox portal, the way users run it.

    python benchmarks/full_period.py                       # 60 days x 150 calls
    python benchmarks/full_period.py --days 3 --calls-per-day 50   # quick
    python benchmarks/full_period.py --stt-latency-ms 300  # STT, not CPU, dominates
    python benchmarks/full_period.py --no-download-metered --no-pace-downloads  # #26 goal 4

One `calltexts run`-style run (export_run.run_export: one Dagster run over the range,
range tags) in a child process against the SANDBOX (Bitrix24 emulator limited to 2 req/s,
client limiter at 2 req/s; STT emulator with latency per audio minute, listening to every
upload). Then a no-op re-run of the same range, then the sequential baseline: one more day
at concurrency 1 (one download and one STT request at a time: each stage goes one call at a
time, as simple scripts do, the next download overlapping the current transcription) and at
--concurrency.
Drive downloads (the portal's /rest/ path) are paced by the client and metered by the
portal by default; `--no-pace-downloads` runs the export with BITRIX24_PACE_DOWNLOADS=false
and `--no-download-metered` serves them outside the portal's leaky bucket (the two readings
of docs/specs/bitrix24_downloads.md).
Recordings are rendered into an on-disk cache first (joined from pre-encoded MP3 frames:
seconds; timed apart, not part of the pipeline's wall time).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import harness
from harness import RunFigures, Workload

from calltexts_assets.billing.cost import PRICE_PER_MINUTE_USD


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--calls-per-day", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=10, help="calls at once in an asset")
    parser.add_argument(
        "--stt-latency-ms", type=float, default=30.0, help="STT latency per audio minute"
    )
    parser.add_argument(
        "--no-sequential-baseline", dest="sequential_baseline", action="store_false"
    )
    parser.add_argument("--baseline-days", type=int, default=1)
    parser.add_argument(
        "--pace-downloads",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="BITRIX24_PACE_DOWNLOADS of the export runs (default: true, the product's)",
    )
    parser.add_argument(
        "--download-metered",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="whether the sandbox portal meters Drive downloads in its leaky bucket "
        "(default: yes, the conservative reading of docs/specs/bitrix24_downloads.md)",
    )
    parser.add_argument(
        "--real-latency-sec",
        type=float,
        default=30.0,
        help="the real STT's time per audio minute, for the projection (the seed's worst: 30)",
    )
    parser.add_argument("--sla-hours", type=float, default=6.0)
    parser.add_argument(
        "--listen",
        action="store_true",
        help="the STT emulator listens to every upload during the runs (its CPU then competes "
        "with the pipeline's); by default it answers whole recordings from what the warm-up "
        "heard in them (same bytes, same words) and listens to anything else",
    )
    parser.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    parser.add_argument("--workdir", type=Path, help="run roots here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run roots")
    parser.add_argument(
        "--py-spy", action="store_true", help="profile the backfill's Python threads (py-spy)"
    )
    return parser.parse_args(argv)


def _projection(args: argparse.Namespace, fig: RunFigures, bound: float) -> None:
    """The run's wall time at the real STT's latency: the STT bound at that latency, divided
    by the efficiency measured against the bound here; and the concurrency the SLA needs."""
    sent_min = fig.stt["audio_seconds"] / 60
    efficiency = bound / fig.wall_sec
    real_bound = sent_min * args.real_latency_sec / args.concurrency
    projected = real_bound / efficiency
    sla = args.sla_hours * 3600
    needed = math.ceil(sent_min * args.real_latency_sec / (sla * efficiency))
    verdict = "within" if projected <= sla else "OVER"
    print(
        f"    PROJECTED at {args.real_latency_sec:g} s of STT per audio minute: "
        f"{projected / 3600:.1f} h at concurrency {args.concurrency} ({verdict} the "
        f"{args.sla_hours:g} h SLA; STT bound {real_bound / 3600:.1f} h / efficiency "
        f"{efficiency:.2f}); concurrency {needed} meets it"
    )


def throughput(fig: RunFigures, minutes: float) -> str:
    return (
        f"{fig.calls / fig.run_sec:.2f} calls/s, {minutes / fig.run_sec:.2f} audio min/s "
        f"(run_export time {fig.run_sec:.1f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    latency = args.stt_latency_ms / 1000
    first, last = harness.period_ending_yesterday(args.days)
    # Baseline days (if any) come first in the seed, so the two share one sandbox.
    base_first = first - timedelta(days=args.baseline_days) if args.sequential_baseline else first
    seeded_days = args.days + (first - base_first).days
    everything = Workload.seed(base_first, seeded_days, args.calls_per_day)
    main_load = Workload.seed(first, args.days, args.calls_per_day)

    print("SANDBOX benchmark: full-period backfill (synthetic calls, emulated services)")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {harness.machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"period: {first} .. {last}; workload: {main_load.describe()}")
    print(
        f"settings: concurrency {args.concurrency}; Bitrix24 portal limit 2 req/s (burst 50), "
        f"client limiter 2 req/s; STT latency {args.stt_latency_ms:g} ms per audio minute; "
        f"real retry waits (scale 1); {harness.WHOLE_RECORDINGS}"
    )
    print(
        f"Drive downloads: BITRIX24_PACE_DOWNLOADS={str(args.pace_downloads).lower()}; the "
        f"portal {'meters' if args.download_metered else 'does NOT meter'} them"
    )
    # whisper-1 + energy: the tone calls hold no speech for the default model's turns
    run_env = {
        **harness.WHOLE_RECORDINGS,
        "BITRIX24_PACE_DOWNLOADS": str(args.pace_downloads).lower(),
    }
    downloads_rated = args.pace_downloads or args.download_metered

    warm_sec, rendered, listened = harness.warm_audio_cache(
        everything, args.cache_dir, workers=max(1, harness.os.cpu_count() or 1)
    )
    print(
        f"warm-up (EXCLUDED from the pipeline figures): rendered {rendered} recordings and "
        f"listened to {listened} as the STT emulator will "
        f"({len(everything.with_audio) - rendered} already cached) in {warm_sec:,.1f} s "
        f"into {args.cache_dir}"
    )
    heard = None if args.listen else harness.HeardCache(harness.HEARD_CACHE)
    bandwidth = harness.loopback_bandwidth()
    print(f"loopback bandwidth (one TCP stream, measured): {bandwidth / 2**30:.2f} GiB/s")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="calltexts-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sandbox = harness.start_benchmark_sandbox(
        everything, args.cache_dir, download_metered=args.download_metered
    )
    try:
        print(f"\n1) backfill of {args.days} days, one run, concurrency {args.concurrency}")
        full = harness.run_export_child(
            "backfill",
            sandbox,
            work / "main",
            first,
            last,
            concurrency=args.concurrency,
            stt_latency_per_min=latency,
            py_spy=work / "backfill.pyspy.txt" if args.py_spy else None,
            heard_cache=heard,
            extra_env=run_env,
        )
        harness.print_run(full, audio_minutes=main_load.audio_minutes)
        if args.py_spy and (work / "backfill.pyspy.txt").exists():
            harness.print_top_frames(work / "backfill.pyspy.txt")
        bound, parts = harness.lower_bound(
            full,
            latency_per_min=latency,
            concurrency=args.concurrency,
            rps=2,
            bandwidth=bandwidth,
            downloads_rated=downloads_rated,
        )
        terms = ", ".join(f"{k} {v:,.1f} s" for k, v in parts.items())
        print(f"    lower bound = max({terms})")
        print(
            f"    lower bound {bound:,.1f} s; EFFICIENCY bound / wall = "
            f"{bound / full.wall_sec:.2f} (run_export alone: {bound / full.run_sec:.2f})"
        )
        # The bound above leaves out that pipeline and emulators share this machine's cores.
        cpu_floor = full.cpu_floor_sec
        print(
            f"    with the CPU floor as a fourth term: bound {max(bound, cpu_floor):,.1f} s, "
            f"efficiency {max(bound, cpu_floor) / full.wall_sec:.2f}"
        )
        print(f"    throughput: {throughput(full, main_load.audio_minutes)}")
        harness.print_stt_ratios(full, main_load, PRICE_PER_MINUTE_USD)
        right, total, cross_right, cross_total = harness.role_accuracy(full, main_load)
        print(
            f"    ROLE ACCURACY (stereo calls, against the scripts): {right:,} of {total:,} words "
            f"under the right role = {right / max(total, 1):.4f}; cross-talk words "
            f"{cross_right:,} of {cross_total:,} = {cross_right / max(cross_total, 1):.4f} "
            f"({cross_total / max(total, 1):.1%} of the words)"
        )
        _projection(args, full, bound)

        print(f"\n2) no-op re-run of the same {args.days} days (target < 30 s)")
        again = harness.run_export_child(
            "no-op",
            sandbox,
            work / "main",
            first,
            last,
            concurrency=args.concurrency,
            stt_latency_per_min=latency,
            heard_cache=heard,
            extra_env=run_env,
        )
        harness.print_run(again, audio_minutes=0)
        downloads = again.portal["http_requests"].get("records", 0)
        verdict = "OK" if again.wall_sec < 30 and downloads == 0 else "MISSED"
        print(
            f"    {verdict}: {again.wall_sec:.1f} s wall, {downloads} downloads, "
            f"{again.stt['requests']} STT requests"
        )

        if args.sequential_baseline:
            _baseline(args, sandbox, work, base_first, first, full, main_load, latency, heard)
    finally:
        sandbox.stop()
        if not args.keep:
            harness.remove_tree(work)
    return 0


def _baseline(
    args: argparse.Namespace,
    sandbox: harness.Sandbox,
    work: Path,
    base_first: date,
    first: date,
    full: RunFigures,
    main_load: Workload,
    latency: float,
    heard: harness.HeardCache | None,
) -> None:
    base_last = first - timedelta(days=1)
    env = {**harness.WHOLE_RECORDINGS, "BITRIX24_PACE_DOWNLOADS": str(args.pace_downloads).lower()}
    load = Workload.seed(base_first, args.baseline_days, args.calls_per_day)
    print(
        f"\n3) sequential baseline on a SUBSET: {args.baseline_days} other days "
        f"({base_first} .. {base_last}: {load.describe()}), "
        "concurrency 1 (one call at a time per stage)"
    )
    seq = harness.run_export_child(
        "sequential",
        sandbox,
        work / "sequential",
        base_first,
        base_last,
        concurrency=1,
        stt_latency_per_min=latency,
        heard_cache=heard,
        extra_env=env,
    )
    harness.print_run(seq, audio_minutes=load.audio_minutes)
    print(f"    throughput: {throughput(seq, load.audio_minutes)}")
    print(f"   the same {args.baseline_days} days at concurrency {args.concurrency}:")
    same = harness.run_export_child(
        "concurrent-subset",
        sandbox,
        work / "concurrent-subset",
        base_first,
        base_last,
        concurrency=args.concurrency,
        stt_latency_per_min=latency,
        heard_cache=heard,
        extra_env=env,
    )
    harness.print_run(same, audio_minutes=load.audio_minutes)
    print(f"    throughput: {throughput(same, load.audio_minutes)}")
    ratio_same = seq.run_sec / same.run_sec
    per_call_seq = seq.calls / seq.run_sec
    per_call_full = full.calls / full.run_sec
    per_min_seq = load.audio_minutes / seq.run_sec
    per_min_full = main_load.audio_minutes / full.run_sec
    print(
        f"    SPEED-UP concurrent vs sequential on the same {seq.calls} calls: "
        f"{ratio_same:.2f}x (run_export time {seq.run_sec:.1f} s -> {same.run_sec:.1f} s)"
    )
    print(
        f"    SPEED-UP of the full {args.days}-day run vs the sequential subset, per call: "
        f"{per_call_full / per_call_seq:.2f}x, per audio minute: "
        f"{per_min_full / per_min_seq:.2f}x (different calls: per-call figures, not totals)"
    )


if __name__ == "__main__":
    harness.run_main(main)
