"""transcribe_call end to end against the STT emulator on loopback.

The emulator decodes the tones it is sent (a stereo file downmixed, as Whisper hears it), so
a wrong piece, a wrong time offset or a wrong role shows up as wrong words, wrong times or
words under the wrong speaker, exactly as with real Whisper.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from calltexts_assets.audio.decode import probe
from calltexts_assets.audio.mp3_frames import count_frames, read_head
from calltexts_assets.clients.openai_base import OpenAIConnection, QuotaExhausted
from calltexts_assets.clients.whisper import WhisperClient
from calltexts_assets.limits.run_errors import RunWideError
from calltexts_assets.transcripts.dialogue import Transcript, transcribe_call
from calltexts_sandbox.calls import mp3_frames, tones
from calltexts_sandbox.calls.script import CallScript, call_script
from calltexts_sandbox.server import RunningServer
from calltexts_sandbox.stt.app import SttEmulator


@pytest.fixture(scope="module")
def emulator() -> SttEmulator:
    return SttEmulator()  # the real 25 MB limit: a too-big upload would fail with 413


@pytest.fixture(scope="module")
def server(emulator: SttEmulator) -> Iterator[RunningServer]:
    with emulator.serve() as running:
        yield running


@pytest.fixture
def connection(server: RunningServer, emulator: SttEmulator) -> OpenAIConnection:
    emulator.reset()
    return OpenAIConnection(base_url=server.url + "/v1", retry_wait_scale=0.001)


@pytest.fixture
def whisper(connection: OpenAIConnection) -> WhisperClient:
    return WhisperClient(connection)


def write(tmp: Path, script: CallScript, name: str = "call.mp3") -> Path:
    path = tmp / name
    path.write_bytes(
        tones.render_wav(script) if name.endswith(".wav") else mp3_frames.render_mp3(script)
    )
    return path


def expected_lines(script: CallScript) -> list[tuple[str, str]]:
    """(role, text) of the lines a faithful transcript has: the words in the order they
    start, a new line where the speaker changes and at every pause of a segment (0.6 s)."""
    words = sorted(
        ((w, t.role) for t in script.all_turns for w in t.words), key=lambda pair: pair[0].start
    )
    lines: list[tuple[str, list[str]]] = []
    reach = -1.0
    for word, role in words:
        if not lines or lines[-1][0] != role or word.start - reach >= 0.6:
            lines.append((role, []))
        lines[-1][1].append(word.text)
        reach = max(reach, word.end)
    return [(role, " ".join(texts)) for role, texts in lines]


def assert_faithful(
    transcript: Transcript, script: CallScript, roles: dict[str, str | None]
) -> None:
    """Every role's words exactly, each line starting at one of its words, in time order."""
    for speaker, role in roles.items():
        assert transcript.words(speaker) == [w.text for w in script.words(role)]
        starts = [line.start for line in transcript.lines if line.speaker == speaker]
        word_starts = np.array([w.start for w in script.words(role)])
        assert all(np.min(np.abs(word_starts - s)) < 0.05 for s in starts)
    all_starts = [line.start for line in transcript.lines]
    assert all_starts == sorted(all_starts)


def test_a_stereo_call_goes_once_as_it_is_and_roles_come_from_the_channels(
    whisper, emulator, tmp_path: Path
) -> None:
    script = call_script("one-pass", 16 * 60, stereo=True)
    path = write(tmp_path, script)
    transcript = transcribe_call(path, whisper)
    stats = emulator.stats()
    assert (transcript.requests, transcript.pieces, stats["requests"]) == (1, 1, 1)
    assert stats["bytes_received"] == path.stat().st_size  # the original file, not re-encoded
    assert transcript.roles == "energy"
    assert_faithful(transcript, script, {"operator": "operator", "client": "client"})
    assert [(line.speaker, line.text) for line in transcript.lines] == expected_lines(script)
    # One pass: the STT heard the call's minutes once, and bills them once.
    assert transcript.sent_sec == pytest.approx(960, abs=0.05)
    assert transcript.billed_sec == (960,) and stats["billed_minutes"] == 16
    assert transcript.language == "ru" and transcript.model == "whisper-1"


