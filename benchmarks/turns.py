"""Benchmark: dialogue by roles on a json-only model (gpt-transcribe, STT_ROLE_MODE=turns)
against whisper-1 with word times (STT_ROLE_MODE=energy), on the same SANDBOX calls.

    python benchmarks/turns.py                             # 3 days x 50 calls
    python benchmarks/turns.py --days 1 --calls-per-day 10 # quick

Two `calltexts run`-style runs in a child process each, a fresh STT emulator each (answering
as the model asked for: gpt-transcribe json without times, whisper-1 verbose_json with word
times), both with the same latency per audio minute and per request. Printed per run: words
under the right role and in the right order (stereo calls, against each call's script, its
cross-talk included), seconds billed (`usage.seconds` summed, the emulator's count) / call
seconds, requests per call, wall time; then the ratios between the runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from difflib import SequenceMatcher
from pathlib import Path

import harness
from harness import RunFigures, Workload

RUNS = {
    "whisper-1 + energy": {"WHISPER_MODEL": "whisper-1", "STT_ROLE_MODE": "energy"},
    "gpt-transcribe + turns": {"WHISPER_MODEL": "gpt-transcribe", "STT_ROLE_MODE": "turns"},
}


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--calls-per-day", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--stt-latency-ms", type=float, default=300.0, help="per audio minute")
    parser.add_argument("--stt-request-ms", type=float, default=200.0, help="per request")
    parser.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def word_order(fig: RunFigures, workload: Workload) -> tuple[int, int]:
    """(words in the right order, words) over the stereo calls: the transcript's words, both
    roles, in the order of its lines, against the script's words in the order they start
    (longest common subsequence: a word out of order, or missing, is not counted)."""
    from calltexts_assets.files.storage_keys import transcript_key
    from calltexts_sandbox.calls.script import call_script

    in_order = total = 0
    for row in workload.with_audio:
        call_id = row["CALL_ID"]
        if not harness.recording_is_stereo(call_id):
            continue
        started = datetime.fromisoformat(row["CALL_START_DATE"])
        path = fig.home / transcript_key(call_id, started) if fig.home else None
        if path is None or not path.exists():
            continue
        heard = [
            word
            for line in path.read_text(encoding="utf-8").splitlines()
            if (match := harness._LINE.match(line))
            for word in match[2].split()
        ]
        script = call_script(call_id, int(float(row["CALL_DURATION"])), True)
        said = [w.text for w in script.words()]
        matcher = SequenceMatcher(None, said, heard, autojunk=False)
        in_order += sum(block.size for block in matcher.get_matching_blocks())
        total += len(said)
    return in_order, total


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    first, last = harness.period_ending_yesterday(args.days)
    workload = Workload.seed(first, args.days, args.calls_per_day)
    call_sec = workload.audio_minutes * 60
    print("SANDBOX benchmark: roles on a json-only model (turns) vs word times (energy)")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {harness.machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"period: {first} .. {last}; workload: {workload.describe()}")
    print(
        f"settings: concurrency {args.concurrency}; STT latency {args.stt_latency_ms:g} ms per "
        f"audio minute + {args.stt_request_ms:g} ms per request"
    )
    harness.warm_audio_cache(workload, args.cache_dir, workers=max(1, harness.os.cpu_count() or 1))
    heard = harness.HeardCache(harness.HEARD_CACHE)
    work = Path(tempfile.mkdtemp(prefix="calltexts-bench-turns-"))
    sandbox = harness.start_benchmark_sandbox(workload, args.cache_dir)
    results: dict[str, tuple[RunFigures, float, float, float]] = {}
    try:
        for n, (label, env) in enumerate(RUNS.items(), start=1):
            print(f"\n{n}) {label}")
            fig = harness.run_export_child(
                label.split()[0],
                sandbox,
                work / label.split()[0],
                first,
                last,
                concurrency=args.concurrency,
                stt_latency_per_min=args.stt_latency_ms / 1000,
                stt_fixed_latency_sec=args.stt_request_ms / 1000,
                heard_cache=heard,
                extra_env=env,
            )
            harness.print_run(fig, audio_minutes=workload.audio_minutes)
            right, total, cross_right, cross_total = harness.role_accuracy(fig, workload)
            ordered, words = word_order(fig, workload)
            transcribed = fig.statuses.get("transcribed", 0)
            billed = fig.stt["billed_seconds"] / call_sec
            per_call = fig.stt["transcriptions"] / max(transcribed, 1)
            print(
                f"    ROLE ACCURACY {right:,} / {total:,} = {right / max(total, 1):.4f} "
                f"(cross-talk words {cross_right} / {cross_total}); WORDS IN ORDER "
                f"{ordered:,} / {words:,} = {ordered / max(words, 1):.4f}"
            )
            print(
                f"    BILLED / CALL SECONDS {fig.stt['billed_seconds']:,} / {call_sec:,.0f} = "
                f"{billed:.3f}; REQUESTS PER CALL {fig.stt['transcriptions']:,} / "
                f"{transcribed} = {per_call:.2f}; wall {fig.wall_sec:,.1f} s"
            )
            results[label] = (fig, right / max(total, 1), billed, per_call)
        (base, *_), (turns, *_) = results.values()
        print(
            f"\nwall gpt-transcribe + turns / whisper-1 + energy = "
            f"{turns.wall_sec:,.1f} / {base.wall_sec:,.1f} s = {turns.wall_sec / base.wall_sec:.2f}"
        )
    finally:
        sandbox.stop()
        if not args.keep:
            harness.remove_tree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
