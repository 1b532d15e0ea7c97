"""What a sandbox call holds besides its dialogue, when the sandbox is seeded with
`content="speech"`: ring-back before the answer, a hold (music, or a silence while the
operator looks something up), calls of line noise only and of hold music only, and the
dialogue said by espeak-ng (`voices.py`). Every figure is a pure function of the call id and
its duration, so the portal and a test compute the same call.

The proportions and their sources: docs/specs/sandbox_call_content.md.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np

from calltexts_sandbox.calls import voices
from calltexts_sandbox.calls.script import (
    CHANNEL_OF_ROLE,
    ROLES,
    TAIL_SEC,
    VOCABULARY,
    WORDS_PER_TURN,
    CallScript,
    Turn,
    Word,
)

CONVERSATION, NOISE_ONLY, MUSIC_ONLY = "conversation", "noise_only", "music_only"
MUSIC_HOLD, SILENT_HOLD = "music", "silence"
# docs/specs/sandbox_call_content.md §1 (assumptions where no source was found, said there)
NOISE_ONLY_SHARE = 0.05
MUSIC_ONLY_SHARE = 0.03
RING_BACK_SHARE = 0.52  # the seed's placed calls (types 1, 4, 5: 52 of 100)
RING_BACK_SEC = (4.0, 20.0)  # one to four rings of the 5 s cadence
RING_MAX_SHARE = 0.3  # of a call's length
HOLD_SHARE = 0.35  # of the conversations long enough to hold one
HOLD_FROM_SEC = 45  # shorter calls are not put on hold
HOLD_SEC = (5.0, 60.0)
HOLD_MAX_SHARE = 0.4
MUSIC_HOLD_SHARE = 0.6  # of the holds; the rest a silence (the line muted while looking)
# The dialogue: a word gap longer than any pause inside espeak-ng's words (0.26 s), so the
# emulator can tell words apart by their pauses alone.
WORD_GAP_SEC = (0.45, 0.7)
TURN_PAUSE_SEC = (1.0, 1.8)
LEAD_IN_SEC = (0.6, 1.2)  # after ring-back: a pause longer than the word gap
# Levels (dBFS): ring-back -20, hold music -24, line noise -42 in noise-only calls, a quiet
# line's hiss -65 under every call.
RING_DBFS, MUSIC_DBFS, NOISE_DBFS, FLOOR_DBFS = -20.0, -24.0, -42.0, -65.0
NON_SPEECH_SIDE = 1  # ring-back and hold music come from the network: the remote leg


def _share(label: str, call_id: str) -> float:
    digest = hashlib.sha256(f"{label}:{call_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


@dataclass(frozen=True)
class Content:
    kind: str  # CONVERSATION, NOISE_ONLY, MUSIC_ONLY
    ring_back_sec: float  # at the start of the recording, before the answer
    hold: tuple[float, float, str] | None  # (start, length, MUSIC_HOLD or SILENT_HOLD)

    def non_speech_sec(self, duration_sec: float) -> float:
        if self.kind != CONVERSATION:
            return float(duration_sec)
        return self.ring_back_sec + (self.hold[1] if self.hold else 0.0)


def call_content(call_id: str, duration_sec: int) -> Content:
    """The call's kind, ring-back and hold (the hold's start is set by `speech_script`)."""
    kind_point = _share("content", call_id)
    if kind_point < NOISE_ONLY_SHARE:
        return Content(NOISE_ONLY, 0.0, None)
    if kind_point < NOISE_ONLY_SHARE + MUSIC_ONLY_SHARE:
        return Content(MUSIC_ONLY, 0.0, None)
    rng = random.Random(f"content:{call_id}")
    ring = 0.0
    if _share("ring", call_id) < RING_BACK_SHARE:
        ring = min(rng.uniform(*RING_BACK_SEC), RING_MAX_SHARE * duration_sec)
    hold = None
    if duration_sec >= HOLD_FROM_SEC and _share("hold", call_id) < HOLD_SHARE:
        length = min(rng.uniform(*HOLD_SEC), HOLD_MAX_SHARE * duration_sec)
        what = MUSIC_HOLD if rng.random() < MUSIC_HOLD_SHARE else SILENT_HOLD
        hold = (-1.0, round(length, 2), what)
    return Content(CONVERSATION, round(ring, 2), hold)


def speech_script(call_id: str, duration_sec: int, stereo: bool) -> tuple[CallScript, Content]:
    """The dialogue of a speech call around its ring-back and hold (no cross-talk: two voices
    at once in a downmix are no longer found by their waveforms), and the content with the
    hold's start. Noise-only and music-only calls have no words."""
    content = call_content(call_id, duration_sec)
    if content.kind != CONVERSATION:
        return CallScript(call_id, duration_sec, stereo, ()), content
    said = voices.spoken_vocabulary()
    rng = random.Random(f"speech:{call_id}")
    limit = max(duration_sec - TAIL_SEC, 0.0)
    hold = content.hold
    # the hold begins at the first turn's end past a third of the dialogue's time
    hold_after = content.ring_back_sec + (limit - content.ring_back_sec) / 3 if hold else None
    if hold is not None:
        limit_with_hold = limit - hold[1]
        if limit_with_hold - content.ring_back_sec < 5:
            hold = None
    t = round(content.ring_back_sec + rng.uniform(*LEAD_IN_SEC), 3)
    turns: list[Turn] = []
    role_no = 0
    while True:
        role = ROLES[role_no % 2]
        words: list[Word] = []
        for _ in range(rng.randint(*WORDS_PER_TURN)):
            index = said[rng.randrange(len(said))]
            length = len(voices.voice(index, voices.RATE)) / voices.RATE
            if t + length > limit:
                break
            words.append(Word(VOCABULARY[index], index, t, round(t + length, 3)))
            t = round(t + length + rng.uniform(*WORD_GAP_SEC), 3)
        if not words:
            break
        turns.append(Turn(role, CHANNEL_OF_ROLE[role], tuple(words)))
        t = round(words[-1].end + rng.uniform(*TURN_PAUSE_SEC), 3)
        if hold is not None and hold[0] < 0 and hold_after is not None and t >= hold_after:
            if t + hold[1] + 3 < limit:
                hold = (t, hold[1], hold[2])
                t = round(t + hold[1] + rng.uniform(*TURN_PAUSE_SEC), 3)
            else:
                hold = None
        role_no += 1
    if hold is not None and hold[0] < 0:
        hold = None
    placed = Content(content.kind, content.ring_back_sec, hold)
    return CallScript(call_id, duration_sec, stereo, tuple(turns)), placed