def test_cross_talk_words_are_given_to_the_side_that_said_them(whisper, tmp_path: Path) -> None:
    right = total = overlapped = 0
    for n in range(6):
        script = call_script(f"crosstalk-{n}", 120, stereo=True)
        overlapped += len(script.overlapped())
        transcript = transcribe_call(write(tmp_path, script, f"c{n}.mp3"), whisper)
        for role in ("operator", "client"):
            said, heard = script.words(role), transcript.words(role)
            total += len(said)
            right += sum(a.text == b for a, b in zip(said, heard, strict=False))
    assert overlapped >= 10  # the seed has cross-talk, and these calls hold some of it
    assert right / total >= 0.98


def test_echo_of_one_side_on_the_other_channel_is_not_a_voice(whisper, tmp_path: Path) -> None:
    script = call_script("echo", 45, stereo=True)
    pcm = tones.render_pcm(script).astype(np.float32)
    delay = int(0.03 * tones.SAMPLE_RATE)
    echo = np.zeros_like(pcm)
    echo[delay:, 1] = pcm[:-delay, 0] * 0.1  # the operator at -20 dB on the client's side
    echo[delay:, 0] = pcm[:-delay, 1] * 0.1  # and the client on the operator's
    path = tmp_path / "echo.wav"
    soundfile.write(path, (pcm + echo).astype(np.int16), tones.SAMPLE_RATE)
    transcript = transcribe_call(path, whisper)
    # The STT hears each word twice (the echo 30 ms late), as one; its side is the louder.
    assert transcript.words("operator") == [w.text for w in script.words("operator")]
    assert transcript.words("client") == [w.text for w in script.words("client")]


def test_a_byte_limit_cuts_the_mp3_at_frames_in_pauses(emulator, connection, tmp_path):
    script = call_script("bytes", 150, stereo=True)
    path = write(tmp_path, script)
    limited = WhisperClient(connection, max_file_bytes=200_000)  # ~50 s at 32 kbps
    transcript = transcribe_call(path, limited)
    assert transcript.pieces >= 4
    assert_faithful(transcript, script, {"operator": "operator", "client": "client"})
    uploaded = emulator.stats()["bytes_received"]
    # Pieces of the original's frames (a few silent lead-in frames each, the tag frame left
    # out), not a re-encode.
    frames_bytes = path.stat().st_size - read_head(path).first_frame_offset
    assert frames_bytes <= uploaded <= 1.01 * frames_bytes
    assert sum(transcript.billed_sec) == pytest.approx(150, abs=transcript.pieces * 1.0)


def test_channel_to_role_mapping_is_configurable(whisper, tmp_path: Path) -> None:
    script = call_script("swapped", 45, stereo=True)
    transcript = transcribe_call(
        write(tmp_path, script), whisper, stereo_roles=("client", "operator")
    )
    assert_faithful(transcript, script, {"client": "operator", "operator": "client"})


def test_mono_has_one_speaker_and_is_sent_as_it_is(whisper, emulator, tmp_path: Path) -> None:
    script = call_script("mono", 60, stereo=False)
    path = write(tmp_path, script)
    transcript = transcribe_call(path, whisper)
    assert {line.speaker for line in transcript.lines} == {"speaker"}
    assert transcript.words() == [w.text for w in script.words()]
    assert transcript.roles == "mono"
    assert emulator.stats()["bytes_received"] == path.stat().st_size  # no decode, no re-encode


def test_a_model_length_limit_cuts_a_long_mono_call(connection, tmp_path: Path) -> None:
    script = call_script("mono-long", 150, stereo=False)
    limited = WhisperClient(connection, max_request_sec=60.0)
    transcript = transcribe_call(write(tmp_path, script), limited)
    assert transcript.pieces == 3
    assert_faithful(transcript, script, {"speaker": None})


def test_a_silent_channel_costs_nothing_extra(whisper, emulator, tmp_path: Path) -> None:
    full = call_script("one-sided", 60, stereo=True)
    operator_only = CallScript(
        full.call_id, 60, True, tuple(t for t in full.turns if t.role == "operator")
    )
    transcript = transcribe_call(write(tmp_path, operator_only), whisper)
    assert emulator.stats()["requests"] == 1 and transcript.pieces == 1
    assert {line.speaker for line in transcript.lines} == {"operator"}


