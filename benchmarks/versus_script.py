"""Benchmark: calltexts against the sequential script a user would write instead (#26 goal 5).

    python benchmarks/versus_script.py                    # 3 x 50 and 10 x 100
    python benchmarks/versus_script.py --shapes 1x10      # quick

Per shape (days x calls per day, the last full days), one SANDBOX: the portal at Bitrix24's
2 req/s with Drive downloads metered, the STT emulator answering after --stt-latency-ms per
audio minute (a fresh one per run, so its figures are that run's). On it, one after the
other:
- the product as `calltexts run` runs it (a child process, one Dagster run, concurrency 10),
  whisper-1 + energy with STT_SEND=all, so each recording goes to the STT whole, as the
  script sends it;
- `benchmarks/sequential_script.py` over the same period (one call at a time).
Printed: wall and CPU of each (the whole process: imports included; the product's ffmpeg
children included), their ratios, the product's lower bound (`harness.lower_bound`: the STT
latency / concurrency, the paced REST requests / rate, the bytes / loopback bandwidth), the
script's floor (the STT latency of its requests, one after another), what each transcribed,
and the machine's load average. Recordings are rendered and heard before the runs (timed
apart, as in the other benchmarks).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import harness
from harness import RunFigures, ScriptFigures, Workload

SCRIPT = Path(__file__).resolve().parent / "sequential_script.py"


@dataclass
class Result:
    shape: str
    workload: Workload
    product: RunFigures
    script: ScriptFigures
    script_texts: int
    script_stt: dict
    bound: float
    script_floor: float


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="3x50,10x100", help="DAYSxCALLS, comma-separated")
    parser.add_argument("--concurrency", type=int, default=10, help="the product's")
    parser.add_argument(
        "--stt-latency-ms", type=float, default=1000.0, help="STT latency per audio minute"
    )
    parser.add_argument(
        "--portal-rate", type=float, default=2.0, help="portal and client limiter, req/s"
    )
    parser.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    parser.add_argument("--workdir", type=Path, help="run roots here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run roots")
    args = parser.parse_args(argv)
    try:
        args.shapes = [tuple(int(n) for n in s.lower().split("x")) for s in args.shapes.split(",")]
    except ValueError:
        parser.error("--shapes: DAYSxCALLS, comma-separated, e.g. 3x50,10x100")
    return args


def _script_env(sandbox: harness.Sandbox, stt_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "BITRIX24_WEBHOOK_URL": sandbox.webhook_url,
        "OPENAI_BASE_URL": f"{stt_url}/v1",
        "OPENAI_API_KEY": harness.SANDBOX_API_KEY,
        "NO_PROXY": "127.0.0.1,localhost",
    }


def run_shape(
    args: argparse.Namespace, days: int, per_day: int, work: Path, bandwidth: float
) -> Result:
    shape = f"{days}x{per_day}"
    latency = args.stt_latency_ms / 1000
    first, last = harness.period_ending_yesterday(days)
    workload = Workload.seed(first, days, per_day)
    print(f"\n{shape}: {first} .. {last}; {workload.describe()}")
    warm_sec, rendered, listened = harness.warm_audio_cache(
        workload, args.cache_dir, workers=os.cpu_count() or 1
    )
    print(f"  warm-up (excluded): rendered {rendered}, heard {listened} in {warm_sec:.1f} s")
    heard = harness.HeardCache(harness.HEARD_CACHE)
    sandbox = harness.start_benchmark_sandbox(
        workload, args.cache_dir, portal_rate=args.portal_rate
    )
    try:
        product = harness.run_export_child(
            f"product-{shape}",
            sandbox,
            work / f"product-{shape}",
            first,
            last,
            concurrency=args.concurrency,
            stt_latency_per_min=latency,
            requests_per_second=args.portal_rate,
            heard_cache=heard,
            extra_env=harness.WHOLE_RECORDINGS,
        )
        harness.print_run(product, audio_minutes=workload.audio_minutes)
        bound, parts = harness.lower_bound(
            product,
            latency_per_min=latency,
            concurrency=args.concurrency,
            rps=args.portal_rate,
            bandwidth=bandwidth,
        )
        terms = ", ".join(f"{k} {v:,.1f} s" for k, v in parts.items())
        print(f"    product's lower bound {bound:,.1f} s = max({terms})")

        sandbox.portal.reset_stats()
        out = work / f"script-{shape}"
        with harness.fresh_stt(latency, heard_cache=heard) as (stt, stt_server):
            script = harness.run_script_child(
                [sys.executable, str(SCRIPT), first.isoformat(), last.isoformat(), str(out)],
                _script_env(sandbox, stt_server.url),
                work / f"script-{shape}.log",
            )
            stt_stats = stt.stats()
        texts = len(list(out.glob("*.txt"))) if out.exists() else 0
        floor = latency * stt_stats["audio_seconds"] / 60
        failed = (work / f"script-{shape}.log").read_text(errors="replace").strip().splitlines()
        print(
            f"  [script-{shape}] exit code {script.exit_code}; {texts} transcripts written, "
            f"{len(failed)} lines on stderr {failed[:3]}"
        )
        print(
            f"    wall {script.wall_sec:,.1f} s; CPU {script.cpu_sec:,.1f} s; peak RSS "
            f"{script.peak_rss_mib:,.0f} MiB; load average {script.load_average:.1f}"
        )
        p = sandbox.portal.stats()
        print(
            f"    portal requests: HTTP {p['http_requests']}, responses {p['responses']}, "
            f"refused by its rate limit {p['rate_limited']}"
        )
        print(
            f"    STT requests {stt_stats['requests']} (by status {stt_stats['by_status']}, "
            f"{stt_stats['audio_seconds'] / 60:,.0f} audio minutes); its floor: the STT "
            f"latency of its requests one after another {floor:,.1f} s"
        )
    finally:
        sandbox.stop()
    return Result(shape, workload, product, script, texts, stt_stats, bound, floor)


def print_table(results: list[Result]) -> None:
    print(
        "\nshape   product wall  script wall  product/script  product/bound  bound s  "
        "product CPU  script CPU  CPU product/script  transcribed product/script  load"
    )
    for r in results:
        p, s = r.product, r.script
        loads = f"{p.load_average:.1f} / {s.load_average:.1f}"
        done = f"{p.statuses.get('transcribed', 0)} / {r.script_texts}"
        print(
            f"{r.shape:<7} {p.wall_sec:>10.1f} s {s.wall_sec:>10.1f} s "
            f"{p.wall_sec / s.wall_sec:>15.3f} {p.wall_sec / r.bound:>14.2f} {r.bound:>8.1f} "
            f"{p.pipeline_cpu_sec:>10.1f} s {s.cpu_sec:>9.1f} s "
            f"{p.pipeline_cpu_sec / max(s.cpu_sec, 1e-9):>19.1f} {done:>27}  {loads}"
        )
    print("(product/script < 1: the product is faster; load: product run / script run)")
    for r in results:
        p, s = r.product, r.script
        print(
            f"{r.shape}: the script took {s.wall_sec / p.wall_sec:.1f}x the product's wall "
            f"(run_export alone {s.wall_sec / p.run_sec:.1f}x) and the product "
            f"{p.pipeline_cpu_sec / max(s.cpu_sec, 1e-9):.1f}x the script's CPU; the script "
            f"at its floor {s.wall_sec / r.script_floor:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    print("SANDBOX benchmark: calltexts vs the sequential script a user would write")
    print(f"machine: {harness.machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"settings: product concurrency {args.concurrency}, {harness.WHOLE_RECORDINGS}; portal "
        f"and client limiter {args.portal_rate:g} req/s, Drive downloads metered; STT latency "
        f"{args.stt_latency_ms:g} ms per audio minute"
    )
    bandwidth = harness.loopback_bandwidth()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="calltexts-versus-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = [run_shape(args, d, n, work, bandwidth) for d, n in args.shapes]
    finally:
        if not args.keep:
            harness.remove_tree(work)
    print_table(results)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
