"""CPU of the voice activity detector (calltexts_assets/audio/speech.py) per audio minute,
both channels of a stereo call, on real speech (espeak-ng's Russian voice) and on line noise.

Calls built here, 8 kHz stereo WAV (Bitrix24's telephony WAV):
- conversation: turns of a spoken sentence alternating between the channels, the listening
  side at -65 dBFS line hiss, a 30 s hold (silence) every 5 minutes;
- line noise: both channels hiss at -42 dBFS with clicks (above the envelope's -45 dBFS
  speech floor: the level alone cannot rule it out, the model must run).

Prints, per call: CPU seconds (process time) of the detector alone and of `call_speech` with
the decoding, per audio minute, the share of the audio the model saw, and the speech found.
`python benchmarks/vad_cpu.py [--minutes 10]` (needs espeak-ng).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as `python benchmarks/<script>.py`
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from calltexts_assets.audio import speech  # noqa: E402
from calltexts_tests.support.speech import spoken  # noqa: E402

RATE = 8_000


def _spoken(tmp: Path) -> np.ndarray:
    text = "Здравствуйте, компания Доставка, меня зовут Анна. Чем могу помочь вам сегодня?"
    return spoken(text, tmp, RATE)


def _hiss(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


def conversation(voice: np.ndarray, minutes: float, rng: np.random.Generator) -> np.ndarray:
    left: list[np.ndarray] = []
    right: list[np.ndarray] = []
    length = 0
    turn = 0
    while length < minutes * 60 * RATE:
        if length and length // (300 * RATE) != (length - len(voice)) // (300 * RATE):
            hold = np.zeros(30 * RATE, np.float32)
            left.append(hold)
            right.append(hold)
            length += len(hold)
        quiet = _hiss(len(voice), -65, rng)
        left.append(voice if turn % 2 == 0 else quiet)
        right.append(quiet if turn % 2 == 0 else voice)
        length += len(voice)
        turn += 1
    return np.stack([np.concatenate(left), np.concatenate(right)], axis=1)


def line_noise(minutes: float, rng: np.random.Generator) -> np.ndarray:
    n = int(minutes * 60 * RATE)
    both = np.stack([_hiss(n, -42, rng), _hiss(n, -42, rng)], axis=1)
    both[:: RATE // 3] += 0.5  # clicks
    return both


def measure(name: str, audio: np.ndarray, tmp: Path) -> None:
    minutes = len(audio) / RATE / 60
    started = time.process_time()
    detector = speech.SpeechDetector(RATE, 2)
    for at in range(0, len(audio), 10 * RATE):  # 10 s blocks, as the pipeline decodes
        detector.feed(audio[at : at + 10 * RATE])
    detector.close()
    alone = time.process_time() - started
    path = tmp / f"{name}.wav"
    soundfile.write(path, audio, RATE, subtype="PCM_16")
    started = time.process_time()
    found = speech.call_speech(path, min_silence_sec=2.0, pad_sec=0.3)
    with_decode = time.process_time() - started
    print(
        f"{name}: {minutes:.1f} audio min, stereo 8 kHz\n"
        f"  VAD CPU {alone:.2f} s = {alone / minutes * 1000:.0f} ms per audio minute "
        f"(both channels); with decoding (call_speech) {with_decode / minutes * 1000:.0f} ms\n"
        f"  model saw {detector.scored_sec / (2 * detector.audio_sec):.2f} of the audio "
        f"(warm-up included); speech found {found.speech_sec() / 60:.2f} min "
        f"= {found.speech_sec() / found.duration_sec:.2f} of the call"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    if not shutil.which("espeak-ng"):
        raise SystemExit("espeak-ng is needed (apt-get install espeak-ng)")
    speech._session()  # the model's load is once per process, not per minute
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="calltexts-vad-") as tmp:
        voice = _spoken(Path(tmp))
        print(f"VAD benchmark: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        measure("conversation", conversation(voice, args.minutes, rng), Path(tmp))
        measure("line noise", line_noise(args.minutes, rng), Path(tmp))


if __name__ == "__main__":
    main()
