"""Benchmark: how close a backfill bound by the STT comes to the bound, per call order.

    python benchmarks/stt_bound.py                                  # 10 days x 100 calls
    python benchmarks/stt_bound.py --days 3 --calls-per-day 50      # quick
    python benchmarks/stt_bound.py --orders longest_first           # one order only
    python benchmarks/stt_bound.py --py-spy                         # where the CPU goes
    python benchmarks/stt_bound.py --baseline-tree /tmp/base        # alternate with another tree

The same period is exported once per call order (`CALLTEXTS_CALL_ORDER`: longest_first, day),
each into a fresh ledger and storage, the way `calltexts run` does (a child process, one
Dagster run over the range) against the SANDBOX. The STT emulator answers each request after
--stt-latency-ms per audio minute, and the portal's rate (emulator and client limiter) is
raised (--portal-rate) so that the STT is the bound: bound = the sum of the STT latency of
every request / concurrency. The emulator records when each transcription request came and
when it was answered; from those, per order: wall / bound, the mean number of STT slots busy
over the STT's window (first request to last answer), the slots busy in its last 5 %, and the
last request (its length, and how long before the end it started).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from harness import RunFigures, Workload

from calltexts_sandbox.stt.app import SttEmulator

ORDERS = ("longest_first", "day")
STT_ENV = harness.WHOLE_RECORDINGS


class TimedStt(SttEmulator):
    """The STT emulator, recording (arrival, answer) of every successful transcription."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.intervals: list[tuple[float, float]] = []

    async def _transcribe(self, request: Any) -> Any:
        arrived = time.monotonic()
        response = await super()._transcribe(request)
        if response.status_code == 200:
            with self._lock:
                self.intervals.append((arrived, time.monotonic()))
        return response

    def stats(self) -> dict[str, Any]:
        figures = super().stats()
        with self._lock:
            figures["intervals"] = sorted(self.intervals)
        return figures


