"""Benchmark: STT_SEND=speech against STT_SEND=all on SANDBOX calls that hold what real calls
hold (issue #23): ring-back, holds of music or silence, noise-only and music-only calls
(`calltexts_sandbox/calls/content.py`, proportions and sources in
docs/specs/sandbox_call_content.md), the dialogue said by espeak-ng.

    python benchmarks/sandbox_content.py                             # 3 days x 50 calls
    python benchmarks/sandbox_content.py --days 1 --calls-per-day 10 # quick

One `calltexts run`-style run per STT_SEND in a child process each (the export as a user
runs it), against the sandbox seeded with `content="speech"`, a fresh STT emulator each that
hears the speech calls and answers as whisper-1 does over what is not speech: invented
subtitle credits, music tags, repetition loops, the silence line (docs/specs/
sandbox_call_content.md §3). Model whisper-1, roles by energy (word times): the path on
which what is sent is the whole call unless STT_SEND=speech leaves the non-speech out.

Printed per run, as ratios of that run: STT seconds sent / call seconds (the emulator's
decoded seconds; goal <= 0.85), seconds billed, words under the right role / words said (stereo
calls) and words found / words said (all calls) against each call's script, invented lines
reaching a transcript (a transcript line holding a word beyond the script's: the invented
lines' words), the calls that came out `no_speech` and their cost, and the verdict of every
noise-only and music-only call.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
from harness import RunFigures, Workload

from calltexts_assets.files.storage_keys import transcript_key
from calltexts_assets.state.ledger import Ledger
from calltexts_sandbox.calls.content import CONVERSATION, speech_script
from calltexts_sandbox.calls.seed import recording_is_stereo
from calltexts_sandbox.portal.files import SPEECH
from calltexts_sandbox.stt import answers
from calltexts_sandbox.stt.app import SttEmulator
from calltexts_sandbox.stt.hearing import HeardCache
from calltexts_tests.support.child_run import ChildLayout

MODEL = {"WHISPER_MODEL": "whisper-1", "STT_ROLE_MODE": "energy"}
PRICE = 0.006  # whisper-1, USD per minute, billed per second
_LINE = re.compile(r"^\[[\d:]+\] (Оператор|Клиент|Собеседник)(?: [^:]*)?: (.*)$")
_ROLE = {"Оператор": "operator", "Клиент": "client", "Собеседник": None}


class SpeechStt(SttEmulator):
    """The emulator hearing the speech calls (`hearing="speech"`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(hearing=SPEECH, **kwargs)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--calls-per-day", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path, default=harness.DEFAULT_CACHE)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def _words(text: str) -> list[str]:
    return [w.strip(".,?!…").lower() for w in text.split() if w.strip(".,?!…")]


def measure(fig: RunFigures, workload: Workload, root: Path) -> dict[str, Any]:
    """The run's words, roles and invented lines against each call's script, and its ledger's
    no_speech calls and their cost."""
    right = said_stereo = found = said = invented_lines = 0
    kinds: dict[str, Counter[str]] = {}
    ledger = Ledger(ChildLayout.under(root).ledger_url)
    try:
        days = sorted({datetime.fromisoformat(r["CALL_START_DATE"]).date() for r in workload.rows})
        records = {r.call_id: r for r in ledger.records([d.isoformat() for d in days])}
    finally:
        ledger.dispose()
    for row in workload.with_audio:
        call_id = row["CALL_ID"]
        stereo = recording_is_stereo(call_id)
        script, content = speech_script(call_id, int(float(row["CALL_DURATION"])), stereo)
        record = records.get(call_id)
        verdict = (record.verdict or record.status) if record else "missing"
        kinds.setdefault(content.kind, Counter())[verdict] += 1
        path = fig.home / transcript_key(call_id, datetime.fromisoformat(row["CALL_START_DATE"]))
        lines: list[tuple[str | None, list[str]]] = []
        if fig.home and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                match = _LINE.match(line)
                if match:
                    lines.append((_ROLE[match[1]], _words(match[2])))
        expected = Counter(w.text for w in script.words())
        got = Counter(w for _, words in lines for w in words)
        said += sum(expected.values())
        found += sum((expected & got).values())
        spare = expected.copy()
        for _, words in lines:  # a line with a word beyond the script's is an invented one
            extra = False
            for w in words:
                if spare[w] > 0:
                    spare[w] -= 1
                else:
                    extra = True
            invented_lines += extra
        if stereo and content.kind == CONVERSATION:
            for role in ("operator", "client"):
                want = Counter(w.text for w in script.words(role))
                have = Counter(w for who, words in lines if who == role for w in words)
                said_stereo += sum(want.values())
                right += sum((want & have).values())
    no_speech = [r for r in records.values() if r.verdict == "no_speech"]
    return {
        "role": (right, said_stereo),
        "words": (found, said),
        "invented_lines": invented_lines,
        "no_speech": (len(no_speech), sum(r.cost or 0.0 for r in no_speech)),
        "kinds": kinds,
    }


def _kind_of(text: str) -> str:
    if text == answers.MUSIC_TAG:
        return "music tag"
    if text == answers.CREDIT:
        return "credit"
    if text == answers.SILENCE_TEXT:
        return "silence line"
    return "repetition loop"


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    first, last = harness.period_ending_yesterday(args.days)
    workload = Workload.seed(first, args.days, args.calls_per_day)
    call_sec = workload.audio_minutes * 60
    print(harness.machine())
    print(workload.describe())
    kinds = Counter(
        speech_script(r["CALL_ID"], int(float(r["CALL_DURATION"])), False)[1].kind
        for r in workload.with_audio
    )
    non_speech = sum(
        speech_script(r["CALL_ID"], int(float(r["CALL_DURATION"])), False)[1].non_speech_sec(
            int(float(r["CALL_DURATION"]))
        )
        for r in workload.with_audio
    )
    print(
        f"content: {dict(kinds)}; ring-back, holds and non-speech calls: "
        f"{non_speech / call_sec:.3f} of the call seconds"
    )
    heard = HeardCache(harness.HEARD_CACHE, speech=True)
    took, rendered, listened = harness.warm_audio_cache(
        workload, args.cache_dir, workers=2, content=SPEECH
    )
    print(f"warm-up: {took:.0f} s ({rendered} rendered, {listened} listened to)")
    sandbox = harness.start_benchmark_sandbox(workload, args.cache_dir, content=SPEECH)
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="calltexts-content-") as tmp:
            for send in ("all", "speech"):
                root = Path(tmp) / send
                fig = harness.run_export_child(
                    f"send-{send}",
                    sandbox,
                    root,
                    first,
                    last,
                    concurrency=args.concurrency,
                    stt_latency_per_min=0.0,
                    requests_per_second=50,
                    stt_kind=SpeechStt,
                    heard_cache=heard,
                    extra_env=MODEL | {"STT_SEND": send},
                )
                if fig.exit_code != 0:
                    print(f"run {send} exited {fig.exit_code}: see {root}/send-{send}.log")
                results[send] = (fig, measure(fig, workload, root))
                if args.keep:
                    print(f"kept: {root}")
                    input("press Enter to remove it")
    finally:
        sandbox.stop()
    print()
    print(
        f"{'STT_SEND':8} {'sent/call':>9} {'billed s':>9} {'cost USD':>9} {'role acc':>9} "
        f"{'word acc':>9} {'invented':>9} {'no_speech (cost)':>17} {'VAD+pipeline CPU s':>19}"
    )
    for send, (fig, m) in results.items():
        right, stereo_words = m["role"]
        found, said = m["words"]
        count, cost = m["no_speech"]
        print(
            f"{send:8} {fig.stt['audio_seconds'] / call_sec:9.3f} {fig.stt['billed_seconds']:9,} "
            f"{fig.cost_usd:9.4f} {right / max(stereo_words, 1):9.4f} {found / max(said, 1):9.4f} "
            f"{m['invented_lines']:9d} {count:5d} ({cost:.4f})    {fig.pipeline_cpu_sec:15.1f}"
        )
    for send, (fig, m) in results.items():
        made = Counter(_kind_of(text) for text in fig.stt["invented_texts"])
        print(f"{send}: verdicts by content { ({k: dict(v) for k, v in m['kinds'].items()}) }")
        print(f"    the emulator invented {fig.stt['invented_lines']} lines: {dict(made)}")
    print(
        f"(call seconds {call_sec:,.0f}; whisper-1 {PRICE} USD/min per second; role acc: words "
        "under the right role of stereo conversations; word acc: words of every call found; "
        "invented: transcript lines holding a word no one said)"
    )


if __name__ == "__main__":
    sys.exit(main())
