"""Sandbox MP3s joined from pre-encoded frames decode to their scripts, on every decoder."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from calltexts_assets.audio import decode as audio
from calltexts_assets.audio.mp3_frames import (
    DECODER_DELAY,
    granule_lengths,
    iter_frames,
    read_info_tag,
)
from calltexts_sandbox.calls import mp3_frames, tones
from calltexts_sandbox.calls.script import CallScript, Turn, Word, call_script

FRAME = mp3_frames.FRAME_SEC
CASES = [(d, stereo) for d in (1, 7, 60, 1000) for stereo in (True, False)]


def _id(case: tuple[int, bool]) -> str:
    return f"{case[0]}s-{'stereo' if case[1] else 'mono'}"


@pytest.fixture(scope="module", params=CASES, ids=_id)
def call(request: pytest.FixtureRequest) -> tuple[CallScript, bytes]:
    duration, stereo = request.param
    script = call_script(f"frames-{duration}", duration, stereo)
    return script, mp3_frames.render_mp3(script)


def _assert_words(decoded: list[tuple[float, float, str]], expected: list[Word]) -> None:
    assert [w[2] for w in decoded] == [w.text for w in expected]
    for (start, _, _), word in zip(decoded, expected, strict=True):
        assert abs(start - word.start) <= 0.04


def test_script_times_lie_on_the_frame_grid() -> None:
    for stereo in (True, False):
        words = call_script("grid", 600, stereo).words()
        assert words
        for w in words:
            for t in (w.start, w.end):
                assert abs(round(t / FRAME) * FRAME - t) < 1e-9 and t == round(t, 3)
            assert round((w.end - w.start) / FRAME) in mp3_frames.TONE_FRAMES


def test_frames_are_self_contained_and_where_expected(call) -> None:
    """32 kbps CBR frames without reservoir; where the two sides talk at once (cross-talk),
    a frame codes both channels and takes a larger bitrate."""
    script, mp3 = call
    tag, *frames = list(iter_frames(io.BytesIO(mp3), 0))
    assert len(tag) + sum(map(len, frames)) == len(mp3)
    headers = [mp3_frames.parse_header(f) for f in frames]
    assert {(h.sample_rate, h.padding, h.channels) for h in headers} == {
        (16_000, 0, 2 if script.stereo else 1)
    }
    both = [f for f in frames if script.stereo and all(granule_lengths(f)[0])]
    assert all(h.kbps == 32 for h, f in zip(headers, frames, strict=True) if f not in both)
    assert bool(both) == bool(script.overlapped())
    assert all(mp3_frames.main_data_begin(f) == 0 for f in frames)  # no reservoir
    # The LAME tag says the call's length to the sample, as a real encoder's file does; its
    # delay makes gapless decoders drop exactly the first (silent) frame.
    info = read_info_tag(tag)
    assert info is not None and info.has_lame and info.frames == len(frames)
    assert info.encoder_delay + DECODER_DELAY == mp3_frames.FRAME_SAMPLES
    assert mp3_frames.is_silent(frames[0])
    samples = len(frames) * mp3_frames.FRAME_SAMPLES - info.encoder_delay - info.encoder_padding
    assert samples == round(script.duration_sec * tones.SAMPLE_RATE)


def test_mp3_decodes_to_the_script_words_at_their_times(call) -> None:
    script, mp3 = call
    mono = tones.decode_pcm(mp3, tones.SAMPLE_RATE, channels=1)  # downmix, as the STT does
    assert abs(len(mono) / tones.SAMPLE_RATE - script.duration_sec) <= FRAME
    _assert_words(tones.decode_words(mono, tones.SAMPLE_RATE), script.words())
    assert script.words() or script.duration_sec <= 1  # only the 1 s call has no room
    if script.stereo:
        both = tones.decode_pcm(mp3, tones.SAMPLE_RATE, channels=2)
        for column, role in enumerate(("operator", "client")):
            words = tones.decode_words(both[:, column], tones.SAMPLE_RATE)
            _assert_words(words, script.words(role))


def test_headers_and_other_decoders_read_the_file(call, tmp_path: Path) -> None:
    script, mp3 = call
    path = tmp_path / "call.mp3"
    path.write_bytes(mp3)
    info = audio.probe(path)
    assert info.duration_sec == script.duration_sec  # the headers, on every machine
    assert (info.channels, info.sample_rate) == (2 if script.stereo else 1, 16_000)
    cmd = [audio.ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    assert proc.returncode == 0 and proc.stderr == b""
    data, rate = soundfile.read(path, dtype="int16", always_2d=True)
    assert rate == 16_000 and data.shape[1] == info.channels
    assert len(data) == round(script.duration_sec * rate)  # gapless: the tag is honoured


@pytest.mark.parametrize("stereo", [True, False], ids=["stereo", "mono"])
def test_decoded_mp3_lines_up_with_render_pcm(stereo: bool) -> None:
    """Sample for sample: ~26 dB; the same audio one sample late would score ~3 dB."""
    script = call_script("aligned", 60, stereo)
    pcm = tones.render_pcm(script).astype(np.float64)
    decoded = tones.decode_pcm(mp3_frames.render_mp3(script), channels=pcm.shape[1])
    decoded = decoded[: len(pcm)].astype(np.float64)
    snr = 10 * np.log10(np.sum(pcm**2) / np.sum((decoded - pcm) ** 2))
    assert snr > 20
    from_pcm = tones.decode_words(pcm.astype(np.int16), tones.SAMPLE_RATE)
    from_mp3 = tones.decode_words(decoded.astype(np.int16), tones.SAMPLE_RATE)
    assert [w[2] for w in from_mp3] == [w[2] for w in from_pcm]
    for a, b in zip(from_mp3, from_pcm, strict=True):
        assert abs(a[0] - b[0]) <= 0.02 and abs(a[1] - b[1]) <= 0.02


def test_bank_compensates_the_measured_codec_delay() -> None:
    delay = mp3_frames.codec_delay(32)
    assert 0 < delay < 3 * mp3_frames.FRAME_SAMPLES  # LAME 576 + decoder 529 here
    for bank in mp3_frames.banks().values():
        assert bank.lead + bank.tail < mp3_frames.MIN_GAP_FRAMES
        assert mp3_frames.is_silent(bank.silence)
        assert len(bank.blocks) == len(tones.VOCABULARY) * len(mp3_frames.TONE_FRAMES)


def test_scripts_off_the_frame_grid_are_encoded_whole() -> None:
    word = Word(tones.VOCABULARY[5], 5, 0.5, 0.95)  # 0.5 s is no multiple of 36 ms
    script = CallScript("off-grid", 3, False, (Turn("operator", 0, (word,)),))
    with pytest.raises(mp3_frames.NotSpliceable):
        mp3_frames.render(script)
    pcm = tones.decode_pcm(mp3_frames.render_mp3(script), channels=1)
    assert [w[2] for w in tones.decode_words(pcm, tones.SAMPLE_RATE)] == [word.text]


def test_zero_length_call_is_still_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.write_bytes(mp3_frames.render_mp3(call_script("empty", 0, True)))
    assert audio.probe(path).duration_sec == 0.0  # frames, all of them delay and padding
    cmd = [audio.ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"]
    assert subprocess.run(cmd, capture_output=True).returncode == 0


def test_parsing_rejects_what_the_bank_cannot_use() -> None:
    with pytest.raises(mp3_frames.Mp3FrameError):
        mp3_frames.split_frames(b"ID3\x04" + bytes(200))
    mp3 = mp3_frames.render_mp3(call_script("cut", 7, True))
    with pytest.raises(mp3_frames.Mp3FrameError, match="changes format"):
        mp3_frames.split_frames(mp3)  # the tag frame's bitrate is not the stream's
    audio_frames = mp3[len(next(iter_frames(io.BytesIO(mp3), 0))) :]
    with pytest.raises(mp3_frames.Mp3FrameError, match="truncated"):
        mp3_frames.split_frames(audio_frames[:-10])
    assert mp3_frames.parse_kbps("32k") == 32 and mp3_frames.parse_kbps("64000") == 64
    for bad in ("33k", "320k", "fast"):
        with pytest.raises(mp3_frames.NotSpliceable):
            mp3_frames.parse_kbps(bad)


def test_bank_kept_on_disk_is_read_back_unchanged(tmp_path: Path) -> None:
    built = mp3_frames.build_bank("mono", 32, tmp_path)
    assert len(list(tmp_path.glob("mp3-bank-mono-32k-*.mp3"))) == 1
    read = mp3_frames.build_bank("mono", 32, tmp_path)
    assert read.blocks == built.blocks and read.silence == built.silence
    assert read.build_sec < built.build_sec
