"""MPEG audio Layer III frames: headers, side info, the Xing/Info (LAME) tag, and a reader
that walks a file frame by frame without decoding it.

The frame format is ISO/IEC 11172-3 (MPEG-1) and 13818-3 (MPEG-2 LSF), with the MPEG-2.5
extension for 8-12 kHz; the Xing/Info tag and its LAME extension are read as ffmpeg's
`mp3_parse_info_tag` (libavformat/mp3dec.c) reads them. Sources: docs/specs/audio_formats.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Layer III bitrates (kbps) by bitrate index: MPEG-1, and MPEG-2/2.5 (LSF).
_KBPS_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0)
_KBPS_LSF = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0)
# Sample rates by version bits (00 = MPEG-2.5, 10 = MPEG-2, 11 = MPEG-1) and rate index.
_RATES = {0b11: (44100, 48000, 32000), 0b10: (22050, 24000, 16000), 0b00: (11025, 12000, 8000)}
_VERSION = {0b11: 1, 0b10: 2, 0b00: 25}
_MONO = 3  # channel mode
# Bits of one granule of one channel in the side info (part2_3_length comes first, 12 bits).
GRANULE_BITS_V1 = 59
GRANULE_BITS_LSF = 63
# ffmpeg and mpg123 both drop the encoder delay the LAME tag announces plus the decoder's
# own 529 samples (ffmpeg: `start_pad + 528 + 1`; mpg123: GAPLESS_DELAY).
DECODER_DELAY = 529
_ID3V2_HEADER = 10


class Mp3FrameError(ValueError):
    """Bytes that are not the MPEG Layer III frames expected there."""


@dataclass(frozen=True)
class FrameHeader:
    version: int  # 1, 2 or 25 (MPEG-2.5)
    kbps: int
    sample_rate: int
    padding: int
    channels: int
    crc: bool

    @property
    def lsf(self) -> bool:
        """MPEG-2 / 2.5: one granule of 576 samples per frame, smaller side info."""
        return self.version != 1

    @property
    def samples(self) -> int:
        return 576 if self.lsf else 1152

    @property
    def length(self) -> int:
        return (72 if self.lsf else 144) * self.kbps * 1000 // self.sample_rate + self.padding

    @property
    def side_info(self) -> tuple[int, int]:
        """(offset, length) of the side info in the frame."""
        mono = self.channels == 1
        # (LSF mono, LSF stereo) or (MPEG-1 mono, MPEG-1 stereo), ISO/IEC 11172-3 2.4.1.7
        size = (9 if mono else 17) if self.lsf else (17 if mono else 32)
        return 4 + 2 * self.crc, size

    @property
    def main_data_offset(self) -> int:
        start, size = self.side_info
        return start + size

    @property
    def granule_layout(self) -> tuple[int, int, int]:
        """(bits before the first granule, granules, bits per granule and channel)."""
        if self.lsf:
            return 8 + (1 if self.channels == 1 else 2), 1, GRANULE_BITS_LSF
        private = 5 if self.channels == 1 else 3
        return 9 + private + 4 * self.channels, 2, GRANULE_BITS_V1


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader:
    """The Layer III frame header at `offset`; Mp3FrameError if there is none."""
    if len(data) < offset + 4:
        raise Mp3FrameError(f"truncated frame header at byte {offset}")
    h = int.from_bytes(data[offset : offset + 4], "big")
    version_bits, layer = (h >> 19) & 3, (h >> 17) & 3
    if h >> 21 != 0x7FF or version_bits == 0b01 or layer != 0b01:
        raise Mp3FrameError(f"no MPEG Layer III frame header at byte {offset}: {h:08x}")
    rate_index = (h >> 10) & 3
    kbps = (_KBPS_V1 if version_bits == 0b11 else _KBPS_LSF)[(h >> 12) & 15]
    if not kbps or rate_index == 3:
        raise Mp3FrameError(f"free-format or reserved bitrate/sample rate at byte {offset}")
    return FrameHeader(
        version=_VERSION[version_bits],
        kbps=kbps,
        sample_rate=_RATES[version_bits][rate_index],
        padding=(h >> 9) & 1,
        channels=1 if (h >> 6) & 3 == _MONO else 2,
        crc=not ((h >> 16) & 1),  # protection bit 0: a CRC follows the header
    )


def _side_info_bits(frame: bytes | bytearray) -> tuple[FrameHeader, int, int]:
    header = parse_header(frame)
    start, size = header.side_info
    return header, int.from_bytes(frame[start : start + size], "big"), size * 8


def main_data_begin(frame: bytes | bytearray) -> int:
    """How many bytes back into earlier frames this frame's data starts (bit reservoir)."""
    header, bits, n = _side_info_bits(frame)
    width = 8 if header.lsf else 9
    return bits >> (n - width)