def test_dual_mono_stereo_is_treated_as_mono(whisper, tmp_path: Path) -> None:
    script = call_script("dual-mono", 30, stereo=False)
    mono = tones.render_pcm(script)
    path = tmp_path / "dual.mp3"
    path.write_bytes(tones.encode(np.repeat(mono, 2, axis=1), tones.SAMPLE_RATE))
    assert probe(path).channels == 2
    transcript = transcribe_call(path, whisper)
    assert {line.speaker for line in transcript.lines} == {"speaker"}
    assert transcript.words() == [w.text for w in script.words()]


def test_a_silent_recording_is_never_sent(whisper, emulator, tmp_path: Path) -> None:
    # Whisper would write "Продолжение следует..." on it (the emulator does too): not paid.
    silent = CallScript("silence", 20, True, ())
    transcript = transcribe_call(write(tmp_path, silent), whisper)
    assert transcript.lines == () and transcript.requests == 0
    assert transcript.billed_sec == () and transcript.language == ""
    assert emulator.stats()["requests"] == 0


def test_hallucinated_text_is_dropped_and_counted(whisper, emulator, tmp_path: Path) -> None:
    script = call_script("hallucinated", 40, stereo=True)
    emulator.set_faults(hallucinate=1)
    transcript = transcribe_call(write(tmp_path, script), whisper)
    text = transcript.text
    assert "Продолжение" not in text and "DimaTorzok" not in text
    assert transcript.hallucinations == 2  # the silent segment and the appended credit
    assert_faithful(transcript, script, {"operator": "operator", "client": "client"})


def test_a_wav_over_25_mb_goes_as_flac_pieces(whisper, emulator, tmp_path: Path) -> None:
    """A 7-minute 16 kHz stereo WAV is ~27 MB: cut in pauses and re-encoded as FLAC (mono,
    lossless), never uploaded as WAV."""
    script = call_script("big-wav", 7 * 60, stereo=True)
    path = write(tmp_path, script, "call.wav")
    assert path.stat().st_size > 25 * 1024 * 1024
    transcript = transcribe_call(path, whisper)
    assert_faithful(transcript, script, {"operator": "operator", "client": "client"})
    stats = emulator.stats()
    assert "413" not in stats["by_status"]
    assert stats["bytes_received"] < path.stat().st_size / 3


def test_per_channel_mode_pays_both_sides_and_says_so(connection, emulator, tmp_path) -> None:
    script = call_script("per-channel", 90, stereo=True)
    transcript = transcribe_call(
        write(tmp_path, script), WhisperClient(connection), role_mode="per_channel"
    )
    assert transcript.roles == "per_channel" and transcript.requests == 2
    assert transcript.sent_sec == pytest.approx(180, abs=0.2)  # both channels
    assert len(transcript.billed_sec) == 2 and emulator.stats()["billed_minutes"] == 4
    assert_faithful(transcript, script, {"operator": "operator", "client": "client"})


def test_json_only_models_cut_by_their_token_budget(connection, emulator, tmp_path) -> None:
    """gpt-4o-mini-transcribe: json only (no times), 1,400 s and 2,000 output tokens a
    request. Sent whole, the emulator would cut the text at the token cap; in 240 s pieces
    every word arrives. Without times a stereo call's roles are unknown (energy mode)."""
    script = call_script("dense", 16 * 60, stereo=False)
    path = write(tmp_path, script)
    client = WhisperClient(connection, model="gpt-4o-mini-transcribe")
    transcript = transcribe_call(path, client)
    assert transcript.pieces == 5  # 960 s in pieces of at most 235 s (240 s less the pause slack)
    assert transcript.words() == [w.text for w in script.words()]
    assert emulator.stats()["output_tokens"] > 2000
    whole = WhisperClient(connection, model="gpt-4o-mini-transcribe", max_request_sec=1400)
    cut_short = transcribe_call(path, whole)
    assert cut_short.pieces == 1 and len(cut_short.words()) < len(script.words())

    stereo = call_script("json-stereo", 60, stereo=True)
    unknown = transcribe_call(write(tmp_path, stereo, "s.mp3"), client)
    assert unknown.roles == "none" and {line.speaker for line in unknown.lines} == {"speaker"}


