"""STT_SEND=speech vs all (issue #23): audio seconds sent / call seconds, the bill, words under
the right role, and invented lines reaching a transcript, on calls that hold what call-centre
recordings hold besides speech.

Calls built here (8 kHz stereo WAV, Bitrix24's telephony WAV), speech from espeak-ng's
Russian voice, seeded:
- conversations: ring-back before the answer (425 Hz 1 s on / 4 s off, GOST 28384), then
  alternating turns; some hold the client on music for 10-60 s, some hold a silence of 5-30 s
  while the operator looks something up; a quiet line (-65 dBFS hiss) throughout;
- line noise only: 60 s of hiss at -42 dBFS with clicks (the issue's call);
- music only: 40 s of hold music (the caller hung up on hold).
The proportions (`--calls`, 1 in 8 noise-only, 1 in 8 music-only, half of the conversations
with a hold) are this benchmark's assumption, not a measured share of real traffic: no public
source of such shares was found; change them with the options.

The STT is an oracle with Whisper's habits: it knows each utterance's sound and text, finds
each one's waveform in the file it is sent (cross-correlation) and answers it with its words
timed in that file (whisper-1 verbose_json); over each stretch of non-speech longer than 3 s
it is sent it invents a line, as Whisper does over music and noise: a subtitle credit, a music
tag, or a plausible phrase ("Спасибо за внимание."). Billed per second at whisper-1's list
price (the model's unit).

`python benchmarks/speech_only.py [--calls 16] [--seed 1]` (needs espeak-ng).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as `python benchmarks/<script>.py`
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from calltexts_assets.billing.cost import requests_cost_usd  # noqa: E402
from calltexts_assets.clients.stt_response import Segment, SttResult, Word  # noqa: E402
from calltexts_assets.state.ledger import NO_SPEECH  # noqa: E402
from calltexts_assets.transcripts.dialogue import transcribe_call  # noqa: E402
from calltexts_tests.support.speech import found, hold_music, line_noise, ring_back, spoken  # noqa: E402

RATE = 8_000
PRICE = 0.006  # whisper-1, USD per minute, billed per second
SENTENCES = [
    "Здравствуйте, компания Доставка, меня зовут Анна.",
    "Добрый день, я хочу узнать статус заказа.",
    "Назовите, пожалуйста, номер заказа.",
    "Номер сорок два, улица Ленина, дом пять.",
    "Минуту, пожалуйста, я посмотрю.",
    "Спасибо за ожидание, курьер приедет завтра утром.",
    "Хорошо, а можно перенести на вечер?",
    "Да, конечно, я передам курьеру.",
    "Спасибо большое, до свидания.",
]
INVENTED = ["Субтитры сделал DimaTorzok", "ДИНАМИЧНАЯ МУЗЫКА", "Спасибо за внимание."]


@dataclass
class Call:
    path: Path
    kind: str
    duration: float
    script: list[tuple[int, str]]  # (side, text) in order
    voices: list[tuple[str, np.ndarray]]


def make_call(n: int, kind: str, voices: dict[str, np.ndarray], rng, tmp: Path) -> Call:
    parts: list[np.ndarray] = []  # stereo blocks in order
    script: list[tuple[int, str]] = []
    if kind == "noise":
        parts.append(np.stack([line_noise(60, RATE, rng), line_noise(60, RATE, rng)], axis=1))
    elif kind == "music":
        music = hold_music(40, RATE)
        parts.append(np.stack([music * 0.0, music], axis=1))
    else:
        ring = ring_back(float(rng.uniform(3, 15)), RATE)
        parts.append(np.stack([ring, ring * 0.3], axis=1))
        turns = int(rng.integers(4, len(SENTENCES) + 1))
        hold_at = int(rng.integers(2, turns)) if kind != "plain" else -1
        for i in range(turns):
            side, text = i % 2, SENTENCES[i]
            voice = voices[text]
            block = np.zeros((len(voice) + int(rng.uniform(0.3, 1.2) * RATE), 2), np.float32)
            block[: len(voice), side] = voice
            parts.append(block)
            script.append((side, text))
            if i == hold_at:
                if kind == "music_hold":
                    music = hold_music(float(rng.uniform(10, 60)), RATE)
                    parts.append(np.stack([music * 0.0, music], axis=1))
                else:  # a silence while the operator looks something up
                    parts.append(np.zeros((int(rng.uniform(5, 30) * RATE), 2), np.float32))
    audio = np.concatenate(parts)
    audio += np.stack(
        [line_noise(len(audio) / RATE + 1, RATE, rng, -65)[: len(audio)] for _ in range(2)], axis=1
    )
    path = tmp / f"call_{n:03d}.wav"
    soundfile.write(str(path), np.clip(audio, -1, 1), RATE, subtype="PCM_16")
    used = [(t, voices[t]) for _, t in script]
    return Call(path, kind, len(audio) / RATE, script, used)


@dataclass
class OracleWhisper:
    voices: list[tuple[str, np.ndarray]]
    model: str = "whisper-1"
    language: str = "ru"
    max_file_bytes: int = 25 * 2**20
    max_request_sec: float = float("inf")
    invented: Counter[str] = field(default_factory=Counter)
    turn: itertools.count = field(default_factory=itertools.count)

    def transcribe_file(self, path, duration_sec=None, *, prompt: str = "") -> SttResult:
        x, sr = soundfile.read(str(path), dtype="float32")
        mono = x if x.ndim == 1 else x.mean(axis=1)
        length = len(mono) / sr
        heard = []
        for text, voice in self.voices:
            at = found(mono, voice)
            if at is not None:
                heard.append((at / sr, (at + len(voice)) / sr, text))
        heard.sort()
        said = [(a, b, text, -0.2, 0.01) for a, b, text in heard]
        edges = [0.0, *[e for a, b, _ in heard for e in (a, b)], length]
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if b - a > 3.0:  # Whisper over music, ring-back, silence, noise
                text = INVENTED[next(self.turn) % len(INVENTED)]
                self.invented[text] += 1
                said.append((a + 0.5, min(b - 0.5, a + 2.5), text, -0.5, 0.3))
        segments, words = [], []
        for a, b, text, logprob, no_speech in sorted(said):
            tokens = text.split()
            step = (b - a) / len(tokens)
            words += [Word(a + i * step, a + (i + 1) * step, t) for i, t in enumerate(tokens)]
            segments.append(Segment(a, b, text, avg_logprob=logprob, no_speech_prob=no_speech))
        return SttResult(
            " ".join(s.text for s in segments), "ru", length, tuple(segments), tuple(words),
            billed_seconds=round(length, 1),
        )  # fmt: skip


def _counts(pairs) -> Counter[tuple[str, str]]:
    return Counter((who, w.strip(".,?!").lower()) for who, text in pairs for w in text.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    kinds = ["noise", "music", "music_hold", "silence_hold", "plain", "music_hold", "plain",
             "silence_hold"]  # fmt: skip
    roles = ("operator", "client")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        voices = {text: spoken(text, tmp, RATE) for text in SENTENCES}
        calls = [make_call(n, kinds[n % len(kinds)], voices, rng, tmp) for n in range(args.calls)]
        call_sec = sum(c.duration for c in calls)
        print(f"{len(calls)} calls, {call_sec / 60:.1f} call minutes: "
              f"{Counter(c.kind for c in calls)}")  # fmt: skip
        print(
            "send    sent/call  billed USD  role acc  word acc  invented  no_speech(billed)  cpu s"
        )
        for send in ("all", "speech"):
            sent = billed_usd = 0.0
            right = total = found = 0
            invented_kept = invented_made = 0
            no_speech: list[float] = []
            cpu = time.process_time()
            for call in calls:
                stt = OracleWhisper(list(call.voices))
                t = transcribe_call(call.path, stt, role_mode="energy", send=send, workdir=tmp)
                sent += t.sent_sec
                cost = requests_cost_usd(t.billed_sec, PRICE, "second")
                billed_usd += float(cost)
                invented_made += sum(stt.invented.values())
                invented_kept += sum(1 for line in t.lines for x in INVENTED if x in line.text)
                if t.verdict == NO_SPEECH:
                    no_speech.append(float(cost))
                expected = _counts((roles[s], text) for s, text in call.script)
                got = _counts((line.speaker, line.text) for line in t.lines)
                total += sum(expected.values())
                right += sum((expected & got).values())
                words_said = Counter(w for _, w in expected.elements())
                found += sum((words_said & Counter(w for _, w in got.elements())).values())
            cpu = time.process_time() - cpu
            print(f"{send:7} {sent / call_sec:9.3f}  {billed_usd:10.4f}  {right / total:8.4f}  "
                  f"{found / total:8.4f}  {invented_kept:3d}/{invented_made:<3d}  "
                  f"{len(no_speech):3d} calls ({sum(no_speech):.4f})  {cpu:6.1f}")  # fmt: skip
        print(
            f"(billed: per second, {Decimal(str(PRICE))} USD/min; invented: lines reaching "
            "transcripts / invented by the oracle over non-speech it was sent)"
        )


if __name__ == "__main__":
    main()
