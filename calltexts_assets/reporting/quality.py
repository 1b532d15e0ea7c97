"""QA gates as pure computations over ledger rows; the Dagster asset checks wrap these.

Each check returns a `CheckOutcome`: `passed`, the measured `value` against `threshold`,
the `severity` to report a failure with, `details` for Dagster metadata (JSON-able) and
the ids of the calls that caused the failure.
"""

from __future__ import annotations

import hashlib
import heapq
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import polars as pl

from calltexts_assets.core.ledger import CallRecord, Status
from calltexts_assets.reporting.cost import PRICE_PER_MINUTE_USD, billed_seconds, call_cost_usd
from calltexts_assets.reporting.one_pass import (
    FingerprintTable,
    FloatSum,
    Smallest,
    SmallestKeys,
    fingerprint,
)
from calltexts_assets.reporting.registry import (
    DEFAULT_SCHEMA_PATH,
    SEPARATOR,
    RegistrySource,
    chronological,
    registry_problems,
)

Severity = Literal["error", "warn"]

VARIANCE_THRESHOLD = 0.005  # 0.5 % of Bitrix24's total duration
COVERAGE_PASS = 0.99
COVERAGE_WARN = 0.98
COST_TOLERANCE = 1e-9
QA_SAMPLE_SIZE = 50
# Bitrix24 durations are whole seconds: a call may be up to ~1 s off without anything wrong.
_PER_CALL_SLACK_SEC = 1.0
_DETAIL_ROWS = 10  # rows of examples in `details`; the ids are in offending_call_ids
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


def _cut(ids: Sequence[str], total: int) -> dict[str, Any]:
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
        max(MAX_OFFENDING_IDS, _DETAIL_ROWS), key=lambda item: -item[0]
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
                for _, call_id, b, m in largest[:_DETAIL_ROWS]
            ],
        },
        **(_cut((), 0) if passed else _cut([i[1] for i in largest[:MAX_OFFENDING_IDS]], off.total)),
    )


# -- coverage --------------------------------------------------------------------------------


class CoverageTally:
    """Running counts of `coverage` (the report reads its value too)."""

    def __init__(self) -> None:
        self.with_audio = 0
        self.transcribed = 0

    def add(self, record: CallRecord) -> bool:
        """Count the call; True when it had audio and has no transcript (an offender)."""
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
        **_cut(missing, tally.with_audio - done),
    )


# -- duplicates ------------------------------------------------------------------------------


def _transcript_call_id(key: str) -> str | None:
    path = PurePosixPath(key)
    if path.parent.name != "transcripts" or not path.name.startswith("call_"):
        return None
    if path.suffix != ".txt":
        return None
    return path.name[len("call_") : -len(".txt")]


def _folder_of(path: str, call_id: str) -> str | None:
    """The folder, with its "/", of a path "<folder>/call_<call_id>.txt" (the form this
    pipeline writes: such a path is its folder and the call id), else None."""
    folder, slash, name = path.rpartition("/")
    return folder + slash if name == f"call_{call_id}.txt" else None


# Per call id, one 64-bit word in a FingerprintTable (a call without a word is not one of
# the period's calls): flags, the folders of its first transcript path and first stored
# file (indices into the folder names, which are few: one per month), and a 32-bit
# fingerprint of the record id of the row with that transcript path.
_TEXT, _TEXT_TWICE, _PATH, _FILE, _FILE_TWICE, _OFFENDER = 1, 2, 4, 8, 16, 32
_PATH_SHIFT, _FILE_SHIFT, _RECORD_SHIFT = 8, 20, 32
_FOLDER_MASK = 0xFFF
_MAX_FOLDERS = _FOLDER_MASK + 1  # more (never seen) fall back to keeping the strings
_RECORD_MASK = 0xFFFF_FFFF


