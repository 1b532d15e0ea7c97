"""Sandbox MP3s spliced from pre-encoded frames: no encoder runs per call.

MPEG-2 Layer III at 16 kHz codes 576 samples (36 ms) per frame. Encoded by LAME in CBR
without the bit reservoir, every frame carries all of its own bits, and decoding is linear
across frames: a frame's coefficients add its share to the output (IMDCT overlap-add, then
the polyphase filterbank) whatever its neighbours hold, and a frame with no coded bits adds
nothing. So the frames LAME wrote around a tone surrounded by silence decode to that same
tone when copied between the silent frames of another stream, at the same frame offset.

Once per process a bank per channel layout holds every word tone the scripts can ask for
(each vocabulary index at each length in frames), placed so that after the codec delay
(LAME's encoder delay plus the decoder's, measured) each tone decodes exactly on a frame
boundary. A call is then a join of silent frames and blocks cut from the bank, and decodes
sample for sample where `tones.render_pcm` puts its words.

Like a real encoder's file, a call opens with an Info frame whose LAME tag says how long the
audio is (docs/specs/audio_formats.md §2): one silent frame more at the start and an encoder
delay of 576 - 529 = 47 samples make a gapless decoder (ffmpeg, mpg123) drop exactly that
frame, so the timeline stays the bank's; the padding drops what the last frame holds past the
call's end. Its length is then the call's to the sample, from the headers, on every machine.

`python -m calltexts_sandbox.calls.mp3_frames` prints the bank build time and render speed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from calltexts_assets.audio.decode import ffmpeg_exe, run_ffmpeg
from calltexts_assets.audio.mp3_frames import (
    DECODER_DELAY,
    GRANULE_BITS_LSF,
    Mp3FrameError,
    granule_lengths,
    is_silent,
    main_data_begin,
    parse_header,
)
from calltexts_sandbox.calls import tones
from calltexts_sandbox.calls.script import (
    VOCABULARY,
    WORD_GAP_SEC,
    WORD_SEC,
    CallScript,
    Turn,
    Word,
    call_script,
)

Layout = Literal["left", "right", "mono"]
LAYOUTS: tuple[Layout, ...] = ("left", "right", "mono")
SAMPLE_RATE = tones.SAMPLE_RATE
FRAME_SAMPLES = 576  # MPEG-2 (LSF) Layer III: one granule per frame
FRAME_SEC = FRAME_SAMPLES / SAMPLE_RATE
# Every length a script's word can take (script.py rounds times to whole frames).
TONE_FRAMES: tuple[int, ...] = tuple(
    range(round(WORD_SEC[0] / FRAME_SEC), round(WORD_SEC[1] / FRAME_SEC) + 1)
)
MIN_GAP_FRAMES = round(WORD_GAP_SEC[0] / FRAME_SEC)
# Silent frames between two tones of the bank: a tone's coded frames reach ~2 frames before
# it (the codec delay), so half of this on each side leaves a silent frame at every edge.
BANK_SPACING = 6
BANK_VERSION = "1"  # bump when the bank's layout changes (names on-disk copies)

_GRANULE_BITS = GRANULE_BITS_LSF  # one channel's granule side info in an LSF frame
_SIDE_INFO_BITS = 136  # LSF stereo: main_data_begin 8, private 2, two granule-channels
# LSF bitrates, smallest first, for a frame that carries both sides of cross-talk.
_LSF_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


class NotSpliceable(ValueError):
    """A script the bank cannot render (times off the frame grid, unknown word length...)."""


def split_frames(data: bytes) -> list[bytes]:
    """The frames of a raw CBR stream; each must start exactly where the previous one ends."""
    frames: list[bytes] = []
    offset = 0
    stream_format: tuple[int, int, int] | None = None
    while offset < len(data):
        header = parse_header(data, offset)
        this_format = (header.kbps, header.sample_rate, header.channels)
        stream_format = stream_format or this_format
        if this_format != stream_format:
            raise Mp3FrameError(f"frame at byte {offset} changes format: not one CBR stream")
        if offset + header.length > len(data):
            raise Mp3FrameError(f"truncated frame at byte {offset}")
        frames.append(data[offset : offset + header.length])
        offset += header.length
    return frames


def parse_kbps(bitrate: str) -> int:
    """Kbps of an ffmpeg bitrate ("32k", "32000"); NotSpliceable if MPEG-2 L3 has none such."""
    text = bitrate.strip().lower()
    try:
        kbps = int(text[:-1]) if text.endswith("k") else int(text) // 1000
    except ValueError:
        raise NotSpliceable(f"bitrate {bitrate!r}") from None
    if kbps not in _LSF_KBPS:
        raise NotSpliceable(f"no MPEG-2 Layer III bitrate {bitrate!r}")
    return kbps


def _lame_args(channels: int, kbps: int) -> list[str]:
    return [
        "-c:a", "libmp3lame", "-b:a", f"{kbps}k", "-ar", str(SAMPLE_RATE), "-ac", str(channels),
        "-reservoir", "0",  # every frame self-contained, so frames can be cut and joined
        # L/R, not M/S: a frame of one speaker then codes nothing at all in the other channel.
        "-joint_stereo", "0",
        "-write_xing", "0", "-id3v2_version", "0", "-write_id3v1", "0", "-f", "mp3",
    ]  # fmt: skip


def encode(pcm: np.ndarray, kbps: int) -> bytes:
    """int16 (n, channels) samples as a raw CBR MP3 without reservoir, tags or info frame."""
    channels = pcm.shape[1]
    pcm_in = ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", str(channels), "-i", "pipe:0"]
    raw = np.ascontiguousarray(pcm, dtype=np.int16).tobytes()
    return run_ffmpeg([*pcm_in, *_lame_args(channels, kbps), "pipe:1"], raw)


@functools.cache
def codec_delay(kbps: int) -> int:
    """Samples from a tone's start in the encoder's input to its start in ffmpeg's output.

    LAME delays by 576 and the decoder by 529 (1105 in all), but ffmpeg may or may not trim
    its share: measured on one tone with our own ffmpeg rather than assumed.
    """
    lead, length, search = 8 * FRAME_SAMPLES, 8 * FRAME_SAMPLES, 4 * FRAME_SAMPLES
    pcm = np.zeros((lead + length + search + 4 * FRAME_SAMPLES, 1), dtype=np.int16)
    pcm[lead : lead + length, 0] = tones._tone(len(VOCABULARY) // 2, length, SAMPLE_RATE)
    decoded = tones.decode_pcm(encode(pcm, kbps), SAMPLE_RATE, channels=1)[:, 0].astype(np.float64)
    reference = pcm[lead : lead + length, 0].astype(np.float64)
    window = decoded[lead : lead + length + search]
    if len(window) < length + search:
        raise Mp3FrameError("ffmpeg decoded too few samples to measure its delay")
    return int(np.argmax(np.correlate(window, reference, "valid")))


@dataclass(frozen=True)
class Bank:
    """Pre-encoded frames of every word tone in one channel layout."""

    layout: Layout
    kbps: int
    silence: bytes  # one frame that decodes to zeros
    blocks: dict[tuple[int, int], bytes]  # (word index, tone frames) -> the frames coding it
    lead: int  # frames a block starts before its tone's first decoded frame
    tail: int  # frames a block goes on after its tone's last decoded frame
    frame_bytes: int
    build_sec: float


def _bank_script(layout: Layout) -> tuple[CallScript, list[tuple[int, int, int]]]:
    """All tones of a layout as one script, and (word index, tone frames, first frame) of each.

    A script, so that `tones.render_pcm` draws the bank's tones exactly as a call's.
    """
    slots: list[tuple[int, int, int]] = []
    cursor = BANK_SPACING
    for index in range(len(VOCABULARY)):
        for frames in TONE_FRAMES:
            slots.append((index, frames, cursor))
            cursor += frames + BANK_SPACING
    words = tuple(
        Word(VOCABULARY[i], i, round(f * FRAME_SEC, 3), round((f + n) * FRAME_SEC, 3))
        for i, n, f in slots
    )
    channel = 1 if layout == "right" else 0
    turn = Turn(("operator", "client")[channel], channel, words)
    duration = int(np.ceil(cursor * FRAME_SEC))
    return CallScript(f"mp3-bank-{layout}", duration, layout != "mono", (turn,)), slots


def _cut_bank(layout: Layout, kbps: int, data: bytes, build_sec: float) -> Bank:
    frames = split_frames(data)
    header = parse_header(frames[0])
    channels = 1 if layout == "mono" else 2
    if (header.kbps, header.sample_rate, header.channels) != (kbps, SAMPLE_RATE, channels):
        raise Mp3FrameError(f"bank is {header}, wanted {kbps} kbps {channels} ch")
    if any(len(f) != len(frames[0]) for f in frames):
        raise Mp3FrameError("bank frames differ in length (padding): not a fixed frame grid")
    if any(main_data_begin(f) for f in frames):
        raise Mp3FrameError("bank frames use the bit reservoir: they cannot be cut apart")
    silent = [is_silent(f) for f in frames]
    _, slots = _bank_script(layout)
    half = BANK_SPACING // 2
    extents: list[tuple[int, int]] = []
    for index, n, first in slots:
        lo, hi = first - half, first + n + half  # windows of neighbours tile the bank
        if hi > len(frames) or not silent[lo] or not silent[hi - 1]:
            raise Mp3FrameError(f"tone {index}x{n} at frame {first} is not enclosed in silence")
        coded = [i for i in range(lo, hi) if not silent[i]]
        if not coded:
            raise Mp3FrameError(f"tone {index}x{n} at frame {first} coded no frame")
        extents.append((first - coded[0], coded[-1] + 1 - first - n))
    lead = max(0, *(a for a, _ in extents))
    tail = max(0, *(b for _, b in extents))
    # Blocks of two words at the script's smallest gap must not share a frame.
    if lead + tail >= MIN_GAP_FRAMES:
        raise Mp3FrameError(f"tone blocks reach {lead}+{tail} frames beyond their tones")
    start, size = header.side_info
    first_silent = frames[silent.index(True)]
    # Zero the ancillary bytes (LAME writes its version there): a clean, reusable frame.
    silence = first_silent[: start + size] + bytes(len(first_silent) - start - size)
    blocks = {
        (index, n): b"".join(frames[first - lead : first + n + tail]) for index, n, first in slots
    }
    return Bank(layout, kbps, silence, blocks, lead, tail, len(silence), build_sec)


def _bank_path(cache_dir: Path, layout: Layout, kbps: int) -> Path:
    # Whatever shapes the bank's bytes: a changed tone or encoder never reads a stale copy.
    tone = (tones.BASE_HZ, tones.STEP_HZ, tones.AMPLITUDE, tones.RAMP_SEC)
    key = repr((BANK_VERSION, ffmpeg_exe(), VOCABULARY, TONE_FRAMES, BANK_SPACING, tone))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"mp3-bank-{layout}-{kbps}k-{digest}.mp3"


def build_bank(layout: Layout, kbps: int, cache_dir: Path | None = None) -> Bank:
    """Encode (or read from `cache_dir`) and cut one bank; `banks` keeps them per process."""
    started = time.perf_counter()
    path = _bank_path(cache_dir, layout, kbps) if cache_dir else None
    if path and path.is_file():
        return _cut_bank(layout, kbps, path.read_bytes(), time.perf_counter() - started)
    script, _ = _bank_script(layout)
    # Advance the input by the codec delay: the decoded bank then lines up sample for sample
    # with render_pcm(script), every tone starting on a frame boundary.
    data = encode(tones.render_pcm(script)[codec_delay(kbps) :], kbps)
    bank = _cut_bank(layout, kbps, data, time.perf_counter() - started)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(path)  # atomic: a concurrent reader never sees half a bank
    return bank


_banks: dict[tuple[Layout, int], Bank] = {}
_banks_lock = threading.Lock()  # the portal renders on a thread pool: build each bank once


def banks(
    layouts: Sequence[Layout] = LAYOUTS, kbps: int = 32, cache_dir: Path | None = None
) -> dict[Layout, Bank]:
    """The banks of `layouts`, built on first use (concurrently: one ffmpeg run each).

    `cache_dir` keeps the encoded banks on disk for the next process.
    """
    with _banks_lock:
        missing = [layout for layout in layouts if (layout, kbps) not in _banks]
        if missing:
            codec_delay(kbps)  # once, before the threads need it
            with ThreadPoolExecutor(len(missing)) as pool:
                built = pool.map(lambda layout: build_bank(layout, kbps, cache_dir), missing)
                _banks.update(((b.layout, kbps), b) for b in built)
        return {layout: _banks[(layout, kbps)] for layout in layouts}


def _frame_of(seconds: float) -> int:
    frame = round(seconds / FRAME_SEC)
    if abs(frame * FRAME_SEC - seconds) > 1e-6:
        raise NotSpliceable(f"time {seconds} is not on the {FRAME_SEC * 1000:g} ms frame grid")
    return frame


# The LAME tag's encoder delay: with the decoder's 529 it drops one whole (silent) frame.
TAG_DELAY = FRAME_SAMPLES - DECODER_DELAY
_XING_FLAGS = 0x0F  # frames, bytes, TOC, quality: the layout LAME and ffmpeg write
_LAME_TAG_BYTES = 36  # version (9) .. tag CRC: LAME's PutLameVBR


def _crc16_arc(data: bytes | bytearray) -> int:
    """LAME's tag CRC (CRC_update_lookup: CRC-16, reflected 0x8005, initial 0)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def info_frame(audio_header: bytes, frames: int, audio_bytes: int, samples: int) -> bytes:
    """An Info (CBR Xing) frame with a LAME tag for `frames` audio frames of `audio_bytes`
    holding `samples` samples of audio after TAG_DELAY, as LAME's `PutVbrTag`/`PutLameVBR`
    lay it out. The frame takes the smallest bitrate that holds the tag (ffmpeg's muxer does
    the same); it carries no audio."""
    head = parse_header(audio_header)
    word = int.from_bytes(audio_header[:4], "big") & ~(0xF << 12) & ~(1 << 9)
    word |= 1 << 16  # no CRC
    at = 4 + head.side_info[1]
    need = at + 4 + 4 + 4 + 4 + 100 + 4 + _LAME_TAG_BYTES
    for index in range(1, 15):
        tag_header = (word | index << 12).to_bytes(4, "big")
        length = parse_header(tag_header).length
        if length >= need:
            break
    else:
        raise NotSpliceable("no bitrate holds the LAME tag")
    total = length + audio_bytes
    padding = frames * head.samples - TAG_DELAY - samples
    if not 0 <= padding < 4096:
        raise NotSpliceable(f"{samples} samples do not fit {frames} frames")
    frame = bytearray(length)
    frame[:4] = tag_header
    frame[at : at + 4] = b"Info"
    frame[at + 4 : at + 8] = _XING_FLAGS.to_bytes(4, "big")
    frame[at + 8 : at + 12] = frames.to_bytes(4, "big")
    frame[at + 12 : at + 16] = total.to_bytes(4, "big")
    frame[at + 16 : at + 116] = bytes(i * 256 // 100 for i in range(100))  # CBR: linear TOC
    lame = at + 120  # after the quality field (0)
    frame[lame : lame + 9] = b"LAME3.100"
    frame[lame + 9] = 0x01  # tag revision 0, CBR
    frame[lame + 20] = min(head.kbps, 255)
    frame[lame + 21 : lame + 24] = (TAG_DELAY << 12 | padding).to_bytes(3, "big")
    frame[lame + 28 : lame + 32] = total.to_bytes(4, "big")  # music length, tag included
    frame[lame + 34 : lame + 36] = _crc16_arc(frame[: lame + 34]).to_bytes(2, "big")
    return bytes(frame)


def frame_count(duration_sec: float) -> int:
    """Frames of a call: decodes to `duration_sec` within half a frame.

    Two at least: headers of a lone frame are no file to mutagen or ffmpeg's probe.
    """
    return max(2, round(duration_sec / FRAME_SEC))


def _main_bits(frame: bytes, channel: int) -> tuple[int, int]:
    """(bits, count) of one channel's main data in a frame of a one-sided bank (the other
    channel codes nothing, so this one's data starts at the first main-data bit)."""
    lengths = granule_lengths(frame)[0]
    if lengths[1 - channel]:
        raise NotSpliceable("a bank frame codes both channels")
    header = parse_header(frame)
    data = int.from_bytes(frame[header.main_data_offset :], "big")
    total = (len(frame) - header.main_data_offset) * 8
    return data >> (total - lengths[channel]), lengths[channel]


def merge_sides(left: bytes, right: bytes) -> bytes:
    """One frame that decodes to `left`'s left channel and `right`'s right channel (cross-talk).

    L/R stereo codes the channels independently: the side info takes `left`'s granule fields
    for channel 0 and `right`'s for channel 1, the main data `left`'s bits then `right`'s.
    Both sides may need more bytes than a 32 kbps frame holds, so the frame takes the
    smallest bitrate that fits them (a decoder reads each frame's own bitrate: VBR)."""
    header = parse_header(left)
    start, size = header.side_info
    if header.channels != 2 or not header.lsf or size * 8 != _SIDE_INFO_BITS:
        raise NotSpliceable("cross-talk needs MPEG-2 stereo frames")
    left_info = int.from_bytes(left[start : start + size], "big")
    right_info = int.from_bytes(right[start : start + size], "big")
    mask = (1 << _GRANULE_BITS) - 1
    info = ((left_info >> _GRANULE_BITS) & mask) << _GRANULE_BITS | (right_info & mask)
    left_bits, left_count = _main_bits(left, 0)
    right_bits, right_count = _main_bits(right, 1)
    needed = start + size + (left_count + right_count + 7) // 8
    kbps = next((k for k in _LSF_KBPS if 72 * k * 1000 // header.sample_rate >= needed), None)
    if kbps is None:
        raise NotSpliceable("cross-talk frame too large for any bitrate")
    length = 72 * kbps * 1000 // header.sample_rate
    main_bytes = length - start - size
    main = ((left_bits << right_count) | right_bits) << (main_bytes * 8 - left_count - right_count)
    word = int.from_bytes(left[:4], "big") & ~(0xF << 12) & ~(1 << 9)  # bitrate, no padding
    word |= _LSF_KBPS.index(kbps) + 1 << 12
    return word.to_bytes(4, "big") + info.to_bytes(size, "big") + main.to_bytes(main_bytes, "big")


def _overlay(below: bytes, above: bytes, above_layout: Layout) -> bytes:
    if is_silent(below):
        return above
    if is_silent(above):
        return below
    if above_layout == "mono":
        raise NotSpliceable("two words at once on one channel")
    left, right = (below, above) if above_layout == "right" else (above, below)
    if granule_lengths(left)[0][1] or granule_lengths(right)[0][0]:
        raise NotSpliceable("two words at once on one channel")
    return merge_sides(left, right)


def render_iter(
    script: CallScript, *, bitrate: str = "32k", cache_dir: Path | None = None
) -> Iterator[bytes]:
    """The call as MP3 bytes joined from bank frames, a few frames at a time (a call of hours
    is never held whole); NotSpliceable if the bank can't render it. Words of the two sides
    that overlap in time (cross-talk) share frames (`merge_sides`)."""
    kbps = parse_kbps(bitrate)
    layouts: tuple[Layout, ...] = ("left", "right") if script.stereo else ("mono",)
    placed: list[tuple[int, int, int, Layout]] = []  # (first frame, index, frames, layout)
    for turn in script.all_turns:
        if script.stereo and turn.channel not in (0, 1):
            raise NotSpliceable(f"channel {turn.channel} in a stereo call")
        layout = layouts[turn.channel] if script.stereo else "mono"
        for word in turn.words:
            first = _frame_of(word.start)
            placed.append((first, word.index, _frame_of(word.end) - first, layout))
    placed.sort()
    found = banks(layouts, kbps, cache_dir)
    silence = found[layouts[0]].silence
    total = frame_count(script.duration_sec)
    # The tag, then the silent frame its delay drops: the decoded timeline stays the bank's.
    # A silent frame more at the end when the call ends within the decoder's last 529 samples
    # (a padding under 529 would have decoders stop short of the call's end).
    samples = round(script.duration_sec * SAMPLE_RATE)
    tail = int((total + 1) * FRAME_SAMPLES - TAG_DELAY - samples < DECODER_DELAY)
    frames = total + 1 + tail
    yield info_frame(silence, frames, frames * len(silence), samples) + silence
    window: list[bytes] = []  # frames from `base` on, not yet written
    base = 0
    for first, index, frames, layout in placed:
        bank = found[layout]
        block = bank.blocks.get((index, frames))
        if block is None:
            raise NotSpliceable(f"no {frames}-frame tone for word {index} in the bank")
        start = first - bank.lead
        if start < base:
            raise NotSpliceable(f"word at {first * FRAME_SEC:.3f} s too close to the previous")
        if start > base + len(window):  # no overlap with what is pending: write it out
            yield b"".join(window) + silence * (start - base - len(window))
            window, base = [], start
        elif start > base:  # later blocks start later still: what precedes this one is final
            yield b"".join(window[: start - base])
            window, base = window[start - base :], start
        step = bank.frame_bytes
        for k in range(len(block) // step):
            frame = block[k * step : (k + 1) * step]
            if k < len(window):
                window[k] = _overlay(window[k], frame, layout)
            else:
                window.append(frame)
    if base + len(window) > total:
        raise NotSpliceable("a word runs past the end of the call")
    yield b"".join(window) + silence * (total - base - len(window) + tail)


def render(script: CallScript, *, bitrate: str = "32k", cache_dir: Path | None = None) -> bytes:
    """The whole call as MP3 bytes (see `render_iter`)."""
    return b"".join(render_iter(script, bitrate=bitrate, cache_dir=cache_dir))


def render_mp3(
    script: CallScript, *, bitrate: str = tones.BITRATE, bank_dir: Path | None = None
) -> bytes:
    """The call recording as MP3 bytes (16 kHz, 32 kbps by default).

    Joined from pre-encoded frames (`render`; `bank_dir` keeps its bank on disk), as
    the sandbox must serve thousands of audio minutes fast. A script whose words are off the
    36 ms frame grid (call_script never makes one) is encoded whole instead.
    """
    try:
        return render(script, bitrate=bitrate, cache_dir=bank_dir)
    except NotSpliceable:
        return tones.encode(tones.render_pcm(script), tones.SAMPLE_RATE, fmt="mp3", bitrate=bitrate)


def _main() -> None:
    parser = argparse.ArgumentParser(description="Time the bank build and spliced rendering.")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--mono", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    built = banks()
    print(f"codec delay: {codec_delay(32)} samples")
    print(f"bank build: {time.perf_counter() - started:.2f} s wall for {len(built)} layouts")
    for bank in built.values():
        size = sum(map(len, bank.blocks.values()))
        print(f"  {bank.layout}: {bank.build_sec:.2f} s, {len(bank.blocks)} blocks, {size} B")
    minutes = args.calls * args.seconds / 60
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(args.calls):
        render(call_script(f"speed-{i}", args.seconds, stereo=not args.mono))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{args.calls} calls of {args.seconds} s {'mono' if args.mono else 'stereo'}: "
        f"{wall * 1000 / args.calls:.2f} ms per call, {wall * 1000 / minutes:.2f} ms wall "
        f"({cpu * 1000 / minutes:.2f} ms CPU) per audio minute, script included"
    )


if __name__ == "__main__":
    _main()