def test_quota_exhaustion_stops_the_run_at_once(connection, emulator, tmp_path: Path) -> None:
    emulator.set_faults(quota_exhausted=10)
    with pytest.raises(QuotaExhausted) as info:
        transcribe_call(write(tmp_path, call_script("quota", 20, True)), WhisperClient(connection))
    assert isinstance(info.value, RunWideError)
    assert emulator.stats()["requests"] == 1  # billing is not a rate limit: no retry
    assert "quota" in str(info.value) and "Add credit" in str(info.value)


@pytest.mark.parametrize(
    ("flavour", "model"),
    [("speaches", "Systran/faster-whisper-large-v3"), ("localai", "ggml-whisper-base")],
)
def test_compatible_servers(flavour: str, model: str, tmp_path: Path) -> None:
    """speaches answers a language code and words; LocalAI neither language nor duration,
    segment times in nanoseconds and no words: roles per segment."""
    script = call_script(f"server-{flavour}", 60, stereo=True)
    with SttEmulator(flavour=flavour).serve() as running:
        connection = OpenAIConnection(base_url=running.url + "/v1", retry_wait_scale=0.001)
        client = WhisperClient(
            connection, model=model, language="ru" if flavour == "localai" else ""
        )
        transcript = transcribe_call(write(tmp_path, script), client)
    assert transcript.roles == "energy" and transcript.language == "ru"
    assert transcript.words() == [w.text for w in script.words()]
    if flavour == "speaches":
        assert_faithful(transcript, script, {"operator": "operator", "client": "client"})
    else:  # a segment holding cross-talk goes whole to the louder side
        operator = script.words("operator")
        assert len(transcript.words("operator")) >= len(operator)
        assert transcript.lines[0].start == pytest.approx(script.words()[0].start, abs=0.05)


def test_probe_reads_the_exact_duration_of_an_mp3(tmp_path: Path) -> None:
    # The duration check compares this with Bitrix24's whole seconds: the encoder's delay
    # and padding must not count, and cross-talk frames (larger: VBR) must not inflate it.
    for seconds, stereo in ((7, False), (61, True)):
        path = write(tmp_path, call_script("probe", seconds, stereo=stereo), f"p{seconds}.mp3")
        decoded, _ = soundfile.read(path, dtype="int16", always_2d=True)
        info = probe(path)
        assert info.duration_sec == pytest.approx(len(decoded) / 16_000, abs=0.001)
        assert info.duration_sec == pytest.approx(seconds, abs=0.036)  # the sandbox's frame grid
        assert (info.channels, info.size_bytes) == (decoded.shape[1], path.stat().st_size)


def test_decoding_never_holds_more_than_a_block(whisper, tmp_path, monkeypatch) -> None:
    """Memory independent of the recording's length: every read of decoded audio, in the
    pipeline and in the emulator, asks for at most one block of frames."""
    from calltexts_assets.audio import decode

    asked: list[int] = []
    read = soundfile.SoundFile.read

    def counting(self, frames=-1, *args, **kwargs):
        asked.append(frames)
        return read(self, frames, *args, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "read", counting)
    script = call_script("blocks", 95, stereo=True)
    transcribe_call(write(tmp_path, script), whisper)
    block = int(decode.BLOCK_SEC * 16_000)
    assert asked and all(0 < frames <= block for frames in asked)
    assert len(asked) >= 2 * 95 / decode.BLOCK_SEC  # the pipeline's and the emulator's


