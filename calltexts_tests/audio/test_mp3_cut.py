"""MP3 pieces cut at frame boundaries decode sample for sample as the whole file does,
whatever the MPEG version, the bit reservoir or the LAME tag; and their times are known."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from calltexts_assets.audio import mp3_frames
from calltexts_assets.audio.decode import ffmpeg_exe, probe
from calltexts_assets.audio.mp3_cut import cut_mp3


def encode(tmp: Path, rate: int, bitrate: str | None, *extra: str, seconds: int = 20) -> Path:
    """Speech-like bursts with pauses every 2 s, as LAME writes them by default (bit
    reservoir on, Xing/LAME tag unless told otherwise)."""
    rng = np.random.default_rng(rate)
    t = np.arange(rate * seconds) / rate
    x = np.zeros((len(t), 2), dtype=np.float32)
    for k in range(seconds // 2):
        a, b = int((2 * k + 0.2) * rate), int((2 * k + 1.5) * rate)
        x[a:b, 0] = 0.3 * np.sin(2 * np.pi * (300 + 50 * k) * t[a:b])
        x[a:b, 1] = 0.2 * rng.standard_normal(b - a) * (k % 2)
    wav, out = tmp / f"src{rate}.wav", tmp / f"src{rate}.mp3"
    soundfile.write(wav, x, rate)
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(wav), "-c:a", "libmp3lame"]
    rate_args = ["-b:a", bitrate] if bitrate else []
    subprocess.run([*cmd, *rate_args, *extra, str(out)], check=True)
    return out


def decode_ffmpeg(path: Path) -> np.ndarray:
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "f32le", "-ac", "2", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, 2)


@pytest.mark.parametrize(
    ("rate", "bitrate", "extra", "version"),
    [(44100, "64k", (), 1), (16000, "32k", (), 2), (8000, "16k", ("-write_xing", "0"), 25)],
)
def test_pieces_decode_as_the_whole_file(tmp_path, rate, bitrate, extra, version) -> None:
    path = encode(tmp_path, rate, bitrate, *extra)
    head = mp3_frames.read_head(path)
    assert head.header.version == version
    assert (head.info is not None and head.info.has_lame) == (not extra)
    whole, _ = soundfile.read(path, dtype="float32")
    out = tmp_path / "pieces"
    out.mkdir()
    pieces = cut_mp3(path, [1.8, 5.85, 9.8], out, max_bytes=10**9)
    assert len(pieces) == 4
    uses_reservoir = 0
    for piece in pieces:
        frames = list(mp3_frames.iter_frames(piece.path.open("rb"), 0))
        uses_reservoir += any(mp3_frames.main_data_begin(f) for f in frames)
        # 0.1 s into the piece's own audio and before its end: the samples of the whole.
        a, b = round(piece.start * rate) + rate // 10, round(piece.end * rate) - rate // 10
        offset = round(piece.offset * rate)
        for decoded in (soundfile.read(piece.path, dtype="float32")[0], decode_ffmpeg(piece.path)):
            assert np.max(np.abs(decoded[a - offset : b - offset] - whole[a:b])) < 1e-5
    assert uses_reservoir  # the cut had to carry the reservoir across
    starts = [p.start for p in pieces]
    assert starts[1:] == pytest.approx([1.8, 5.85, 9.8], abs=1.2 * head.header.samples / rate)
    # The original's bytes, plus a few silenced lead-in frames per cut (the reservoir's reach).
    assert sum(p.size for p in pieces) <= path.stat().st_size + 3 * 600


def test_a_piece_that_outgrows_the_byte_limit_is_cut_early(tmp_path: Path) -> None:
    path = encode(tmp_path, 16000, "32k")
    pieces = cut_mp3(path, [], tmp_path, max_bytes=20_000, stem="small")
    assert len(pieces) >= 4 and all(p.size <= 20_000 for p in pieces)
    assert pieces[-1].end == pytest.approx(probe(path).duration_sec, abs=0.1)


def test_silenced_frames_decode_to_silence_and_keep_a_valid_crc() -> None:
    assert mp3_frames.crc16(b"123456789") == 0xAEE7  # CRC-16 0x8005/0xFFFF check value
    header = bytes([0xFF, 0xF2, 0x48, 0x04])  # MPEG-2 L3, CRC on, 32 kbps 16 kHz stereo
    frame = header + b"\x12\x34" + bytes(range(1, 18)) + bytes(123)
    quiet = mp3_frames.silenced(frame)
    assert mp3_frames.is_silent(quiet) and mp3_frames.main_data_begin(quiet) == 0
    assert quiet[4:6] == mp3_frames.crc16(header[2:4] + bytes(17)).to_bytes(2, "big")
    assert quiet[23:] == frame[23:]  # the main data stays: later frames may read it


def test_probe_counts_the_frames_of_a_vbr_file_without_tag(tmp_path: Path) -> None:
    path = encode(tmp_path, 22050, None, "-q:a", "6", "-write_xing", "0")
    decoded, _ = soundfile.read(path, dtype="int16")
    start = mp3_frames.read_head(path).first_frame_offset  # after ffmpeg's ID3v2 tag
    lengths = {len(f) for f in mp3_frames.iter_frames(path.open("rb"), start)}
    assert len(lengths) > 2  # really VBR
    assert probe(path).duration_sec == pytest.approx(len(decoded) / 22050, abs=0.001)


def test_the_info_tag_and_id3_are_read(tmp_path: Path) -> None:
    path = encode(tmp_path, 44100, "64k")
    tagged = tmp_path / "tagged.mp3"
    id3 = b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128)  # a 128-byte ID3v2 tag
    tagged.write_bytes(id3 + path.read_bytes() + b"TAG" + bytes(125))
    head = mp3_frames.read_head(tagged)
    assert head.first_frame_offset > len(id3)  # after the tag and the Info frame
    assert head.info is not None and head.info.encoder_delay == 576
    assert probe(tagged).duration_sec == pytest.approx(20.0, abs=0.001)
