"""Benchmark: roles on a json-only model (STT_ROLE_MODE=turns) against word times
(STT_ROLE_MODE=energy), on stereo calls of REAL SPEECH with cross-talk.

    python benchmarks/turns_speech.py                 # 150 calls (3 x 50)
    python benchmarks/turns_speech.py --calls 20      # quick

Why not the sandbox portal: its calls are tones, which a voice activity detector rightly
does not call speech (benchmarks/turns.py shows it: the turns run sends nothing). Here each
scripted word of a sandbox call script (`sandbox/script.py`: who says which word when, the
listener's interjections over the speaker included) is spoken by espeak-ng (Russian voice),
fitted to its scripted time on its side's channel of a 16 kHz stereo WAV.

The recogniser is an oracle that answers as each model documents (docs/specs/
openai_models.md): for gpt-transcribe `json` with the text of the scripted words inside the
clip (by their middle, on the clip's channel) and `usage` in whole seconds; for whisper-1
`verbose_json` with every word's time. So what is measured is the pipeline's own part
(turns found by the detector, requests, their order, where each text lands, what is billed),
not recognition. Both runs: the same calls, 10 at a time, each request taking 200 ms + 300 ms
per audio minute (the emulator's latency model).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from calltexts_assets.clients.stt_response import Segment, SttResult, Word
from calltexts_assets.transcripts import dialogue
from calltexts_assets.transcripts.dialogue import Transcript, transcribe_call
from calltexts_sandbox.calls.script import VOCABULARY, CallScript, call_script

RATE = 16_000
LEVEL = 0.3  # peak of each spoken word (about -20 dBFS RMS: a telephone level)


def spoken_vocabulary(tmp: Path) -> dict[str, np.ndarray]:
    """Every sandbox word as espeak-ng says it (16 kHz float32), silence trimmed."""
    words = {}
    for text in VOCABULARY:
        out = tmp / "word.wav"
        subprocess.run(["espeak-ng", "-v", "ru", "-s", "190", "-w", str(out), text], check=True)
        x, sr = soundfile.read(out, dtype="float32")
        t = np.arange(int(len(x) * RATE / sr)) / RATE
        x = np.interp(t, np.arange(len(x)) / sr, x).astype(np.float32)
        loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
        x = x[loud[0] : loud[-1] + 1]
        words[text] = LEVEL * x / np.abs(x).max()
    return words


def render(script: CallScript, words: dict[str, np.ndarray], out: Path) -> Path:
    """The script spoken: each word fitted (resampled) to its scripted span and channel."""
    audio = np.zeros((int(script.duration_sec * RATE), 2), dtype=np.float32)
    for turn in script.all_turns:
        for word in turn.words:
            a, b = round(word.start * RATE), round(word.end * RATE)
            voice = words[word.text]
            fitted = np.interp(np.linspace(0, len(voice) - 1, b - a), np.arange(len(voice)), voice)
            audio[a:b, turn.channel] += fitted.astype(np.float32)
    soundfile.write(str(out), audio, RATE, subtype="PCM_16")
    return out


@dataclass
class Oracle:
    """A stand-in recogniser that knows each call's script; counts and delays requests."""

    model: str
    scripts: dict[str, CallScript]
    clips: dict[str, tuple[str, float, int | None]]  # clip path -> (call, start, channel)
    language: str = "ru"
    max_file_bytes: int = 25 * 2**20
    max_request_sec: float = 240.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    billed_sec: int = 0

    def transcribe_file(self, path: Any, duration_sec: float | None = None, *, prompt: str = ""):
        seconds = soundfile.info(str(path)).duration
        time.sleep(0.2 + 0.3 * seconds / 60)
        billed = math.ceil(seconds)
        with self.lock:
            self.requests += 1
            self.billed_sec += billed
        call, start, channel = self.clips.get(str(path), (Path(path).stem, 0.0, None))
        script = self.scripts[call]
        said = [
            (w, t.channel) for t in script.all_turns for w in t.words
            if channel in (None, t.channel) and start <= (w.start + w.end) / 2 < start + seconds
        ]  # fmt: skip
        said.sort(key=lambda pair: pair[0].start)
        text = " ".join(w.text for w, _ in said)
        if self.model == "gpt-transcribe":  # json: text, languages, usage; no times
            segments = (Segment(0.0, seconds, text),) if text else ()
            return SttResult(text, "ru", None, segments, timed=False, billed_seconds=billed,
                             languages_reported=True)  # fmt: skip
        words = tuple(Word(w.start - start, w.end - start, w.text) for w, _ in said)
        segments = tuple(
            Segment(t.start, t.end, t.text) for t in sorted(script.turns, key=lambda t: t.start)
        )
        return SttResult(text, "ru", seconds, segments, words, billed_seconds=billed)