def busy(intervals: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Mean number of requests in flight between `start` and `end`."""
    if end <= start:
        return 0.0
    covered = sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)
    return covered / (end - start)


def slot_figures(
    intervals: Sequence[tuple[float, float]], started: float, ended: float, tail: float = 0.05
) -> dict[str, float]:
    """Over the STT's window (first arrival to last answer): mean slots busy, slots busy in
    the last `tail` of it, and the last request to arrive (its seconds, started how long
    before the end); and the run's time outside it (the child started at `started`, exited
    at `ended`)."""
    if not intervals:
        return {}
    first = min(a for a, _ in intervals)
    last = max(b for _, b in intervals)
    window = last - first
    arrived, answered = max(intervals)
    return {
        "before_first_sec": first - started,
        "after_last_sec": ended - last,
        "window_sec": window,
        "mean_busy": busy(intervals, first, last),
        "tail_busy": busy(intervals, last - tail * window, last),
        "last_request_sec": answered - arrived,
        "last_started_before_end_sec": last - arrived,
    }


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--calls-per-day", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--stt-latency-ms", type=float, default=3000.0, help="STT latency per audio minute"
    )
    parser.add_argument(
        "--portal-rate",
        type=float,
        default=50.0,
        help="the portal's leaky bucket and the client's limiter, req/s (raised: STT-bound)",
    )
    parser.add_argument("--orders", default=",".join(ORDERS), help="comma-separated")
    parser.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    parser.add_argument("--workdir", type=Path, help="run roots here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run roots")
    parser.add_argument(
        "--py-spy", action="store_true", help="profile the pipeline's Python threads (py-spy)"
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="another checkout of the project: each order is run on it too, alternating with "
        "this tree (same sandbox, same settings), for a before / after in one session",
    )
    args = parser.parse_args(argv)
    args.orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    unknown = set(args.orders) - set(ORDERS)
    if unknown:
        parser.error(f"--orders: unknown {sorted(unknown)}; expected some of {ORDERS}")
    return args


def _report(fig: RunFigures, latency_per_min: float, concurrency: int) -> dict[str, float]:
    stt_sum = latency_per_min * fig.stt["audio_seconds"] / 60
    bound = stt_sum / concurrency
    slots = slot_figures(fig.stt["intervals"], fig.started_at, fig.started_at + fig.wall_sec)
    print(
        f"    bound = STT latency {stt_sum:,.1f} s / concurrency {concurrency} = {bound:,.1f} s; "
        f"WALL / BOUND {fig.wall_sec / bound:.3f} (run_export alone {fig.run_sec / bound:.3f})"
    )
    if slots:
        print(
            f"    STT window {slots['window_sec']:,.1f} s: mean slots busy "
            f"{slots['mean_busy']:.2f} of {concurrency}; in its last 5 % "
            f"{slots['tail_busy']:.2f} of {concurrency}; the last request "
            f"{slots['last_request_sec']:.1f} s long, started "
            f"{slots['last_started_before_end_sec']:.1f} s before the end"
        )
        print(
            f"    outside the STT window: {slots['before_first_sec']:.1f} s from the child's "
            f"start to the first request (import, Dagster, listing, first downloads), "
            f"{slots['after_last_sec']:.1f} s from the last answer to its exit (later assets)"
        )
    return {"bound": bound, "wall": fig.wall_sec, "run": fig.run_sec, **slots}


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    latency = args.stt_latency_ms / 1000
    first, last = harness.period_ending_yesterday(args.days)
    load = Workload.seed(first, args.days, args.calls_per_day)
    print("SANDBOX benchmark: STT-bound backfill, call orders side by side")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {harness.machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"period: {first} .. {last}; workload: {load.describe()}")
    print(
        f"settings: concurrency {args.concurrency}; STT latency {args.stt_latency_ms:g} ms per "
        f"audio minute; portal limit and client limiter {args.portal_rate:g} req/s; {STT_ENV}"
    )
    warm_sec, rendered, listened = harness.warm_audio_cache(
        load, args.cache_dir, workers=max(1, harness.os.cpu_count() or 1)
    )
    print(f"warm-up (EXCLUDED): rendered {rendered}, listened to {listened} in {warm_sec:,.1f} s")
    heard = harness.HeardCache(harness.HEARD_CACHE)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="calltexts-sttbound-"))
    work.mkdir(parents=True, exist_ok=True)
    sandbox = harness.start_benchmark_sandbox(load, args.cache_dir, portal_rate=args.portal_rate)
    trees: dict[str, Path | None] = {"": None}
    if args.baseline_tree:
        trees = {"": None, "baseline ": args.baseline_tree.resolve()}
    results: dict[str, dict[str, float]] = {}
    try:
        for order in args.orders:
            for name, tree in trees.items():
                label = f"{name}{order}"
                print(f"\n{label}: one run of {args.days} days, CALLTEXTS_CALL_ORDER={order}")
                spy = work / f"{label.replace(' ', '_')}.pyspy.txt" if args.py_spy else None
                fig = harness.run_export_child(
                    label.replace(" ", "_"),
                    sandbox,
                    work / label.replace(" ", "_"),
                    first,
                    last,
                    concurrency=args.concurrency,
                    stt_latency_per_min=latency,
                    requests_per_second=args.portal_rate,
                    stt_kind=TimedStt,
                    heard_cache=heard,
                    extra_env={**STT_ENV, "CALLTEXTS_CALL_ORDER": order},
                    py_spy=spy,
                    tree=tree,
                )
                harness.print_run(fig, audio_minutes=load.audio_minutes)
                right, total, _, _ = harness.role_accuracy(fig, load)
                print(
                    f"    ROLE ACCURACY (stereo calls, against the scripts): {right:,} of "
                    f"{total:,} words under the right role = {right / max(total, 1):.4f}"
                )
                if spy is not None and spy.exists():
                    harness.print_top_frames(spy, count=14)
                results[label] = _report(fig, latency, args.concurrency)
    finally:
        sandbox.stop()
        if not args.keep:
            harness.remove_tree(work)
    header = "wall/bound  run_export/bound  mean slots  last-5% slots  bound s"
    print(f"\n{'order':<23} {header}")
    for order, r in results.items():
        print(
            f"{order:<23} {r['wall'] / r['bound']:>10.3f}  {r['run'] / r['bound']:>16.3f}  "
            f"{r.get('mean_busy', 0):>10.2f}  {r.get('tail_busy', 0):>13.2f}  {r['bound']:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    harness.run_main(main)
