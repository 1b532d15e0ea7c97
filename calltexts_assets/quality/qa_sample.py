"""The QA sample: 50 transcribed calls picked reproducibly per period, and its check."""

from __future__ import annotations

import hashlib
import heapq
import io
from collections.abc import Iterable, Sequence

import polars as pl

from calltexts_assets.quality.checks import CheckOutcome
from calltexts_assets.quality.one_pass import FingerprintTable, fingerprint
from calltexts_assets.registry.rows import SEPARATOR, chronological
from calltexts_assets.state.ledger import NEEDS_REVIEW, CallRecord, Status

QA_SAMPLE_SIZE = 50


def _flagged(record: CallRecord) -> bool:
    return record.status == Status.TRANSCRIBED and record.verdict == NEEDS_REVIEW


def _rank(period_label: str, record: CallRecord) -> str:
    seed = "\x1f".join((period_label, record.run_id, record.call_id, record.record_id))
    return hashlib.sha256(seed.encode()).hexdigest()


def qa_sample(
    records: Iterable[CallRecord], period_label: str, n: int = QA_SAMPLE_SIZE
) -> list[CallRecord]:
    """Up to `n` transcribed calls for a human to check, in chronological order: every call
    still doubtful after the STT (`needs_review`), then as many others as make `n`.

    Each call is ranked by a hash of (period label, its key) and the n lowest are taken:
    the same period gives the same sample whatever the input order, and a call added or
    removed changes the sample by at most that call. One pass, holding n rows (a row
    repeated with the same key counts once, as its last version)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # A max-heap of the n lowest (rank, first position) seen so far, as negated ints: the
    # rank is a fixed-width hex digest, so its int orders as the string did.
    heap: list[tuple[int, int, tuple[str, str, str]]] = []
    picked: dict[tuple[str, str, str], CallRecord] = {}
    flagged: dict[tuple[str, str, str], CallRecord] = {}
    for position, r in enumerate(records):
        if r.status != Status.TRANSCRIBED:
            flagged.pop(r.key, None)  # its last version is not a transcribed one
            continue
        if _flagged(r):
            flagged[r.key] = r
            continue
        # a later version (a re-run) cleared the doubt: ranked as any other call
        flagged.pop(r.key, None)
        if r.key in picked:
            picked[r.key] = r  # the last row of a key wins, as in a dict built from all
            continue
        entry = (-int(_rank(period_label, r), 16), -position, r.key)
        if len(heap) < n:
            heapq.heappush(heap, entry)
        elif heap and entry > heap[0]:  # lower rank (or as low and earlier) than the worst
            del picked[heapq.heapreplace(heap, entry)[2]]
        else:
            continue  # never picked: a later row of this key ranks the same, later
        picked[r.key] = r
    # the heap holds the n lowest ranks of the others; the flagged ones take their places
    room = max(0, n - len(flagged))
    others = [entry[2] for entry in sorted(heap, reverse=True) if entry[2] not in flagged]
    chosen = [picked[key] for key in others[:room] if not _flagged(picked[key])]
    return sorted([*flagged.values(), *chosen], key=chronological)


QA_SAMPLE_COLUMNS = (
    "call_id",
    "record_id",
    "datetime_start",
    "direction",
    "duration_sec",
    "language",
    "transcript_path",
    "audio_path",
    "doubts",  # why the STT's answer was doubtful (the registry's `doubts`); empty: sampled
    "qa_verdict",  # left empty for the reviewer
    "qa_comment",
)


def qa_sample_csv(sample: Sequence[CallRecord]) -> bytes:
    """The sample as a `;`-separated UTF-8 CSV with BOM, like the registry."""
    rows = [
        (
            r.call_id,
            r.record_id or None,
            r.started_at,
            r.direction,
            str(r.duration_sec),
            r.language,
            r.transcript_path,
            r.audio_path,
            r.doubts,
            None,  # None: a truly empty cell, not a quoted ""
            None,
        )
        for r in sample
    ]
    frame = pl.DataFrame(rows, schema=dict.fromkeys(QA_SAMPLE_COLUMNS, pl.String), orient="row")
    buffer = io.BytesIO()
    frame.write_csv(buffer, separator=SEPARATOR, include_bom=True)
    return buffer.getvalue()


def qa_sample_outcome(
    sample: Sequence[CallRecord], records: Iterable[CallRecord], n: int = QA_SAMPLE_SIZE
) -> CheckOutcome:
    """The sample has min(n, transcribed calls) distinct transcribed calls, or more when
    more than n are `needs_review`, and every `needs_review` call among them.

    One pass over `records`: distinct transcribed keys are counted through their 64-bit
    fingerprints (8 bytes a slot; a false match among 100,000 calls: ~3e-10)."""
    keys = [r.key for r in sample]
    wanted_keys = set(keys)
    eligible = FingerprintTable(values=False)
    # each key's last version: 1 flagged, 0 not (a re-run may clear a doubt, or raise one)
    last_flag = FingerprintTable()
    flagged = 0
    found: set[tuple[str, str, str]] = set()  # keys of the sample among the transcribed rows
    for r in records:
        if r.status == Status.TRANSCRIBED:
            fp = fingerprint(*r.key)
            eligible.put(fp)
            flag = int(_flagged(r))
            flagged += flag - (last_flag.get(fp) or 0)
            last_flag.put(fp, flag)
            if r.key in wanted_keys:
                found.add(r.key)
    flagged_in = sum(1 for r in sample if _flagged(r))
    wanted = max(min(n, len(eligible)), flagged)
    stray = [k for k in keys if k not in found]
    passed = len(set(keys)) == len(keys) == wanted and not stray and flagged_in == flagged
    return CheckOutcome(
        name="qa_sample",
        passed=passed,
        value=float(len(keys)),
        threshold=float(wanted),
        summary=f"QA sample of {len(keys)} calls (wanted {wanted} of {len(eligible)} transcribed)",
        details={"sample_call_ids": [r.call_id for r in sample]},
        offending_call_ids=tuple(call_id for _, call_id, _ in stray),
    )