def run(label: str, calls: list[tuple[CallScript, Path]], oracle: Oracle, role_mode: str,
        workers: int) -> tuple[list[Transcript], float]:  # fmt: skip
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(lambda c: transcribe_call(c[1], oracle, role_mode=role_mode), calls))
    return done, time.monotonic() - started


def scores(calls: list[tuple[CallScript, Path]], done: list[Transcript]) -> dict[str, float]:
    right = total = ordered = 0
    for (script, _), transcript in zip(calls, done, strict=True):
        for role in ("operator", "client"):
            said = [w.text for w in script.words(role)]
            matcher = SequenceMatcher(None, said, transcript.words(role), autojunk=False)
            right += sum(b.size for b in matcher.get_matching_blocks())
            total += len(said)
        said = [w.text for w in script.words()]
        matcher = SequenceMatcher(None, said, transcript.words(), autojunk=False)
        ordered += sum(b.size for b in matcher.get_matching_blocks())
    return {"right": right, "total": total, "ordered": ordered}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--workers", type=int, default=10)
    args = parser.parse_args(argv)
    print("SANDBOX benchmark: roles on gpt-transcribe (turns) vs whisper-1 (energy), real speech")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    rng = np.random.default_rng(22)
    with tempfile.TemporaryDirectory(prefix="calltexts-bench-speech-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.monotonic()
        words = spoken_vocabulary(tmp)
        calls = []
        for i in range(args.calls):
            script = call_script(f"speech-{i}", int(rng.integers(20, 180)), stereo=True)
            calls.append((script, render(script, words, tmp / f"speech-{i}.wav")))
        call_sec = sum(s.duration_sec for s, _ in calls)
        crossing = sum(len(s.overlapped()) for s, _ in calls)
        print(
            f"workload: {len(calls)} stereo calls, {call_sec / 60:,.1f} minutes, "
            f"{sum(len(s.words()) for s, _ in calls):,} words, {crossing} of them in cross-talk; "
            f"rendered in {time.monotonic() - t0:.1f} s (excluded)"
        )
        scripts = {p.stem: s for s, p in calls}
        clips: dict[str, tuple[str, float, int | None]] = {}
        real_clips: Callable[..., Iterator[tuple[Any, Path]]] = dialogue.clips

        def keyed_clips(path: Path, *args: Any) -> Iterator[tuple[Any, Path]]:
            for group, clip in real_clips(path, *args):
                clips[str(clip)] = (Path(path).stem, group.start, group.side)  # oracle's key
                yield group, clip

        dialogue.clips = keyed_clips  # type: ignore[assignment]
        results = {}
        for model, mode in (("whisper-1", "energy"), ("gpt-transcribe", "turns")):
            cap = 1800 if mode == "energy" else 240
            oracle = Oracle(model, scripts, clips, max_request_sec=cap)
            done, wall = run(model, calls, oracle, mode, args.workers)
            s = scores(calls, done)
            results[model] = wall
            print(f"\n{model} + {mode}: wall {wall:,.1f} s")
            print(
                f"    ROLE ACCURACY {s['right']:,} / {s['total']:,} = "
                f"{s['right'] / s['total']:.4f}; WORDS IN ORDER {s['ordered']:,} / "
                f"{s['total']:,} = {s['ordered'] / s['total']:.4f}"
            )
            print(
                f"    BILLED / CALL SECONDS {oracle.billed_sec:,} / {call_sec:,} = "
                f"{oracle.billed_sec / call_sec:.3f}; REQUESTS PER CALL {oracle.requests:,} / "
                f"{len(calls)} = {oracle.requests / len(calls):.2f} (max "
                f"{max(t.requests for t in done)}); audio sent / call seconds "
                f"{sum(t.sent_sec for t in done) / call_sec:.3f}"
            )
        print(
            f"\nwall gpt-transcribe + turns / whisper-1 + energy = "
            f"{results['gpt-transcribe']:,.1f} / {results['whisper-1']:,.1f} s = "
            f"{results['gpt-transcribe'] / results['whisper-1']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