class _Duplicates:
    """`duplicate_transcripts` in one pass over the rows, then one over the listed keys.

    What grows with the period is one table word per call id (see above). Strings are kept
    only for rows and files that already break the pattern: a transcript path that is not
    "<folder>/call_<own id>.txt", a call with two transcript paths or records, a stored
    file not named so; and for the first few (sorted) offenders reported."""

    def __init__(self) -> None:
        self.calls = FingerprintTable()
        self.folders: dict[str, int] = {}
        self.folder_names: list[str] = []
        # kind 1: call id -> rows with a transcript, for the first ids in sorted order
        self.same_call: SmallestKeys[str, int] = SmallestKeys(_DETAIL_ROWS)
        self.same_call_total = 0
        # kind 2: call id -> its stored files, for the first ids in sorted order
        self.two_files: SmallestKeys[str, set[str]] = SmallestKeys(_DETAIL_ROWS)
        self.two_files_total = 0
        self.odd_files: dict[str, set[str]] = {}  # files not named "<folder>/call_<id>.txt"
        # kind 3: the rows whose transcript path the table cannot hold
        self.odd_paths: dict[str, set[tuple[str, int]]] = {}  # path -> (call id, record fp)
        self.more_paths: dict[str, set[tuple[int, int]]] = {}  # call id -> (folder, record fp)
        self.offenders: Smallest[str] = Smallest(MAX_OFFENDING_IDS, key=str)

    def _folder(self, path: str, call_id: str) -> int | None:
        folder = _folder_of(path, call_id)
        if folder is None:
            return None
        index = self.folders.get(folder)
        if index is None and len(self.folder_names) < _MAX_FOLDERS:
            index = self.folders[folder] = len(self.folder_names)
            self.folder_names.append(folder)
        return index

    def _offend(self, call_id: str, word: int) -> int:
        if not word & _OFFENDER:
            self.offenders.add(call_id)  # each call once: the union is counted exactly
        return word | _OFFENDER

    def add_record(self, r: CallRecord) -> None:
        fp = fingerprint(r.call_id)
        word = self.calls.get(fp) or 0
        if r.transcript_path or r.status == Status.TRANSCRIBED:
            if word & _TEXT_TWICE:
                count = self.same_call.get(r.call_id)
                if count is not None:
                    self.same_call.set(r.call_id, count + 1)
            elif word & _TEXT:
                word |= _TEXT_TWICE
                self.same_call_total += 1
                self.same_call.set(r.call_id, 2)
                word = self._offend(r.call_id, word)
            else:
                word |= _TEXT
            if r.transcript_path:
                word = self._add_path(r, word)
        self.calls.put(fp, word)

    def _add_path(self, r: CallRecord, word: int) -> int:
        record = fingerprint(r.record_id) & _RECORD_MASK
        folder = self._folder(r.transcript_path or "", r.call_id)
        if folder is None:
            self.odd_paths.setdefault(r.transcript_path or "", set()).add((r.call_id, record))
        elif not word & _PATH:
            word |= _PATH | folder << _PATH_SHIFT | record << _RECORD_SHIFT
        elif (folder, record) != _first_path(word):
            self.more_paths.setdefault(r.call_id, set()).add((folder, record))
        return word

    def add_file(self, key: str) -> None:
        call_id = _transcript_call_id(key)
        if call_id is None:
            return
        fp = fingerprint(call_id)
        word = self.calls.get(fp)
        if word is None:
            return  # not a call of this period
        if word & _FILE_TWICE:
            files = self.two_files.get(call_id)
            if files is not None:
                files.add(key)
            return
        known = set(self.odd_files.get(call_id, ()))
        if word & _FILE:
            name = f"call_{call_id}.txt"
            known.add(self.folder_names[word >> _FILE_SHIFT & _FOLDER_MASK] + name)
        if key in known:
            return  # listed twice
        folder = self._folder(key, call_id)
        if known:
            word |= _FILE_TWICE
            self.two_files_total += 1
            self.two_files.set(call_id, {*known, key})
            word = self._offend(call_id, word)
        elif folder is not None:
            word |= _FILE | folder << _FILE_SHIFT
        else:
            self.odd_files[call_id] = {key}
        self.calls.put(fp, word)

    def shared_paths(self) -> dict[str, list[str]]:
        """Transcript paths recorded for several (call id, record id): path -> call ids."""
        paths = {path: set(rows) for path, rows in self.odd_paths.items()}
        for call_id, more in self.more_paths.items():
            word = self.calls.get(fingerprint(call_id)) or 0
            for folder, record in {_first_path(word), *more}:
                path = self.folder_names[folder] + f"call_{call_id}.txt"
                paths.setdefault(path, set()).add((call_id, record))
        # An odd row may share its path with the usual row of the call the path names.
        for path, rows in paths.items():
            _, _, name = path.rpartition("/")
            if not (name.startswith("call_") and name.endswith(".txt") and len(name) >= 9):
                continue
            owner = name[len("call_") : -len(".txt")]
            if owner in self.more_paths:
                continue  # every path of that call is in already
            word = self.calls.get(fingerprint(owner)) or 0
            folder, record = _first_path(word)
            if word & _PATH and self.folder_names[folder] + name == path:
                rows.add((owner, record))
        return {
            path: sorted(call_id for call_id, _ in rows)
            for path, rows in paths.items()
            if len(rows) > 1
        }

    def mark(self, call_id: str) -> None:
        fp = fingerprint(call_id)
        word = self.calls.get(fp)
        if word is not None:
            self.calls.put(fp, self._offend(call_id, word))


def _first_path(word: int) -> tuple[int, int]:
    """(folder index, record fingerprint) of the first transcript path of a call."""
    return word >> _PATH_SHIFT & _FOLDER_MASK, word >> _RECORD_SHIFT & _RECORD_MASK