def test_requests_in_flight_are_capped_while_more_workers_decode() -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from calltexts_assets.clients.whisper import SttResult
    from calltexts_assets.transcripts.dialogue import RequestsInFlight

    class Stt:
        model, language, max_file_bytes, max_request_sec = "whisper-1", "ru", 1000, 60.0
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
    assert (limited.model, limited.max_file_bytes, limited.max_request_sec) == (
        "whisper-1",
        1000,
        60.0,
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = list(pool.map(lambda n: limited.transcribe_file(f"c{n}").text, range(24)))
    assert texts == [f"c{n}" for n in range(24)]
    assert stt.most == 3


def test_scripts_have_cross_talk_only_in_stereo() -> None:
    stereo = [call_script(f"share-{n}", 120, True) for n in range(40)]
    words = sum(len(s.words()) for s in stereo)
    interjections = sum(len(s.interjections) for s in stereo)
    assert 0.015 <= interjections / words <= 0.05  # ~3 % of words said over another
    assert all(not call_script(f"share-{n}", 120, False).interjections for n in range(40))
    for script in stereo:
        for turn in script.interjections:
            (word,) = turn.words
            inside = [t for t in script.turns if t.start < word.start < t.end]
            assert len(inside) == 1 and inside[0].role != turn.role
    # Turns of the dialogue itself still alternate with pauses between them.
    for a, b in itertools.pairwise(stereo[0].turns):
        assert b.start - a.end >= 0.6 and a.role != b.role


def test_a_diarizing_model_labels_the_voices_of_a_mono_call(connection, tmp_path) -> None:
    script = call_script("diarized", 150, stereo=False)
    stt = WhisperClient(connection, model="gpt-4o-transcribe-diarize", max_request_sec=60)
    transcript = transcribe_call(write(tmp_path, script), stt)
    assert transcript.roles == "diarized" and transcript.pieces == 3
    # The sandbox's voices all sound alike: one voice, whose label starts over in each piece.
    assert {line.speaker for line in transcript.lines} == {f"speaker:A/{n}" for n in (1, 2, 3)}
    assert transcript.words() == [w.text for w in script.words()]


def test_a_call_of_hours_goes_in_pieces_of_half_an_hour(connection, emulator, tmp_path) -> None:
    script = call_script("hours", 75 * 60, stereo=True)
    transcript = transcribe_call(write(tmp_path, script), WhisperClient(connection))
    assert transcript.pieces == 3 and emulator.stats()["requests"] == 3
    assert max(transcript.billed_sec) <= 1800
    assert_faithful(transcript, script, {"operator": "operator", "client": "client"})


def test_what_the_stt_says_it_heard_is_compared_with_what_was_sent() -> None:
    from calltexts_assets.clients.stt_response import SttResult
    from calltexts_assets.transcripts.dialogue import heard_mismatch

    def answer(duration: float | None, billed: float | None) -> SttResult:
        return SttResult("", "", duration, (), billed_seconds=billed)

    assert heard_mismatch(40.0, answer(40.02, 41)) == ""  # whole seconds, rounded up
    assert heard_mismatch(40.0, answer(None, None)) == ""  # nothing said: nothing to compare
    assert heard_mismatch(3600.0, answer(3630.0, 3630)) == ""  # within 1 %
    assert heard_mismatch(40.0, answer(40.0, 999_999)) == (
        "sent 40.0 s, the STT answered usage.seconds 999999 s"
    )
    assert "duration 20 s" in heard_mismatch(40.0, answer(20.0, 40))


def test_a_call_the_stt_misreports_is_billed_what_was_sent_and_flagged(
    whisper, emulator, tmp_path: Path
) -> None:
    script = call_script("liar", 40, stereo=True)
    emulator.set_faults(misreport_seconds=999_999)
    transcript = transcribe_call(write(tmp_path, script), whisper)
    assert emulator.stats()["billed_seconds"] == 999_999  # what the server would bill
    assert transcript.billed_sec == (pytest.approx(40.0, abs=0.05),)  # what was sent
    assert "usage.seconds 999999 s" in transcript.duration_mismatch
    assert "duration 999999 s" in transcript.duration_mismatch


def test_the_length_sent_and_billed_is_the_headers_not_a_decoders_count(
    whisper, emulator, tmp_path: Path
) -> None:
    """A 16:00 call was billed 961 s (issue #28): the length is the media's by its headers,
    the LAME tag's delay and padding out, whatever decoder and library version is at hand."""
    script = call_script("headers", 120, stereo=True)
    tagged = write(tmp_path, script)
    assert probe(tagged).duration_sec == 120.0
    # The same frames without their tag: ffmpeg decodes them all, libsndfile's mpg123 may
    # trim what no tag announces; the headers say frames x 576 samples, on every machine.
    untagged = tmp_path / "untagged.mp3"
    untagged.write_bytes(tagged.read_bytes()[read_head(tagged).first_frame_offset :])
    frames, _ = count_frames(untagged, 0)
    assert probe(untagged).duration_sec == frames * 576 / 16_000
    for path in (tagged, untagged):
        emulator.reset()
        transcript = transcribe_call(path, whisper)
        length = probe(path).duration_sec
        assert transcript.sent_sec == transcript.duration_sec == length
        assert transcript.billed_sec == (math.ceil(length),)
        assert emulator.stats()["billed_seconds"] == math.ceil(length)
