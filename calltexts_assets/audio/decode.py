"""Reading recordings: find ffmpeg, read headers, decode to PCM a block at a time, encode
pieces.

Headers are read by libsndfile, else mutagen, never with ffprobe (the imageio-ffmpeg wheel
ships none). Audio is decoded in-process by libsndfile where it can (an ffmpeg process per
call cost more CPU than the decoding itself), always in bounded blocks (`iter_pcm`): a call
left open for hours takes no more memory than a short one.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import mutagen
import numpy as np
import soundfile

from calltexts_assets.audio.mp3_frames import (
    DECODER_DELAY,
    Mp3FrameError,
    count_frames,
    read_head,
)


class AudioError(ValueError):
    """The file is not audio we can read (no header, ffmpeg cannot decode it)."""


@dataclass(frozen=True)
class AudioInfo:
    duration_sec: float
    channels: int
    sample_rate: int
    size_bytes: int


@functools.cache
def ffmpeg_exe() -> str:
    """A system ffmpeg on PATH when present, else the static binary of imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: Sequence[str], data: bytes | None = None) -> bytes:
    """Run our ffmpeg quietly on `data` (stdin); its stdout, or AudioError with its stderr."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    proc = subprocess.run(cmd, input=data, capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc.stdout


_FFMPEG_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_FFMPEG_STREAM = re.compile(r"Audio: [^,]+, (\d+) Hz, (mono|stereo|(\d+) channels)")


def _probe_with_ffmpeg(path: Path) -> AudioInfo:
    """Fallback for containers mutagen does not know: `ffmpeg -i` prints the header facts."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    duration, stream = _FFMPEG_DURATION.search(proc.stderr), _FFMPEG_STREAM.search(proc.stderr)
    if not duration or not stream:
        raise AudioError(f"not a readable audio file: {path.name}")
    h, m, s = duration.groups()
    layout = stream.group(2)
    channels = 1 if layout == "mono" else 2 if layout == "stereo" else int(stream.group(3))
    return AudioInfo(
        duration_sec=int(h) * 3600 + int(m) * 60 + float(s),
        channels=channels,
        sample_rate=int(stream.group(1)),
        size_bytes=path.stat().st_size,
    )


# Bytes after the last frame that are still a tag (ID3v1: 128, APE and Lyrics3: a few KB).
_TRAILING_TAG_BYTES = 16 * 1024


