"""Cutting an MP3 into pieces at frame boundaries: bytes copied, nothing decoded or encoded.

A Layer III frame may take the start of its data from earlier frames (the bit reservoir,
`main_data_begin`). A piece therefore opens with as many of the preceding frames as that
reach needs, each with its side info zeroed (`mp3_frames.silenced`): they decode to silence
on their own, yet their bytes fill the reservoir, so the first frame of the piece proper
decodes as it does in the whole file. Cuts are made in pauses, where those few silent frames
(a few tens of ms) replace nothing but silence.

Times: a piece carries no Xing/LAME tag, so a decoder outputs every sample of every frame.
The recording's own timeline (as libsndfile and ffmpeg decode the whole file, the encoder
delay dropped when the LAME tag announces it) is then shifted by `skip_samples`: the
piece's decoded sample 0 lies at `offset` seconds of the recording.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from calltexts_assets.audio.mp3_frames import (
    iter_frames,
    main_data_begin,
    parse_header,
    read_head,
    silenced,
)

# The reservoir reaches back at most 511 bytes (MPEG-1; 255 for LSF); at 8 kbps an LSF frame
# holds 59 bytes of main data: 9 frames. A few more cost nothing.
_LEAD_FRAMES_KEPT = 16


@dataclass(frozen=True)
class Mp3Piece:
    path: Path
    offset: float  # seconds of the recording at the piece's first decoded sample
    start: float  # seconds of the recording where the piece's own audio starts (the cut)
    end: float
    size: int  # bytes

    @property
    def duration(self) -> float:
        """What a decoder of the piece outputs, lead-in frames included."""
        return self.end - self.offset


class _PieceWriter:
    def __init__(self, out_dir: Path, stem: str, spf: int, rate: int, skip: int) -> None:
        self.out_dir, self.stem = out_dir, stem
        self.spf, self.rate, self.skip = spf, rate, skip
        self.pieces: list[Mp3Piece] = []
        self._file: BinaryIO | None = None
        self._first = self._audible = 0
        self._size = 0

    def _seconds(self, frame_index: int) -> float:
        return (frame_index * self.spf - self.skip) / self.rate

    @property
    def size(self) -> int:
        return self._size

    def open(self, audible: int, lead: Sequence[bytes]) -> None:
        self.close(audible)
        path = self.out_dir / f"{self.stem}_{len(self.pieces):03d}.mp3"
        self._file = path.open("wb")
        self._first, self._audible, self._size = audible - len(lead), audible, 0
        for frame in lead:
            self.write(silenced(frame))

    def write(self, frame: bytes) -> None:
        assert self._file is not None
        self._file.write(frame)
        self._size += len(frame)

    def close(self, end_frame: int) -> None:
        if self._file is None:
            return
        path = Path(self._file.name)
        self._file.close()
        self._file = None
        start = max(0.0, self._seconds(self._audible))
        self.pieces.append(
            Mp3Piece(path, self._seconds(self._first), start, self._seconds(end_frame), self._size)
        )


def _lead_in(previous: deque[bytes], frame: bytes) -> list[bytes]:
    """The frames before `frame` whose main data its reservoir reference reaches."""
    need = main_data_begin(frame)
    lead: list[bytes] = []
    for earlier in reversed(previous):
        if need <= 0:
            break
        lead.append(earlier)
        need -= len(earlier) - parse_header(earlier).main_data_offset
    return lead[::-1]


def cut_mp3(
    path: str | Path,
    cuts: Sequence[float],
    out_dir: str | Path,
    *,
    max_bytes: int,
    stem: str = "piece",
) -> list[Mp3Piece]:
    """Write the recording as pieces that start at the frames nearest to `cuts` (seconds of
    the decoded recording, increasing). A piece that would outgrow `max_bytes` (a VBR stretch
    denser than planned) is cut early at a frame boundary. ID3 tags, the Xing/Info frame and
    trailing tags are left out. Raises Mp3FrameError if the file is not Layer III frames."""
    head = read_head(path)
    spf, rate, skip = head.header.samples, head.header.sample_rate, head.skip_samples
    targets = sorted({max(1, round((t * rate + skip) / spf)) for t in cuts})
    writer = _PieceWriter(Path(out_dir), stem, spf, rate, skip)
    previous: deque[bytes] = deque(maxlen=_LEAD_FRAMES_KEPT)
    index = 0
    with open(path, "rb") as f:
        for index, frame in enumerate(iter_frames(f, head.first_frame_offset)):
            due = bool(targets) and index >= targets[0]
            if index == 0 or due or writer.size + len(frame) > max_bytes:
                while targets and targets[0] <= index:
                    targets.pop(0)
                writer.open(index, _lead_in(previous, frame) if index else [])
            writer.write(frame)
            previous.append(frame)
        writer.close(index + 1)
    return writer.pieces
