"""What the sandbox STT hears in a file: the words of its tones (`tones.WordListener`) or of
its speech calls (`speech_hearing.SpeechListener`, with the stretches of other sound), read a
block at a time, and a cache of it by the file's content for benchmarks."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from calltexts_assets.audio.decode import AudioError, iter_pcm, probe
from calltexts_sandbox.calls.tones import HeardWord, WordListener
from calltexts_sandbox.stt.speech_hearing import SpeechListener


@dataclass(frozen=True)
class Heard:
    duration: float
    words: list[HeardWord]
    # stretches of sound that hold no word (speech calls: ring-back, music, line noise)
    noises: list[tuple[float, float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {"duration": self.duration, "words": [asdict(w) for w in self.words],
             "noises": self.noises}
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Heard:
        data = json.loads(text)
        noises = [(a, b) for a, b in data.get("noises", [])]
        return cls(data["duration"], [HeardWord(**w) for w in data["words"]], noises)


def listen(path: Path, *, speech: bool = False) -> Heard:
    """The words of an audio file, decoded a block at a time (a file of hours takes no more
    memory than a short one); AudioError if it holds no audio.

    Its duration is the media's length from the headers, an MP3's encoder delay and padding
    (LAME tag) left out, as the service bills it: not the decoder's sample count, which
    differs between libsndfile versions (docs/specs/audio_formats.md §2)."""
    info = probe(path)
    pcm = iter_pcm(path, info)
    listener = SpeechListener(pcm.rate) if speech else WordListener(pcm.rate)
    for block in pcm.blocks:
        listener.feed(block)
    words = listener.close()
    if listener.samples == 0:
        raise AudioError("no audio frames")
    return Heard(info.duration_sec, words, getattr(listener, "noises", []))


class HeardCache:
    """What the emulator heard in a file, kept on disk by the file's SHA-256: the same bytes
    are the same words. Benchmarks fill it in their warm-up (listening is the emulator's
    work, not the pipeline's; on a 2-core machine it would crowd the pipeline out); an upload
    whose bytes differ from every cached file (a piece, a re-encode) is listened to."""

    VERSION = "2"  # bump when what the emulator hears changes (tones.WordListener)

    def __init__(self, root: Path, *, speech: bool = False) -> None:
        self.speech = speech
        kind = f"speech-v{SPEECH_VERSION}" if speech else f"v{self.VERSION}"
        self.directory = root / f"heard-{kind}"
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        return self.directory / f"{digest}.json"

    def get(self, digest: str) -> Heard | None:
        path = self._path(digest)
        return Heard.from_json(path.read_text()) if path.exists() else None

    def put(self, digest: str, heard: Heard) -> None:
        tmp = self._path(digest).with_suffix(f".{threading.get_ident()}.tmp")
        tmp.write_text(heard.to_json())
        tmp.replace(self._path(digest))

    def fill(self, path: Path) -> bool:
        """Listen to `path` unless its words are cached; whether it listened."""
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if self._path(digest).exists():
            return False
        self.put(digest, listen(path, speech=self.speech))
        return True


SPEECH_VERSION = "2"  # bump when what the emulator hears in speech calls changes