def _probe_mp3(path: Path) -> AudioInfo | None:
    """An MPEG Layer III file's facts from its frame headers: the duration counted frame by
    frame (exact for VBR and untagged files, where libsndfile estimates from the first
    frame's bitrate), less the encoder delay and padding its LAME tag announces.

    Frames that stop far before the end of the file (zeroed or overwritten bytes) leave the
    duration the file's size announces, so that decoding finds the recording corrupt."""
    try:
        head = read_head(path)
    except (Mp3FrameError, OSError):
        return None
    header, size = head.header, path.stat().st_size
    frames, end = count_frames(path, head.first_frame_offset)
    if size - end > _TRAILING_TAG_BYTES:
        frames = max(frames, (size - head.first_frame_offset) // header.length)
    samples = frames * header.samples
    if head.info is not None and head.info.has_lame:
        samples -= head.skip_samples + head.info.encoder_padding - DECODER_DELAY
    return AudioInfo(
        max(samples, 0) / header.sample_rate, header.channels, header.sample_rate, size
    )


def probe(path: str | Path) -> AudioInfo:
    """Duration, channels and sample rate from the file's headers (no decode)."""
    path = Path(path)
    mp3 = _probe_mp3(path)
    if mp3 is not None:
        return mp3
    # libsndfile counts MP3 frames exactly, minus the encoder's delay and padding (mutagen is
    # ~0.08 s long on LAME files), in C; mutagen knows more containers (m4a).
    try:
        sf_info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        sf_info = None
    if sf_info is not None and sf_info.frames > 0 and sf_info.samplerate and sf_info.channels:
        return AudioInfo(
            sf_info.frames / sf_info.samplerate,
            int(sf_info.channels),
            int(sf_info.samplerate),
            path.stat().st_size,
        )
    try:
        parsed = mutagen.File(path)
    except mutagen.MutagenError:
        parsed = None
    info = getattr(parsed, "info", None)
    length = getattr(info, "length", None)
    channels = getattr(info, "channels", None)
    rate = getattr(info, "sample_rate", None)
    if not (length and channels and rate):
        return _probe_with_ffmpeg(path)
    return AudioInfo(float(length), int(channels), int(rate), path.stat().st_size)


@dataclass(frozen=True)
class PcmBlocks:
    """A recording decoded a block at a time: float32 arrays (full scale 1.0) shaped
    (n, channels), n at most `block_frames`. However long the recording, no more samples than
    that are held at once. (float32: mpg123 decodes to it natively, twice as fast as int16.)"""

    rate: int
    channels: int
    block_frames: int
    blocks: Iterator[np.ndarray]


BLOCK_SEC = 10.0  # decoded at once: 1.9 MB of 48 kHz stereo int16


def iter_pcm(
    path: str | Path,
    info: AudioInfo | None = None,
    *,
    block_sec: float = BLOCK_SEC,
    max_rate: int = 16_000,
    reuse: bool = False,
) -> PcmBlocks:
    """Decode a recording in blocks of `block_sec`: in-process with libsndfile (MP3 via
    mpg123, FLAC, WAV, Ogg) at the file's own rate, else streamed out of an ffmpeg process
    (other containers, e.g. m4a), resampled to at most `max_rate`.

    `reuse`: libsndfile decodes every block into one array, each block a view of it that the
    next block overwrites (for a reader done with a block before it asks for the next). A
    fresh array per block costs the kernel a page fault per 4 KiB of it, which cost as much
    CPU as the envelope's arithmetic."""
    path = Path(path)
    try:
        sound = soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        sound = None
    if sound is not None:
        frames = max(1, int(block_sec * sound.samplerate))
        blocks = _sndfile_blocks(sound, frames, reuse=reuse)
        return PcmBlocks(sound.samplerate, sound.channels, frames, blocks)
    info = info or probe(path)
    rate = min(info.sample_rate, max_rate)
    frames = max(1, int(block_sec * rate))
    blocks = _ffmpeg_blocks(path, rate, info.channels, frames)
    return PcmBlocks(rate, info.channels, frames, blocks)


def _sndfile_blocks(
    sound: soundfile.SoundFile, frames: int, *, reuse: bool = False
) -> Iterator[np.ndarray]:
    done = 0
    with sound:
        out = np.empty((frames, sound.channels), dtype=np.float32) if reuse else None
        while True:
            try:
                block = sound.read(frames, dtype="float32", always_2d=True, out=out)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                at = done / sound.samplerate
                raise AudioError(
                    f"corrupt recording: undecodable after {at:.1f} s ({exc})"
                ) from None
            if not len(block):
                return
            done += len(block)
            yield block


def _ffmpeg_blocks(path: Path, rate: int, channels: int, frames: int) -> Iterator[np.ndarray]:
    pcm_out = ["-f", "f32le", "-acodec", "pcm_f32le", "-ar", str(rate), "-ac", str(channels)]
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path)]
    proc = subprocess.Popen(
        [*cmd, *pcm_out, "pipe:1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    block_bytes = frames * channels * 4
    try:
        while True:
            data = proc.stdout.read(block_bytes)
            usable = len(data) - len(data) % (4 * channels)
            if usable:
                yield np.frombuffer(data[:usable], dtype=np.float32).reshape(-1, channels)
            if len(data) < block_bytes:
                break
        error = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise AudioError(f"ffmpeg failed: {error[-500:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def decode_pcm(source: bytes | Path, *, sample_rate: int, channels: int) -> bytes:
    """Any audio ffmpeg reads (a file, or bytes piped in) as 16-bit little-endian PCM."""
    data = source if isinstance(source, bytes) else None
    src = "pipe:0" if data is not None else str(source)
    pcm_out = ["-f", "s16le", "-acodec", "pcm_s16le", "-ar", str(sample_rate), "-ac", str(channels)]
    raw = run_ffmpeg(["-i", src, *pcm_out, "pipe:1"], data)
    if not raw and data:
        raise AudioError("ffmpeg decoded no audio")
    return raw[: len(raw) - len(raw) % (2 * channels)]


def encode_pcm(
    raw: bytes, sample_rate: int, channels: int, out: Path, *, bitrate: str = "64k"
) -> Path:
    """Write 16-bit PCM as MP3 (libmp3lame) to `out` (a file: ffmpeg then writes the
    Xing header with the exact length). Other suffixes use ffmpeg's default codec."""
    codec = ["-c:a", "libmp3lame", "-b:a", bitrate] if out.suffix == ".mp3" else []
    pcm_in = ["-f", "s16le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0"]
    run_ffmpeg([*pcm_in, *codec, "-y", str(out)], raw)
    return out


FLAC_RATE = 16_000  # what Whisper works at; more would only make the upload bigger


def encode_flac_piece(
    source: Path, out: Path, *, start: float, duration: float, channel: int | None = None
) -> Path:
    """`duration` seconds of `source` from `start` as 16 kHz mono FLAC (lossless: no second
    lossy generation; read by OpenAI and every compatible server, whisper.cpp included).
    `channel` takes one channel (0 = left), else the channels are mixed down, as Whisper
    does. ffmpeg reads the file itself: nothing of it passes through this process."""
    mix = ["-af", f"pan=mono|c0=c{channel}"] if channel is not None else ["-ac", "1"]
    span = ["-ss", f"{max(start, 0.0):.6f}", "-t", f"{duration:.6f}", "-i", str(source)]
    codec = ["-ar", str(FLAC_RATE), "-c:a", "flac", "-compression_level", "5"]
    run_ffmpeg([*span, *mix, *codec, "-y", str(out)])
    return out
