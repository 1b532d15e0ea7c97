"""STT_SEND=speech: only the stretches of a call that hold speech go to the STT.

The voice activity detector (`audio/speech.py`) finds each channel's speech; pauses shorter
than `GAP_SEC` stay in (a pause inside a turn, or between the two sides, is part of the
dialogue), longer non-speech (ring-back, hold music, a silence while the operator looks
something up, line noise) is left out. Each stretch keeps `PAD_SEC` around its speech so no
word's soft edge is clipped. The stretches are joined into FLAC files of one channel or the
channels mixed down, each under the model's limits, and every join is kept
(`Piece.joins`), so that each word the STT returns is put back at its second of the call;
roles still come from the original channels' loudness at that second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile

from calltexts_assets.audio import decode as audio
from calltexts_assets.audio.chunks import FLAC_BYTES_PER_SEC, SNAP_SECONDS, Limits, Piece
from calltexts_assets.audio.speech import CallSpeech, merge_spans

SPEECH, ALL = "speech", "all"  # STT_SEND
SEND_MODES = (SPEECH, ALL)
# Non-speech longer than this is left out (the "about 2 s"): a shorter pause costs
# less to send than a join risks (a word cut at a join, a turn's context split).
GAP_SEC = 2.0
# Kept before and after each stretch of speech: the detector's frames are 32 ms and its
# hysteresis ends a span on a falling score, so a soft final consonant may lie past it.
PAD_SEC = 0.3
# A call whose non-speech left out would save less than this is sent whole (as it is, no
# re-encode), the way STT_SEND=all sends it.
MIN_SAVED_SEC = 1.0


def stretches(
    speech: CallSpeech, channel: int | None, *, gap_sec: float = GAP_SEC
) -> list[tuple[float, float]]:
    """The recording's stretches worth sending: one channel's speech, or any channel's,
    joined across pauses up to `gap_sec` (the spans are padded already: `call_speech`)."""
    spans = (
        speech.channels[channel]
        if channel is not None
        else [span for side in speech.channels for span in side]
    )
    return merge_spans(spans, gap_sec)


def worth_cutting(kept: Sequence[tuple[float, float]], duration_sec: float) -> bool:
    return duration_sec - sum(b - a for a, b in kept) >= MIN_SAVED_SEC


def pack(
    kept: Sequence[tuple[float, float]],
    limits: Limits,
    pause_near: Callable[[float, float], float] | None = None,
) -> list[list[tuple[float, float]]]:
    """Stretches grouped into files under the limits (16 kHz FLAC's bytes at most), in
    order; a stretch longer than one file may carry is cut into parts, each cut moved back
    into a pause by `pause_near(cut, window_sec)` (`Envelope.pause_near`): a stretch holds
    pauses of up to GAP_SEC, and a cut inside a word loses it on both sides."""
    # 2 %: FLAC's frame overhead; FLAC of speech is about half of FLAC_BYTES_PER_SEC.
    limit = min(limits.max_seconds, 0.98 * limits.max_bytes / FLAC_BYTES_PER_SEC)
    # parts planned this much shorter, so a cut moved back keeps the next part under it
    slack = SNAP_SECONDS if pause_near is not None and limit > 2 * SNAP_SECONDS else 0.0
    groups: list[list[tuple[float, float]]] = []
    total = math.inf
    for a, b in kept:
        count = 1 if b - a <= limit else math.ceil((b - a) / (limit - slack))
        cuts = [a + (b - a) * i / count for i in range(1, count)]
        if pause_near is not None and slack:
            cuts = [pause_near(cut, slack) for cut in cuts]
        for part in zip([a, *cuts], [*cuts, b], strict=True):
            length = part[1] - part[0]
            if total + length > limit:
                groups.append([])
                total = 0.0
            groups[-1].append(part)
            total += length
    return groups


def joined_pieces(
    path: Path,
    info: audio.AudioInfo,
    groups: Sequence[Sequence[tuple[float, float]]],
    out_dir: Path,
    *,
    channel: int | None,
    stem: str,
) -> list[Piece]:
    """Each group's stretches joined into one mono FLAC file, in one decoding pass of the
    recording (a block at a time: a call of hours is never held whole)."""
    pcm = audio.iter_pcm(path, info)
    rate = pcm.rate
    # (group, first sample, end sample) in the order the decode meets them
    wanted = [
        (g, round(a * rate), round(b * rate)) for g, group in enumerate(groups) for a, b in group
    ]
    files = [out_dir / f"{stem}_{g + 1:03d}.flac" for g in range(len(groups))]
    writer: soundfile.SoundFile | None = None
    current, position, k = -1, 0, 0
    try:
        for block in pcm.blocks:
            mono = block[:, channel] if channel is not None else block.mean(axis=1)
            block_end = position + len(mono)
            j = k
            while j < len(wanted) and wanted[j][1] < block_end:
                g, first, end = wanted[j]
                lo, hi = max(first, position), min(end, block_end)
                if hi > lo:
                    if g != current:  # groups follow each other: the last one is done
                        if writer is not None:
                            writer.close()
                        writer = soundfile.SoundFile(
                            str(files[g]), "w", rate, 1, subtype="PCM_16", format="FLAC"
                        )
                        current = g
                    assert writer is not None
                    writer.write(np.clip(mono[lo - position : hi - position], -1.0, 1.0))
                j += 1
            while k < len(wanted) and wanted[k][2] <= block_end:
                k += 1
            position = block_end
    finally:
        if writer is not None:
            writer.close()
    pieces: list[Piece] = []
    for g in range(len(groups)):
        at, kept = 0.0, []
        for group, first, end in wanted:
            end = min(end, position)  # the decode may end before the headers said
            if group == g and end > first:
                kept.append((at, first / rate, end / rate))
                at += (end - first) / rate
        if not kept or not files[g].exists():
            continue
        pieces.append(
            Piece(
                files[g], 0.0, 0.0, at, False, channel,
                part=len(pieces) + 1, parts=len(groups), joins=tuple(kept),
            )
        )  # fmt: skip
    return pieces