# -- sounds ----------------------------------------------------------------------------------


def _level(dbfs: float) -> float:
    return float(10 ** (dbfs / 20))


def ring_back(seconds: float, rate: int) -> np.ndarray:
    """Russian ring-back: 425 Hz, 1 s on, 4 s off (GOST 28384)."""
    t = np.arange(int(seconds * rate)) / rate
    return (_level(RING_DBFS) * np.sin(2 * np.pi * 425 * t) * ((t % 5.0) < 1.0)).astype(np.float32)


def hold_music(seconds: float, rate: int) -> np.ndarray:
    """Chords of three tones changing every half second."""
    t = np.arange(int(seconds * rate)) / rate
    roots = np.array([220.0, 247.0, 262.0, 294.0, 330.0])[(t // 0.5).astype(int) % 5]
    chord = sum(np.sin(2 * np.pi * roots * k * t) for k in (1.0, 1.25, 1.5)) / 3
    return (_level(MUSIC_DBFS) * chord).astype(np.float32)


def line_noise(seconds: float, rate: int, rng: np.random.Generator, dbfs: float) -> np.ndarray:
    """Hiss at `dbfs`, with a click a second when it is loud enough to be a bad line."""
    x = rng.normal(0.0, _level(dbfs), int(seconds * rate)).astype(np.float32)
    if dbfs > FLOOR_DBFS:
        x[::rate] += 0.3
    return x


def render_speech_pcm(call_id: str, duration_sec: int, stereo: bool, rate: int) -> np.ndarray:
    """int16 samples (n, channels) of the call: operator left, client right; mono mixes."""
    script, content = speech_script(call_id, duration_sec, stereo)
    channels = 2 if stereo else 1
    n = int(duration_sec * rate)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8]))
    x = np.stack([line_noise(duration_sec, rate, rng, FLOOR_DBFS)[:n] for _ in range(channels)], 1)
    side = NON_SPEECH_SIDE if stereo else 0
    if content.kind == NOISE_ONLY:
        for c in range(channels):
            x[:, c] += line_noise(duration_sec, rate, rng, NOISE_DBFS)[:n]
    elif content.kind == MUSIC_ONLY:
        x[:, side] += hold_music(duration_sec, rate)[:n]
    if content.ring_back_sec:
        ring = ring_back(content.ring_back_sec, rate)
        x[: len(ring), side] += ring[:n]
    if content.hold is not None and content.hold[2] == MUSIC_HOLD:
        a = int(content.hold[0] * rate)
        music = hold_music(content.hold[1], rate)[: max(0, n - a)]
        x[a : a + len(music), side] += music
    for turn in script.all_turns:
        column = turn.channel if stereo else 0
        for word in turn.words:
            a = round(word.start * rate)
            spoken = voices.voice(word.index, rate)[: max(0, n - a)]
            x[a : a + len(spoken), column] += spoken
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def speech_audio_renderer(call_id: str, duration_sec: int, stereo: bool, fmt: str) -> bytes:
    """The portal's renderer for speech content: MP3 at 16 kHz 32 kbps CBR without the bit
    reservoir (as the tone calls' frames: libmpg123 then decodes from any frame without
    complaint), WAV at 8 kHz (Bitrix24's telephony WAV)."""
    import tempfile
    from pathlib import Path

    from calltexts_assets.audio.decode import run_ffmpeg
    from calltexts_sandbox.calls.tones import BITRATE, SAMPLE_RATE

    rate = 8_000 if fmt == "wav" else SAMPLE_RATE
    pcm = render_speech_pcm(call_id, duration_sec, stereo, rate)
    codec = ["-c:a", "libmp3lame", "-b:a", BITRATE, "-reservoir", "0"] if fmt == "mp3" else []
    pcm_in = ["-f", "s16le", "-ar", str(rate), "-ac", str(pcm.shape[1]), "-i", "pipe:0"]
    with tempfile.TemporaryDirectory(prefix="calltexts-speech-") as tmp:
        out = Path(tmp) / f"call.{fmt}"
        run_ffmpeg([*pcm_in, *codec, "-y", str(out)], np.ascontiguousarray(pcm).tobytes())
        return out.read_bytes()
