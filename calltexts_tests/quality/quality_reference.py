"""The list-based quality checks as they were before they became one-pass (verbatim but for
the imports): the reference the one-pass versions must match output for output."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from calltexts_assets.billing.cost import PRICE_PER_MINUTE_USD, billed_seconds, call_cost_usd
from calltexts_assets.quality.checks import (
    _PER_CALL_SLACK_SEC,
    COST_TOLERANCE,
    COVERAGE_PASS,
    COVERAGE_WARN,
    DETAIL_ROWS,
    VARIANCE_THRESHOLD,
    CheckOutcome,
    Severity,
    _pct,
    has_audio,
    measured_seconds,
)
from calltexts_assets.quality.duplicates import _transcript_call_id
from calltexts_assets.quality.qa_sample import QA_SAMPLE_SIZE
from calltexts_assets.registry.rows import chronological
from calltexts_assets.state.ledger import CallRecord, Status


def duration_variance(
    records: Iterable[CallRecord], threshold: float = VARIANCE_THRESHOLD
) -> CheckOutcome:
    """|sum(measured) - sum(Bitrix24)| / sum(Bitrix24) over calls with a measured duration.

    Passes at or below `threshold` (0.5 %). Offenders are the calls that are themselves off
    by more than the threshold and more than 1 s (Bitrix24 rounds to whole seconds)."""
    pairs = [
        (r, float(r.duration_sec), m) for r in records if (m := measured_seconds(r)) is not None
    ]
    expected = sum(b for _, b, _ in pairs)
    measured = sum(m for _, _, m in pairs)
    # Audio where Bitrix24 says 0 s counts as fully off: finite, so metadata stays valid JSON.
    fallback = 0.0 if measured == 0 else 1.0
    value = abs(measured - expected) / expected if expected > 0 else fallback
    off = sorted(
        ((r, b, m) for r, b, m in pairs if abs(m - b) > max(_PER_CALL_SLACK_SEC, threshold * b)),
        key=lambda item: -abs(item[2] - item[1]),
    )
    passed = value <= threshold
    return CheckOutcome(
        name="duration_variance",
        passed=passed,
        value=value,
        threshold=threshold,
        summary=(
            f"audio {measured:.1f} s vs Bitrix24 {expected:.0f} s over {len(pairs)} calls: "
            f"{_pct(value)} (limit {_pct(threshold)})"
        ),
        details={
            "calls_measured": len(pairs),
            "bitrix24_seconds": expected,
            "measured_seconds": round(measured, 3),
            "difference_seconds": round(measured - expected, 3),
            "largest_deviations": [
                {"call_id": r.call_id, "bitrix24_sec": b, "measured_sec": m}
                for r, b, m in off[:DETAIL_ROWS]
            ],
        },
        offending_call_ids=() if passed else tuple(r.call_id for r, _, _ in off),
    )


# -- coverage --------------------------------------------------------------------------------


def coverage(
    records: Iterable[CallRecord],
    *,
    required: float = COVERAGE_PASS,
    warn_from: float = COVERAGE_WARN,
) -> CheckOutcome:
    """Share of calls with available audio that have a transcript.

    The denominator is every call whose recording exists: status not missing_audio,
    no_recording or invalid (download and transcription errors count against coverage:
    the audio was there, we failed). Spec: ">= 99 % (error severity), >= 98 % warn", read as
    - value >= 99 %        -> passed
    - 98 % <= value < 99 % -> failed, severity warn (does not block)
    - value < 98 %         -> failed, severity error
    No call with audio at all counts as full coverage."""
    with_audio = [r for r in records if has_audio(r)]
    missing = [r for r in with_audio if r.status != Status.TRANSCRIBED]
    done = len(with_audio) - len(missing)
    value = done / len(with_audio) if with_audio else 1.0
    passed = value >= required
    severity: Severity = "warn" if warn_from <= value < required else "error"
    by_status: dict[str, int] = defaultdict(int)
    for r in missing:
        by_status[r.status] += 1
    return CheckOutcome(
        name="coverage",
        passed=passed,
        value=value,
        threshold=required,
        severity=severity,
        summary=f"{done} of {len(with_audio)} calls with audio transcribed: {_pct(value)} "
        f"(required {_pct(required)}, warning from {_pct(warn_from)})",
        details={
            "calls_with_audio": len(with_audio),
            "transcribed": done,
            "warn_threshold": warn_from,
            "not_transcribed_by_status": dict(sorted(by_status.items())),
        },
        offending_call_ids=tuple(r.call_id for r in missing),
    )


def duplicate_transcripts(
    records: Iterable[CallRecord], listed_transcript_keys: Iterable[str] = ()
) -> CheckOutcome:
    """Zero tolerance for three kinds of duplicates among the period's calls:
    - the same call id on two ledger rows that both have a transcript;
    - two transcript files in storage for one call (`listed_transcript_keys`: the keys
      under the transcripts/ folders the period touches; other keys are ignored);
    - one transcript path recorded for two different calls."""
    rows = list(records)
    with_text = [r for r in rows if r.transcript_path or r.status == Status.TRANSCRIBED]

    by_call: dict[str, list[CallRecord]] = defaultdict(list)
    for r in with_text:
        by_call[r.call_id].append(r)
    same_call = {cid: len(rs) for cid, rs in by_call.items() if len(rs) > 1}

    known = {r.call_id for r in rows}
    files: dict[str, set[str]] = defaultdict(set)
    for key in listed_transcript_keys:
        call_id = _transcript_call_id(key)
        if call_id in known:
            files[call_id].add(key)
    two_files = {cid: sorted(keys) for cid, keys in files.items() if len(keys) > 1}

    by_path: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for r in with_text:
        if r.transcript_path:
            by_path[r.transcript_path].add((r.call_id, r.record_id))
    shared = {p: sorted(c for c, _ in calls) for p, calls in by_path.items() if len(calls) > 1}

    offending = sorted({*same_call, *two_files, *(cid for ids in shared.values() for cid in ids)})
    return CheckOutcome(
        name="duplicate_transcripts",
        passed=not offending,
        value=float(len(offending)),
        threshold=0.0,
        summary=f"{len(same_call)} calls transcribed twice, {len(two_files)} calls with "
        f"several transcript files, {len(shared)} transcript paths shared by several calls",
        details={
            "same_call_total": len(same_call),
            "two_files_total": len(two_files),
            "shared_paths_total": len(shared),
            "same_call_twice": dict(sorted(same_call.items())[:DETAIL_ROWS]),
            "several_files_for_one_call": dict(sorted(two_files.items())[:DETAIL_ROWS]),
            "one_path_for_several_calls": dict(sorted(shared.items())[:DETAIL_ROWS]),
        },
        offending_call_ids=tuple(offending),
    )


# -- cost ------------------------------------------------------------------------------------


def cost_matches(
    records: Iterable[CallRecord],
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
    tolerance: float = COST_TOLERANCE,
) -> CheckOutcome:
    """Every transcribed call's cost == ceil(billed minutes) x tariff (within `tolerance`).

    Billed minutes come from `cost.billed_seconds` (STT duration, else measured audio).
    A transcribed call without a cost fails. Costs on failed calls (partial billing)
    cannot be derived from a duration and are only counted."""
    rows = list(records)
    checked = [r for r in rows if r.status == Status.TRANSCRIBED]
    wrong: list[dict[str, Any]] = []
    for r in checked:
        expected = float(call_cost_usd(billed_seconds(r), price_per_minute))
        if r.cost is None or abs(r.cost - expected) > tolerance:
            wrong.append(
                {
                    "call_id": r.call_id,
                    "cost": r.cost,
                    "expected": expected,
                    "billed_sec": billed_seconds(r),
                }
            )
    unchecked = sum(1 for r in rows if r.status != Status.TRANSCRIBED and r.cost is not None)
    return CheckOutcome(
        name="cost_matches",
        passed=not wrong,
        value=float(len(wrong)),
        threshold=0.0,
        summary=f"{len(wrong)} of {len(checked)} transcribed calls with a cost other than "
        f"the bill (per minute, {price_per_minute} USD a minute)",
        details={
            "checked_calls": len(checked),
            "price_per_minute_usd": float(price_per_minute),
            "billing_unit": "minute",
            "mismatches": wrong[:DETAIL_ROWS],
            "unchecked_costs_on_failed_calls": unchecked,
        },
        offending_call_ids=tuple(w["call_id"] for w in wrong),
    )


def _rank(period_label: str, record: CallRecord) -> str:
    seed = "\x1f".join((period_label, record.run_id, record.call_id, record.record_id))
    return hashlib.sha256(seed.encode()).hexdigest()


def qa_sample(
    records: Iterable[CallRecord], period_label: str, n: int = QA_SAMPLE_SIZE
) -> list[CallRecord]:
    """Up to `n` transcribed calls for a human to check, in chronological order.

    Each call is ranked by a hash of (period label, its key) and the n lowest are taken:
    the same period gives the same sample whatever the input order, and a call added or
    removed changes the sample by at most that call."""
    eligible = {r.key: r for r in records if r.status == Status.TRANSCRIBED}
    picked = sorted(eligible.values(), key=lambda r: _rank(period_label, r))[:n]
    return sorted(picked, key=chronological)


def qa_sample_outcome(
    sample: Sequence[CallRecord], records: Iterable[CallRecord], n: int = QA_SAMPLE_SIZE
) -> CheckOutcome:
    """The sample has min(n, transcribed calls) distinct transcribed calls."""
    eligible = {r.key for r in records if r.status == Status.TRANSCRIBED}
    keys = [r.key for r in sample]
    wanted = min(n, len(eligible))
    stray = [k for k in keys if k not in eligible]
    passed = len(set(keys)) == len(keys) == wanted and not stray
    return CheckOutcome(
        name="qa_sample",
        passed=passed,
        value=float(len(keys)),
        threshold=float(wanted),
        summary=f"QA sample of {len(keys)} calls (wanted {wanted} of {len(eligible)} transcribed)",
        details={"sample_call_ids": [r.call_id for r in sample]},
        offending_call_ids=tuple(call_id for _, call_id, _ in stray),
    )
