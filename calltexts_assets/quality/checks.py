"""QA gates as pure computations over ledger rows; the Dagster asset checks wrap these.

Each check returns a `CheckOutcome`: `passed`, the measured `value` against `threshold`,
the `severity` to report a failure with, `details` for Dagster metadata (JSON-able) and
the ids of the calls that caused the failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from calltexts_assets.billing.cost import (
    MINUTE,
    PRICE_PER_MINUTE_USD,
    billed_seconds,
    decode_request_seconds,
)
from calltexts_assets.billing.tariffs import Tariffs
from calltexts_assets.quality.one_pass import (
    FloatSum,
    Smallest,
)
from calltexts_assets.registry.rows import DEFAULT_DECIMAL_MARK
from calltexts_assets.registry.schema import (
    DEFAULT_SCHEMA_PATH,
    RegistrySource,
    registry_problems,
)
from calltexts_assets.state.ledger import CallRecord, Status

Severity = Literal["error", "warn"]

VARIANCE_THRESHOLD = 0.005  # 0.5 % of Bitrix24's total duration
COVERAGE_PASS = 0.99
COVERAGE_WARN = 0.98
COST_TOLERANCE = 1e-9
# Bitrix24 durations are whole seconds: a call may be up to ~1 s off without anything wrong.
_PER_CALL_SLACK_SEC = 1.0
DETAIL_ROWS = 10  # rows of examples in `details`; the ids are in offending_call_ids
# The checks run in one pass with memory that does not grow with the period, so at most this
# many offending ids are kept (metadata shows 50); `offending_count` keeps the exact number.
MAX_OFFENDING_IDS = 1000

# Calls whose audio could not be had at all: out of the coverage denominator.
NO_AUDIO_STATUSES = frozenset({Status.MISSING_AUDIO, Status.NO_RECORDING, Status.INVALID})


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    value: float
    threshold: float
    severity: Severity = "error"  # how a failure is reported
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    offending_call_ids: tuple[str, ...] = ()
    # Set only when `offending_call_ids` was cut at MAX_OFFENDING_IDS: the exact number.
    offending_count: int | None = None

    @property
    def offending_calls(self) -> int:
        """How many calls caused the failure, also when not all their ids are kept."""
        if self.offending_count is None:
            return len(self.offending_call_ids)
        return self.offending_count

    @property
    def state(self) -> str:
        """State for reports: ok, warn or fail."""
        if self.passed:
            return "ok"
        return "warn" if self.severity == "warn" else "fail"

    def metadata(self, max_ids: int = 50) -> dict[str, Any]:
        """Flat, JSON-able metadata for `AssetCheckResult(metadata=...)`."""
        return {
            "value": self.value,
            "threshold": self.threshold,
            "summary": self.summary,
            **self.details,
            "offending_calls": self.offending_calls,
            "offending_call_ids": list(self.offending_call_ids[:max_ids]),
        }


def has_audio(record: CallRecord) -> bool:
    """The call's recording exists (it may still have failed to download or transcribe)."""
    return record.status not in NO_AUDIO_STATUSES


def measured_seconds(record: CallRecord) -> float | None:
    """Duration of the audio we hold: measured from the file, else as the STT reported."""
    if record.audio_duration_sec is not None:
        return float(record.audio_duration_sec)
    if record.stt_duration_sec is not None:
        return float(record.stt_duration_sec)
    return None


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.2f} %"


def capped_ids(ids: Sequence[str], total: int) -> dict[str, Any]:
    """`offending_call_ids` and, when some were not kept, their exact number."""
    return {
        "offending_call_ids": tuple(ids),
        "offending_count": total if total > len(ids) else None,
    }


# -- duration variance -----------------------------------------------------------------------


