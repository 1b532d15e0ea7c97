"""A recording's real format, read from its first bytes (never from a link or a file name:
Bitrix24 holds MP3 and WAV, and a name or an extension may lie)."""

from __future__ import annotations

# extension -> content type, for storage and for the STT, which reads the format from the
# file name (docs/specs/stt_wire.md §1.1).
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "m4a": "audio/mp4",
}
SNIFF_BYTES = 16


def sniff_format(head: bytes) -> str | None:
    """The extension of the format `head` (the file's first bytes) starts, or None."""
    if head.startswith(b"ID3"):
        return "mp3"
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE",):
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head[4:8] == b"ftyp":
        return "m4a"
    # An MPEG audio frame without an ID3 tag: 11 sync bits, layer III, version 1/2/2.5.
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06 == 0x02:
        return "mp3"
    return None


def content_type(extension: str) -> str:
    return CONTENT_TYPES.get(extension.lower().lstrip("."), "application/octet-stream")
