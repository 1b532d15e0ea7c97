"""A recording's loudness per channel, from bounded blocks of decoded audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from calltexts_assets.audio import decode, envelope
from calltexts_assets.audio.envelope import analyse

RATE = 16_000


def write(tmp: Path, left: np.ndarray, right: np.ndarray, name: str = "x.wav") -> Path:
    path = tmp / name
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), RATE)
    return path


def tone(seconds: float, amplitude: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * hz * t)


def test_levels_speech_and_silence_per_channel(tmp_path: Path) -> None:
    left = np.concatenate([tone(1, 0.3), np.zeros(RATE), tone(1, 0.3)])
    right = np.concatenate([np.zeros(RATE), tone(1, 0.03), np.zeros(RATE)])  # -20 dB
    env = analyse(write(tmp_path, left, right), block_sec=0.37)  # blocks across frames
    assert env.duration_sec == pytest.approx(3.0) and env.channels == 2
    assert env.level_db(0, 1)[0] == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.2)
    assert env.level_db(1, 2)[1] == pytest.approx(20 * np.log10(0.03 / np.sqrt(2)), abs=0.2)
    assert list(env.speech()) == [True, True] and not env.identical_channels
    assert env.silent(1.05, 1.95) is False and env.silent(2.2, 2.4) is False
    quiet = analyse(write(tmp_path, np.zeros(RATE), tone(1, 0.001), "quiet.wav"))
    assert quiet.silent()  # -63 dBFS: line noise, not speech


def test_dual_mono_is_recognised(tmp_path: Path) -> None:
    voice = np.concatenate([tone(1, 0.3), tone(1, 0.2, 700)])
    assert analyse(write(tmp_path, voice, voice)).identical_channels
    assert not analyse(write(tmp_path, voice, voice[::-1], "two.wav")).identical_channels


def test_a_cut_moves_back_into_the_longest_pause(tmp_path: Path) -> None:
    speech = np.concatenate(
        [tone(2, 0.3), np.zeros(RATE // 2), tone(1, 0.3), np.zeros(RATE // 5), tone(1, 0.3)]
    )
    env = analyse(write(tmp_path, speech, speech * 0))
    assert env.pause_near(4.6, 3.0) == pytest.approx(2.25, abs=0.02)


def test_ffmpeg_decodes_what_libsndfile_cannot_a_block_at_a_time(tmp_path: Path) -> None:
    wav = write(tmp_path, tone(3, 0.3), tone(3, 0.1))
    m4a = tmp_path / "x.m4a"
    decode.run_ffmpeg(["-i", str(wav), "-c:a", "aac", "-b:a", "64k", "-y", str(m4a)])
    pcm = decode.iter_pcm(m4a, block_sec=0.5)
    sizes = [len(block) for block in pcm.blocks]
    assert max(sizes) <= pcm.block_frames and sum(sizes) == pytest.approx(3 * pcm.rate, rel=0.02)
    env = analyse(m4a)
    assert env.level_db(0.5, 2.5)[0] - env.level_db(0.5, 2.5)[1] == pytest.approx(9.5, abs=0.5)


@pytest.mark.parametrize("block_sec", [10.0, 0.37, 0.3703])  # 0.3703 s: frames across blocks
def test_the_envelope_is_the_same_however_the_recording_is_decoded(
    tmp_path: Path, block_sec: float
) -> None:
    """Blocks decoded into one reused array give, bit for bit, the RMS of each 10 ms frame
    of the whole signal at once, each channel apart; the decoded length and the dual mono
    check are the whole file's."""
    rng = np.random.default_rng(7)
    left = np.concatenate([tone(1.234, 0.3, 500), 0.01 * rng.standard_normal(RATE)])
    right = np.concatenate([0.02 * rng.standard_normal(RATE), tone(1.234, 0.1, 300)])
    path = write(tmp_path, left, right)
    samples, _ = soundfile.read(path, dtype="float32", always_2d=True)
    whole = envelope._frame_rms(samples, 160)
    env = analyse(path, block_sec=block_sec)
    expected = np.vstack([whole, np.sqrt(np.mean(np.square(samples[len(whole) * 160 :]), 0))])
    assert env.rms.dtype == np.float16 and env.rms.shape == (224, 2)
    assert np.array_equal(env.rms, expected.astype(np.float16))
    assert env.duration_sec == pytest.approx(2.234) and not env.identical_channels
    assert float(env.rms[50, 0]) == pytest.approx(0.3 / np.sqrt(2), rel=1e-3)
    assert float(env.rms[200, 1]) == pytest.approx(0.1 / np.sqrt(2), rel=1e-3)


def test_reused_blocks_are_views_of_one_array(tmp_path: Path) -> None:
    path = write(tmp_path, tone(1, 0.3), tone(1, 0.1))
    pcm = decode.iter_pcm(path, block_sec=0.25, reuse=True)
    bases = {id(block.base) for block in pcm.blocks}
    assert len(bases) == 1