class DurationTally:
    """Running sums of `duration_variance` (the report reads its value too)."""

    def __init__(self) -> None:
        self.calls = 0
        self._expected = FloatSum()
        self._measured = FloatSum()

    def add(self, record: CallRecord) -> tuple[float, float] | None:
        """(Bitrix24 s, measured s) of a call with a measured duration, else None."""
        measured = measured_seconds(record)
        if measured is None:
            return None
        expected = float(record.duration_sec)
        self.calls += 1
        self._expected.add(expected)
        self._measured.add(measured)
        return expected, measured

    @property
    def expected(self) -> float:
        return self._expected.value

    @property
    def measured(self) -> float:
        return self._measured.value

    @property
    def value(self) -> float:
        expected, measured = self.expected, self.measured
        # Audio where Bitrix24 says 0 s counts as fully off: finite, so metadata stays valid JSON.
        fallback = 0.0 if measured == 0 else 1.0
        return abs(measured - expected) / expected if expected > 0 else fallback


def duration_variance(
    records: Iterable[CallRecord], threshold: float = VARIANCE_THRESHOLD
) -> CheckOutcome:
    """|sum(measured) - sum(Bitrix24)| / sum(Bitrix24) over calls with a measured duration.

    Passes at or below `threshold` (0.5 %). Offenders are the calls that are themselves off
    by more than the threshold and more than 1 s (Bitrix24 rounds to whole seconds), the
    largest deviation first. One pass; keeps the MAX_OFFENDING_IDS largest deviations."""
    tally = DurationTally()
    # (deviation, call id, Bitrix24 s, measured s); ties stay in row order (stable sort).
    off: Smallest[tuple[float, str, float, float]] = Smallest(
        max(MAX_OFFENDING_IDS, DETAIL_ROWS), key=lambda item: -item[0]
    )
    for r in records:
        pair = tally.add(r)
        if pair is None:
            continue
        b, m = pair
        if abs(m - b) > max(_PER_CALL_SLACK_SEC, threshold * b):
            off.add((abs(m - b), r.call_id, b, m))
    expected, measured, value = tally.expected, tally.measured, tally.value
    largest = off.items()
    passed = value <= threshold
    return CheckOutcome(
        name="duration_variance",
        passed=passed,
        value=value,
        threshold=threshold,
        summary=(
            f"audio {measured:.1f} s vs Bitrix24 {expected:.0f} s over {tally.calls} calls: "
            f"{_pct(value)} (limit {_pct(threshold)})"
        ),
        details={
            "calls_measured": tally.calls,
            "bitrix24_seconds": expected,
            "measured_seconds": round(measured, 3),
            "difference_seconds": round(measured - expected, 3),
            "largest_deviations": [
                {"call_id": call_id, "bitrix24_sec": b, "measured_sec": m}
                for _, call_id, b, m in largest[:DETAIL_ROWS]
            ],
        },
        **(
            capped_ids((), 0)
            if passed
            else capped_ids([i[1] for i in largest[:MAX_OFFENDING_IDS]], off.total)
        ),
    )


# -- what the STT says it heard -------------------------------------------------------------

STT_DURATION_MISMATCH = "stt_duration_mismatch"  # transcripts.dialogue.DURATION_MISMATCH


def stt_durations(records: Iterable[CallRecord]) -> CheckOutcome:
    """No call whose STT answer reported a length (`duration`, `usage.seconds`) other than the
    audio it was sent: such a call is billed on what was sent, and fails the period until
    someone has looked (the server may be transcribing something else, or misbilling)."""
    checked = flagged = 0
    examples: list[dict[str, Any]] = []
    ids: list[str] = []
    for r in records:
        if r.status != Status.TRANSCRIBED:
            continue
        checked += 1
        if r.error_code != STT_DURATION_MISMATCH:
            continue
        flagged += 1
        if len(examples) < DETAIL_ROWS:
            examples.append({"call_id": r.call_id, "message": r.error_message or ""})
        if len(ids) < MAX_OFFENDING_IDS:
            ids.append(r.call_id)
    return CheckOutcome(
        name="stt_durations",
        passed=not flagged,
        value=float(flagged),
        threshold=0.0,
        summary=f"{flagged} of {checked} transcribed calls with an STT duration other than "
        "the audio sent",
        details={"checked_calls": checked, "mismatches": examples},
        **capped_ids(ids, flagged),
    )