def granule_lengths(frame: bytes | bytearray) -> list[list[int]]:
    """part2_3_length (coded bits) of each granule of each channel: [granule][channel]."""
    header, bits, n = _side_info_bits(frame)
    first, granules, width = header.granule_layout
    lengths: list[list[int]] = []
    for granule in range(granules):
        row = []
        for channel in range(header.channels):
            shift = n - (first + (granule * header.channels + channel) * width) - 12
            row.append((bits >> shift) & 0xFFF)
        lengths.append(row)
    return lengths


def is_silent(frame: bytes | bytearray) -> bool:
    """No coded bits in any granule or channel: every coefficient is zero."""
    return not any(any(row) for row in granule_lengths(frame))


def crc16(data: bytes | bytearray) -> int:
    """The frame CRC: CRC-16 (polynomial 0x8005, initial 0xFFFF) over the last two bytes of
    the header and the side info (ISO/IEC 11172-3, 2.4.3.1)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def silenced(frame: bytes | bytearray) -> bytes:
    """The frame with an all-zero side info: no reservoir reference, no coded bits, so it
    decodes to silence on its own. Its main data bytes stay: a later frame may take its
    reservoir from them. A CRC, if any, is recomputed."""
    header = parse_header(frame)
    start, size = header.side_info
    out = bytearray(frame)
    out[start : start + size] = bytes(size)
    if header.crc:
        out[4:6] = crc16(bytes(out[2:4]) + bytes(size)).to_bytes(2, "big")
    return bytes(out)


def id3v2_size(head: bytes) -> int:
    """Bytes of an ID3v2 tag at the start of `head` (0 without one)."""
    if len(head) < _ID3V2_HEADER or head[:3] != b"ID3":
        return 0
    size = 0
    for byte in head[6:10]:  # a "synchsafe" integer: 7 bits per byte
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if head[5] & 0x10 else 0
    return _ID3V2_HEADER + size + footer


@dataclass(frozen=True)
class InfoTag:
    """What the Xing/Info frame (first frame of most encoders' files) says."""

    frames: int | None
    encoder_delay: int  # samples the encoder added at the start (LAME tag; 0 without)
    encoder_padding: int
    has_lame: bool

    @property
    def skip_samples(self) -> int:
        """Samples a gapless decoder drops at the start (ffmpeg, libsndfile/mpg123)."""
        return self.encoder_delay + DECODER_DELAY if self.has_lame else 0


_XING_FRAMES, _XING_BYTES, _XING_TOC, _XING_QUALITY = 1, 2, 4, 8


def read_info_tag(frame: bytes | bytearray) -> InfoTag | None:
    """The Xing/Info tag of a frame (or a VBRI tag), None when the frame is audio."""
    header = parse_header(frame)
    at = header.main_data_offset
    marker = bytes(frame[at : at + 4])
    if frame[36:40] == b"VBRI":  # Fraunhofer's tag: always 32 bytes after the header
        return InfoTag(frames=None, encoder_delay=0, encoder_padding=0, has_lame=False)
    if marker not in (b"Xing", b"Info"):
        return None
    flags = int.from_bytes(frame[at + 4 : at + 8], "big")
    cursor = at + 8
    frames = None
    if flags & _XING_FRAMES:
        frames = int.from_bytes(frame[cursor : cursor + 4], "big")
        cursor += 4
    cursor += 4 * bool(flags & _XING_BYTES) + 100 * bool(flags & _XING_TOC)
    cursor += 4 * bool(flags & _XING_QUALITY)
    encoder = bytes(frame[cursor : cursor + 4])
    # version (9), revision/VBR method, lowpass, peak (4), gains (2+2), flags, bitrate: 21.
    delays = frame[cursor + 21 : cursor + 24]
    if encoder in (b"LAME", b"Lavf", b"Lavc") and len(delays) == 3:
        value = int.from_bytes(delays, "big")
        return InfoTag(frames, value >> 12, value & 0xFFF, has_lame=True)
    return InfoTag(frames, 0, 0, has_lame=False)


@dataclass(frozen=True)
class StreamHead:
    """Where the audio frames of a file start and how its decoded timeline is shifted."""

    first_frame_offset: int  # byte offset of the first audio frame (after tags)
    header: FrameHeader  # of the first audio frame
    info: InfoTag | None

    @property
    def skip_samples(self) -> int:
        return self.info.skip_samples if self.info else 0


_READ_SIZE = 1 << 20
_SYNC_SEARCH = 64 * 1024  # junk tolerated between a tag and the first frame


def _find_frame(data: bytes, start: int) -> int:
    """Offset of the first position from `start` that holds a frame followed by another."""
    end = min(len(data), start + _SYNC_SEARCH)
    for at in range(start, end):
        if data[at] != 0xFF:
            continue
        try:
            header = parse_header(data, at)
            parse_header(data, at + header.length)
        except Mp3FrameError:
            continue
        return at
    raise Mp3FrameError("no MPEG Layer III frames found")


def read_head(path: str | Path) -> StreamHead:
    """Skip ID3v2 tags and read the first frame (an Xing/Info tag frame or audio)."""
    with open(path, "rb") as f:
        head = f.read(_READ_SIZE)
        tag = id3v2_size(head)
        if tag + _SYNC_SEARCH > len(head):  # a large tag (cover art): read past it
            f.seek(tag)
            head = bytes(tag) + f.read(_READ_SIZE)
    start = _find_frame(head, tag)
    header = parse_header(head, start)
    first = head[start : start + header.length]
    info = read_info_tag(first)
    if info is not None:  # the tag frame decodes to nothing: audio starts after it
        start += header.length
        header = parse_header(head, start)
    return StreamHead(start, header, info)


def iter_frames(f: BinaryIO, start: int) -> Iterator[bytes]:
    """The frames of an open file from byte `start`, read in bounded blocks.

    Stops at the first bytes that are no frame (an ID3v1/APE tag, or junk at the end)."""
    f.seek(start)
    buffer = b""
    at = 0
    while True:
        if len(buffer) - at < 4 + 2 * 1441:  # room for a header and the largest frame
            more = f.read(_READ_SIZE)
            buffer = buffer[at:] + more
            at = 0
            if not more and not buffer:
                return
        try:
            header = parse_header(buffer, at)
        except Mp3FrameError:
            return
        if at + header.length > len(buffer):
            return  # a truncated last frame
        yield buffer[at : at + header.length]
        at += header.length


def count_frames(path: str | Path, start: int) -> tuple[int, int]:
    """(audio frames, byte offset where they end) of a file from byte `start`, read in
    bounded blocks, headers only.

    Exact where an estimate from the first frame's bitrate is not: a VBR file without an
    Xing tag, or one whose bitrate changes. Stops where the frames do (tags, junk, a
    truncated last frame)."""
    lengths: dict[bytes, int] = {}  # a file has a handful of distinct headers
    count = 0
    with open(path, "rb") as f:
        f.seek(start)
        buffer = b""
        at = base = 0  # `base`: file offset of buffer[0]
        while True:
            if len(buffer) - at < 4:
                more = f.read(_READ_SIZE)
                if not more:
                    return count, start + base + at
                base += at
                buffer, at = buffer[at:] + more, 0
                continue
            word = buffer[at : at + 4]
            length = lengths.get(word)
            if length is None:
                try:
                    length = lengths[word] = parse_header(word).length
                except Mp3FrameError:
                    return count, start + base + at
            if at + length > len(buffer):
                more = f.read(_READ_SIZE)
                if not more:  # a truncated last frame decodes to nothing useful
                    return count, start + base + at
                base += at
                buffer, at = buffer[at:] + more, 0
                continue
            count += 1
            at += length
