"""transcribe_call end to end against the STT emulator on loopback.

The emulator decodes the tones it is sent, so a wrong channel, a lost chunk or a wrong
time offset shows up as wrong words or wrong times, exactly as with real Whisper.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from calltexts_assets.audio.decode import load, probe
from calltexts_assets.clients.openai_base import OpenAIConnection
from calltexts_assets.clients.whisper import WhisperClient
from calltexts_assets.sandbox import tones
from calltexts_assets.sandbox.script import CallScript, Turn, call_script
from calltexts_assets.sandbox.server import RunningServer
from calltexts_assets.sandbox.stt import SttEmulator
from calltexts_assets.transcripts.dialogue import Transcript, transcribe_call


@pytest.fixture(scope="module")
def emulator() -> SttEmulator:
    return SttEmulator()  # the real 25 MB limit: a too-big upload would fail with 413


@pytest.fixture(scope="module")
def server(emulator: SttEmulator) -> Iterator[RunningServer]:
    with emulator.serve() as running:
        yield running


@pytest.fixture
def whisper(server: RunningServer, emulator: SttEmulator) -> WhisperClient:
    emulator.reset()
    connection = OpenAIConnection(base_url=server.url + "/v1", retry_wait_scale=0.001)
    return WhisperClient(connection)


def _write(tmp: Path, script: CallScript, name: str = "call.mp3") -> Path:
    path = tmp / name
    path.write_bytes(
        tones.render_wav(script) if name.endswith(".wav") else tones.render_mp3(script)
    )
    return path


def _assert_faithful(
    transcript: Transcript, script: CallScript, roles: dict[str, str | None]
) -> None:
    """Every role's words exactly, each line starting at one of its words, in time order.

    A chunk cut may fall inside a turn (two lines then), never inside a word.
    """
    for speaker, role in roles.items():
        assert transcript.words(speaker) == [w.text for w in script.words(role)]
        starts = [line.start for line in transcript.lines if line.speaker == speaker]
        assert starts == sorted(starts)
        word_starts = np.array([w.start for w in script.words(role)])
        assert all(np.min(np.abs(word_starts - s)) < 0.05 for s in starts)
    all_starts = [line.start for line in transcript.lines]
    assert all_starts == sorted(all_starts)


@pytest.fixture(scope="module")
def long_stereo(tmp_path_factory: pytest.TempPathFactory) -> tuple[CallScript, Path]:
    script = call_script("sixteen-minutes", 16 * 60, stereo=True)
    return script, _write(tmp_path_factory.mktemp("long"), script)


def test_sixteen_minute_stereo_call_is_split_and_rejoined(whisper, emulator, long_stereo):
    script, path = long_stereo
    transcript = transcribe_call(path, whisper)
    assert transcript.chunks == 4  # 2 channels x 2 chunks of at most 15 min
    _assert_faithful(transcript, script, {"operator": "operator", "client": "client"})
    assert transcript.language == "russian" and transcript.model == "whisper-1"
    assert abs(transcript.duration_sec - 960) < 0.5
    assert transcript.requests == emulator.stats()["requests"] == 4
    assert transcript.lines[-1].start > 900  # the second chunk's offset was applied


def test_a_byte_limit_forces_splitting(whisper, emulator, tmp_path: Path) -> None:
    script = call_script("bytes", 150, stereo=True)
    limited = WhisperClient(whisper.connection, max_file_bytes=1_200_000)  # ~37 s of PCM
    transcript = transcribe_call(_write(tmp_path, script), limited)
    assert transcript.chunks >= 8
    _assert_faithful(transcript, script, {"operator": "operator", "client": "client"})
    sizes = emulator.stats()["bytes_received"] / transcript.chunks
    assert sizes < 1_200_000


def test_stereo_roles_interleave_by_time(whisper, tmp_path: Path) -> None:
    script = call_script("interleave", 60, stereo=True)
    transcript = transcribe_call(_write(tmp_path, script), whisper)
    assert [line.speaker for line in transcript.lines] == [t.role for t in script.turns]
    assert [line.text for line in transcript.lines] == [t.text for t in script.turns]


def test_channel_to_role_mapping_is_configurable(whisper, tmp_path: Path) -> None:
    script = call_script("swapped", 45, stereo=True)
    transcript = transcribe_call(
        _write(tmp_path, script), whisper, stereo_roles=("client", "operator")
    )
    _assert_faithful(transcript, script, {"client": "operator", "operator": "client"})


def test_mono_has_one_speaker_and_is_sent_as_it_is(whisper, emulator, tmp_path: Path) -> None:
    script = call_script("mono", 60, stereo=False)
    path = _write(tmp_path, script)
    transcript = transcribe_call(path, whisper)
    assert {line.speaker for line in transcript.lines} == {"speaker"}
    assert transcript.words() == [w.text for w in script.words()]
    assert emulator.stats()["bytes_received"] == path.stat().st_size  # no decode, no re-encode


def test_long_mono_is_chunked(whisper, tmp_path: Path) -> None:
    script = call_script("mono-long", 150, stereo=False)
    limited = WhisperClient(whisper.connection, max_chunk_seconds=60.0)
    transcript = transcribe_call(_write(tmp_path, script), limited)
    assert transcript.chunks == 3
    _assert_faithful(transcript, script, {"speaker": None})


def test_a_silent_channel_costs_no_request(whisper, emulator, tmp_path: Path) -> None:
    full = call_script("one-sided", 60, stereo=True)
    operator_only = CallScript(
        full.call_id, 60, True, tuple(t for t in full.turns if t.role == "operator")
    )
    transcript = transcribe_call(_write(tmp_path, operator_only), whisper)
    assert emulator.stats()["requests"] == 1 and transcript.chunks == 1
    assert {line.speaker for line in transcript.lines} == {"operator"}


def test_dual_mono_stereo_is_treated_as_mono(whisper, tmp_path: Path) -> None:
    script = call_script("dual-mono", 30, stereo=False)
    mono = tones.render_pcm(script)
    path = tmp_path / "dual.mp3"
    path.write_bytes(tones.encode(np.repeat(mono, 2, axis=1), tones.SAMPLE_RATE))
    assert probe(path).channels == 2
    transcript = transcribe_call(path, whisper)
    assert {line.speaker for line in transcript.lines} == {"speaker"}
    assert transcript.words() == [w.text for w in script.words()]  # not every word twice


def test_silent_recording_gives_an_empty_transcript(whisper, tmp_path: Path) -> None:
    silent = CallScript("silence", 20, True, ())
    transcript = transcribe_call(_write(tmp_path, silent), whisper)
    assert transcript.lines == () and transcript.requests == 0


def test_real_file_over_25_mb(whisper, emulator, tmp_path: Path) -> None:
    """A 7-minute 16 kHz stereo WAV is ~27 MB: never uploaded whole (413 if it were)."""
    script = call_script("big-wav", 7 * 60, stereo=True)
    path = _write(tmp_path, script, "call.wav")
    assert path.stat().st_size > 25 * 1024 * 1024
    transcript = transcribe_call(path, whisper)
    _assert_faithful(transcript, script, {"operator": "operator", "client": "client"})
    assert "413" not in emulator.stats()["by_status"]


def test_turn_model_is_what_tests_expect() -> None:
    # Guards the helpers above: roles alternate and each turn is one segment's worth.
    turns: tuple[Turn, ...] = call_script("x", 30, True).turns
    assert all(b.start - a.end >= 0.6 for a, b in pairwise(turns))


@pytest.mark.parametrize(("seconds", "stereo"), [(7, False), (61, True)])
def test_probe_reads_the_exact_duration_of_an_mp3(
    tmp_path: Path, seconds: int, stereo: bool
) -> None:
    # The duration check compares this with Bitrix24's whole seconds: the encoder's delay
    # and padding (~0.08 s, which a plain header read adds) must not count.
    path = _write(tmp_path, call_script("probe", seconds, stereo=stereo))
    decoded = load(path)
    info = probe(path)
    assert info.duration_sec == pytest.approx(decoded.duration_sec, abs=0.001)
    assert info.duration_sec == pytest.approx(seconds, abs=0.036)  # the sandbox's frame grid
    assert (info.channels, info.size_bytes) == (decoded.channels, path.stat().st_size)


def test_long_recordings_are_decoded_one_at_a_time() -> None:
    import threading
    import time

    from calltexts_assets.audio.decode import AudioInfo
    from calltexts_assets.transcripts.dialogue import decode_slot

    long_stereo = AudioInfo(1200.0, 2, 16_000, 0)  # ~77 MB of PCM
    short_stereo = AudioInfo(40.0, 2, 16_000, 0)
    inside = {"long": 0, "short": 0}
    most = {"long": 0, "short": 0}
    lock = threading.Lock()

    def decode(kind: str, info: AudioInfo) -> None:
        with decode_slot(info):
            with lock:
                inside[kind] += 1
                most[kind] = max(most[kind], inside[kind])
            time.sleep(0.05)
            with lock:
                inside[kind] -= 1

    def run_all(jobs: list[tuple[str, AudioInfo]]) -> None:
        threads = [threading.Thread(target=decode, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    run_all([("long", long_stereo)] * 3 + [("short", short_stereo)] * 3)
    assert most["long"] == 1
    run_all([("short", short_stereo)] * 3)
    assert most["short"] == min(3, os.cpu_count() or 2)  # short ones share the core slots


def test_requests_in_flight_are_capped_while_more_workers_decode() -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from calltexts_assets.clients.whisper import SttResult
    from calltexts_assets.transcripts.dialogue import RequestsInFlight

    class Stt:
        model, language, max_file_bytes, max_chunk_seconds = "whisper-1", "ru", 1000, 60.0
        in_flight = most = 0
        lock = threading.Lock()

        def transcribe_file(self, path: str | Path, duration_sec: float | None = None) -> SttResult:
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
            time.sleep(0.02)
            with self.lock:
                self.in_flight -= 1
            return SttResult(text=str(path), language="ru", duration=1.0, segments=())

    stt = Stt()
    limited = RequestsInFlight(stt, 3)
    assert (limited.model, limited.max_file_bytes) == ("whisper-1", 1000)
    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = list(pool.map(lambda n: limited.transcribe_file(f"c{n}").text, range(24)))
    assert texts == [f"c{n}" for n in range(24)]
    assert stt.most == 3