# -- coverage --------------------------------------------------------------------------------


class CoverageTally:
    """Running counts of `coverage` (the report reads its value too)."""

    def __init__(self) -> None:
        self.calls = 0
        self.with_audio = 0
        self.transcribed = 0

    def add(self, record: CallRecord) -> bool:
        """Count the call; True when it had audio and has no transcript (an offender)."""
        self.calls += 1
        if not has_audio(record):
            return False
        self.with_audio += 1
        if record.status == Status.TRANSCRIBED:
            self.transcribed += 1
            return False
        return True

    @property
    def value(self) -> float:
        return self.transcribed / self.with_audio if self.with_audio else 1.0


def nothing_to_cover(calls: int) -> str:
    if not calls:
        return (
            "no calls were listed for the period: check the webhook's scope (telephony), "
            "the period and the portal's time zone (CALLTEXTS_TIMEZONE)"
        )
    return (
        f"{calls} calls were listed but none has a recording: check that call recording "
        "is on in Bitrix24 (telephony settings) and the webhook's disk scope"
    )


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
    No call with audio at all counts as full coverage. One pass; keeps the first
    MAX_OFFENDING_IDS offending ids in row order."""
    tally = CoverageTally()
    by_status: Counter[str] = Counter()
    missing: list[str] = []
    for r in records:
        if tally.add(r):
            by_status[r.status] += 1
            if len(missing) < MAX_OFFENDING_IDS:
                missing.append(r.call_id)
    done, value = tally.transcribed, tally.value
    if not tally.with_audio:
        # Nothing to cover is not full coverage: a wrong scope, period or time zone, or
        # recording switched off, looks exactly like this.
        return CheckOutcome(
            name="coverage",
            passed=False,
            value=0.0,
            threshold=required,
            severity="warn",
            summary=nothing_to_cover(tally.calls),
            details={"calls": tally.calls, "calls_with_audio": 0, "transcribed": 0},
        )
    passed = value >= required
    severity: Severity = "warn" if warn_from <= value < required else "error"
    return CheckOutcome(
        name="coverage",
        passed=passed,
        value=value,
        threshold=required,
        severity=severity,
        summary=f"{done} of {tally.with_audio} calls with audio transcribed: {_pct(value)} "
        f"(required {_pct(required)}, warning from {_pct(warn_from)})",
        details={
            "calls_with_audio": tally.with_audio,
            "transcribed": done,
            "warn_threshold": warn_from,
            "not_transcribed_by_status": dict(sorted(by_status.items())),
        },
        **capped_ids(missing, tally.with_audio - done),
    )


# -- cost ------------------------------------------------------------------------------------


def cost_matches(
    records: Iterable[CallRecord],
    price_per_minute: float | Decimal = PRICE_PER_MINUTE_USD,
    tolerance: float = COST_TOLERANCE,
    unit: str = MINUTE,
    tariffs: Tariffs | None = None,
) -> CheckOutcome:
    """Every transcribed call's cost == the bill: the billed seconds of its requests x the
    tariff / 60 (within `tolerance`), each model's requests at that model's tariff and unit
    (`tariffs`, by the models the row names: billing/tariffs.py; without it, every model at
    `price_per_minute` per `unit`).

    Billed seconds are what the service bills (`cost.record_billed_seconds`): each STT
    request of the call rounded up to the billing unit (a second, or a minute), on the
    seconds the ledger recorded for it; for rows from before requests were recorded, the STT
    duration (else the measured audio).
    A transcribed call without a cost fails; so does one whose model has no tariff known (its
    cost cannot be checked: the summary names the model). Costs on failed calls (partial
    billing) cannot be derived from a duration and are only counted. One pass; keeps the
    first MAX_OFFENDING_IDS offending ids in row order."""
    prices = tariffs or Tariffs.flat(price_per_minute, unit)
    checked = unchecked = wrong_total = 0
    wrong: list[dict[str, Any]] = []  # the first DETAIL_ROWS, for details
    wrong_ids: list[str] = []
    unpriced: Counter[str] = Counter()
    for r in records:
        if r.status != Status.TRANSCRIBED:
            unchecked += r.cost is not None
            continue
        checked += 1
        models = prices.unpriced(r)
        unpriced.update(models)
        expected = None if models else float(prices.cost(r))
        if expected is None or r.cost is None or abs(r.cost - expected) > tolerance:
            wrong_total += 1
            if len(wrong) < DETAIL_ROWS:
                wrong.append(
                    {
                        "call_id": r.call_id,
                        "cost": r.cost,
                        "expected": expected,
                        "billed_sec": decode_request_seconds(r.stt_request_sec)
                        or billed_seconds(r),
                        **(
                            {
                                "fallback_billed_sec": decode_request_seconds(
                                    r.fallback_request_sec
                                ),
                                "models": [r.model, r.fallback_model],
                            }
                            if r.fallback_model or models
                            else {}
                        ),
                    }
                )
            if len(wrong_ids) < MAX_OFFENDING_IDS:
                wrong_ids.append(r.call_id)
    primary = prices.primary
    without = (
        f"; no tariff known for {', '.join(sorted(unpriced))}: set it "
        "(STT_PRICE_PER_MINUTE_USD / WHISPER_FALLBACK_PRICE_PER_MINUTE_USD) with that model"
        if unpriced
        else ""
    )
    return CheckOutcome(
        name="cost_matches",
        passed=not wrong_total,
        value=float(wrong_total),
        threshold=0.0,
        summary=f"{wrong_total} of {checked} transcribed calls with a cost other than "
        f"the bill (per {primary.unit}, {primary.price_per_minute} USD a minute){without}",
        details={
            "checked_calls": checked,
            "price_per_minute_usd": float(primary.price_per_minute),
            "billing_unit": primary.unit,
            **(
                {
                    "fallback_model": prices.fallback_model,
                    "fallback_price_per_minute_usd": float(prices.fallback.price_per_minute),
                    "fallback_billing_unit": prices.fallback.unit,
                }
                if prices.fallback is not None
                else {}
            ),
            **({"unpriced_models": dict(sorted(unpriced.items()))} if unpriced else {}),
            "mismatches": wrong,
            "unchecked_costs_on_failed_calls": unchecked,
        },
        **capped_ids(wrong_ids, wrong_total),
    )


# -- registry completeness -------------------------------------------------------------------


def registry_complete(
    source: RegistrySource,
    schema_path: Path | str = DEFAULT_SCHEMA_PATH,
    *,
    decimal_mark: str = DEFAULT_DECIMAL_MARK,
) -> CheckOutcome:
    """The registry CSV (bytes, a path or a seekable binary stream) against its data
    dictionary: header, required fields, value types. The file is read a line at a time and
    only the first problems are kept (with every offending call id), so a large or badly
    broken file does not fill memory."""
    count = 0
    listed: list[str] = []
    offending: set[str] = set()
    for problem in registry_problems(source, schema_path, decimal_mark=decimal_mark):
        count += 1
        if len(listed) < DETAIL_ROWS * 2:
            listed.append(str(problem))
        if problem.call_id:
            offending.add(problem.call_id)
    return CheckOutcome(
        name="registry_complete",
        passed=not count,
        value=float(count),
        threshold=0.0,
        summary=f"{count} problems in the registry CSV",
        details={"problems": listed},
        offending_call_ids=tuple(sorted(offending)),
    )