def duplicate_transcripts(
    records: Iterable[CallRecord], listed_transcript_keys: Iterable[str] = ()
) -> CheckOutcome:
    """Zero tolerance for three kinds of duplicates among the period's calls:
    - the same call id on two ledger rows that both have a transcript;
    - two transcript files in storage for one call (`listed_transcript_keys`: the keys
      under the transcripts/ folders the period touches; other keys are ignored);
    - one transcript path recorded for two different calls.

    One pass over `records`, then over the keys. Calls are told apart by 64-bit
    fingerprints of their ids (a false match among 100,000 calls: ~3e-10) and records of one
    call by 32-bit ones (compared only between two rows of one transcript path)."""
    found = _Duplicates()
    for r in records:
        found.add_record(r)
    for key in listed_transcript_keys:
        found.add_file(key)
    shared = found.shared_paths()
    for call_ids in shared.values():
        for call_id in call_ids:
            found.mark(call_id)
    offending = found.offenders.items()
    total = found.offenders.total
    return CheckOutcome(
        name="duplicate_transcripts",
        passed=not total,
        value=float(total),
        threshold=0.0,
        summary=f"{found.same_call_total} calls transcribed twice, {found.two_files_total} "
        f"calls with several transcript files, {len(shared)} transcript paths shared by "
        "several calls",
        details={
            "same_call_twice": dict(found.same_call.smallest()),
            "several_files_for_one_call": {
                call_id: sorted(keys) for call_id, keys in found.two_files.smallest()
            },
            "one_path_for_several_calls": dict(sorted(shared.items())[:_DETAIL_ROWS]),
        },
        **_cut(offending, total),
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
    cannot be derived from a duration and are only counted. One pass; keeps the first
    MAX_OFFENDING_IDS offending ids in row order."""
    checked = unchecked = wrong_total = 0
    wrong: list[dict[str, Any]] = []  # the first _DETAIL_ROWS, for details
    wrong_ids: list[str] = []
    for r in records:
        if r.status != Status.TRANSCRIBED:
            unchecked += r.cost is not None
            continue
        checked += 1
        expected = float(call_cost_usd(billed_seconds(r), price_per_minute))
        if r.cost is None or abs(r.cost - expected) > tolerance:
            wrong_total += 1
            if len(wrong) < _DETAIL_ROWS:
                wrong.append(
                    {
                        "call_id": r.call_id,
                        "cost": r.cost,
                        "expected": expected,
                        "billed_sec": billed_seconds(r),
                    }
                )
            if len(wrong_ids) < MAX_OFFENDING_IDS:
                wrong_ids.append(r.call_id)
    return CheckOutcome(
        name="cost_matches",
        passed=not wrong_total,
        value=float(wrong_total),
        threshold=0.0,
        summary=f"{wrong_total} of {checked} transcribed calls with a cost other than "
        f"ceil(minutes) x {price_per_minute} USD",
        details={
            "checked_calls": checked,
            "price_per_minute_usd": float(price_per_minute),
            "mismatches": wrong,
            "unchecked_costs_on_failed_calls": unchecked,
        },
        **_cut(wrong_ids, wrong_total),
    )


# -- registry completeness -------------------------------------------------------------------


def registry_complete(
    source: RegistrySource,
    schema_path: Path | str = DEFAULT_SCHEMA_PATH,
    *,
    summaries_enabled: bool | None = None,
) -> CheckOutcome:
    """The registry CSV (bytes, a path or a seekable binary stream) against its data
    dictionary: header, required fields, value types. The file is read a line at a time and
    only the first problems are kept (with every offending call id), so a large or badly
    broken file does not fill memory."""
    count = 0
    listed: list[str] = []
    offending: set[str] = set()
    for problem in registry_problems(source, schema_path, summaries_enabled=summaries_enabled):
        count += 1
        if len(listed) < _DETAIL_ROWS * 2:
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


# -- QA sample -------------------------------------------------------------------------------


def _rank(period_label: str, record: CallRecord) -> str:
    seed = "\x1f".join((period_label, record.run_id, record.call_id, record.record_id))
    return hashlib.sha256(seed.encode()).hexdigest()


def qa_sample(
    records: Iterable[CallRecord], period_label: str, n: int = QA_SAMPLE_SIZE
) -> list[CallRecord]:
    """Up to `n` transcribed calls for a human to check, in chronological order.

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
    for position, r in enumerate(records):
        if r.status != Status.TRANSCRIBED:
            continue
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
    return sorted(picked.values(), key=chronological)


QA_SAMPLE_COLUMNS = (
    "call_id",
    "record_id",
    "datetime_start",
    "direction",
    "duration_sec",
    "language",
    "transcript_path",
    "audio_path",
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
    """The sample has min(n, transcribed calls) distinct transcribed calls.

    One pass over `records`: distinct transcribed keys are counted through their 64-bit
    fingerprints (8 bytes a slot; a false match among 100,000 calls: ~3e-10)."""
    keys = [r.key for r in sample]
    wanted_keys = set(keys)
    eligible = FingerprintTable(values=False)
    found: set[tuple[str, str, str]] = set()  # keys of the sample among the transcribed rows
    for r in records:
        if r.status == Status.TRANSCRIBED:
            eligible.put(fingerprint(*r.key))
            if r.key in wanted_keys:
                found.add(r.key)
    wanted = min(n, len(eligible))
    stray = [k for k in keys if k not in found]
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
