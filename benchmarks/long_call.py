"""Benchmark: memory independent of a recording's length.

    python benchmarks/long_call.py                   # a 5-minute and a 6-hour stereo call
    python benchmarks/long_call.py --hours 12

Two one-call days of the SANDBOX portal, exported one after the other in fresh child
processes (the `calltexts run` code path): a 5-minute stereo call, then one left open for
hours. Prints each run's peak RSS (VmHWM of the pipeline process), the ratio of the two, and
how much the sandbox process itself (portal and STT emulator, which render, serve and listen
to the long call) grew while serving it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
import psutil

from calltexts_sandbox.calls.seed import recording_format, recording_is_stereo


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--short-minutes", type=float, default=5.0)
    parser.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    parser.add_argument("--keep", action="store_true", help="keep the run roots")
    return parser.parse_args(argv)


def one_call(day_rows: list[dict[str, Any]], seconds: int) -> dict[str, Any]:
    """The day's first stereo MP3 call with a recording, made `seconds` long."""
    row = next(
        r
        for r in day_rows
        if r.get("RECORD_FILE_ID")
        and recording_is_stereo(r["CALL_ID"])
        and recording_format(r["CALL_ID"]) == "mp3"
    )
    return {**row, "CALL_DURATION": str(seconds)}


class _OwnRss(threading.Thread):
    """Peak RSS of this process (the sandbox) while a run goes on."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process(os.getpid())
        self.start_rss = self.peak = self.me.memory_info().rss
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            self.peak = max(self.peak, self.me.memory_info().rss)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return (self.peak - self.start_rss) / 2**20


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    first, _ = harness.period_ending_yesterday(2)
    load = harness.Workload.seed(first, 2, 20)
    days = [first, first + timedelta(days=1)]
    by_day = [
        [r for r in load.rows if r["CALL_START_DATE"].startswith(d.isoformat())] for d in days
    ]
    short = one_call(by_day[0], round(args.short_minutes * 60))
    long = one_call(by_day[1], round(args.hours * 3600))

    print("SANDBOX benchmark: peak memory against the length of one recording")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {harness.machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    sandbox = harness.start_benchmark_sandbox(load, args.cache_dir)
    sandbox.portal.set_rows([short, long])
    work = Path(tempfile.mkdtemp(prefix="calltexts-long-"))
    try:
        started = time.monotonic()
        for row in (short, long):  # rendered into the cache first: not the pipeline's work
            sandbox.portal.audio.open(row["CALL_ID"], int(row["CALL_DURATION"]), True)
        print(f"warm-up (EXCLUDED): both recordings rendered in {time.monotonic() - started:.1f} s")
        figures = []
        for label, row, day in (("short", short, days[0]), ("long", long, days[1])):
            seconds = int(row["CALL_DURATION"])
            own = _OwnRss()
            own.start()
            fig = harness.run_export_child(
                label, sandbox, work / label, day, day, concurrency=10, stt_latency_per_min=0.0
            )
            grown = own.stop()
            size = sandbox.portal.audio.open(row["CALL_ID"], seconds, True)
            mib = (size.stat().st_size if isinstance(size, Path) else len(size)) / 2**20
            print(f"\n{label}: one stereo call of {seconds / 3600:.2f} h, recording {mib:,.1f} MiB")
            harness.print_run(fig, audio_minutes=seconds / 60)
            print(f"    sandbox process (portal + STT emulator) grew {grown:,.0f} MiB serving it")
            figures.append(fig)
        short_rss, long_rss = (f.child["peak_rss_mib"] for f in figures)
        print(
            f"\nPEAK RSS of the pipeline: {short_rss:,.0f} MiB ({args.short_minutes:g} min) -> "
            f"{long_rss:,.0f} MiB ({args.hours:g} h): ratio {long_rss / short_rss:.3f} "
            f"({'within' if long_rss <= 1.1 * short_rss else 'OVER'} the 10 % target)"
        )
    finally:
        sandbox.stop()
        if not args.keep:
            harness.remove_tree(work)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
