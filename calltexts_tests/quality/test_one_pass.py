"""The quality checks read their rows once, from an iterator, with memory that does not grow
with the period, and give exactly what the list-based versions they replace gave
(`quality_reference`)."""

from __future__ import annotations

import dataclasses
import gc
import math
import random
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from calltexts_assets.quality import checks as quality
from calltexts_assets.quality import duplicates
from calltexts_assets.quality.checks import (
    CheckOutcome,
    cost_matches,
    coverage,
    duration_variance,
)
from calltexts_assets.quality.duplicates import duplicate_transcripts
from calltexts_assets.quality.one_pass import FingerprintTable, FloatSum, Smallest, fingerprint
from calltexts_assets.quality.qa_sample import qa_sample, qa_sample_outcome
from calltexts_assets.report.data import build_report_data
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_tests.quality import quality_reference as reference
from calltexts_tests.support.records import transcribed_record

T = TypeVar("T")

DAYS = ("2026-11-24", "2026-11-25", "2026-12-01")
ALL_STATUSES = (
    Status.LISTED,
    Status.NO_RECORDING,
    Status.DOWNLOADED,
    Status.MISSING_AUDIO,
    Status.DOWNLOAD_ERROR,
    Status.TRANSCRIPTION_ERROR,
    Status.INVALID,
)


class OneShot(Iterable[T]):
    """Rows that can be read once, like `Ledger.iter_records`: not a sequence (no len, no
    indexing), and a second pass fails the test instead of silently seeing nothing."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = list(items)
        self.passes = 0

    def __iter__(self) -> Iterator[T]:
        self.passes += 1
        if self.passes > 1:
            raise AssertionError("the rows were read twice")
        return (item for item in self._items)


def _row(rng: random.Random, n: int, calls: int) -> CallRecord:
    """One ledger row of a period full of the cases the checks care about."""
    call_id = f"c{rng.randrange(calls)}"  # ~1/3 of the ids on several rows
    day = rng.choice(DAYS)
    month = day[:7]
    seconds = rng.choice([0.0, 7.0, 30.0, 59.2, 61.0, 100.0, 125.5, 600.0])
    changes: dict[str, Any] = {
        "run_id": day,
        "record_id": rng.choice([f"rec{n}", f"rec{n}", "rec0"]),  # a call's two records
        "transcript_path": rng.choice(
            [f"exports/{month}/transcripts/call_{call_id}.txt"] * 8
            + [
                f"exports/2026-10/transcripts/call_{call_id}.txt",  # another folder
                f"exports/{month}/transcripts/call_c{rng.randrange(calls)}.txt",  # another's
                f"exports/{month}/odd/{call_id}.txt",  # not "call_<id>.txt"
                f"call_{call_id}.txt",  # no folder at all
                "",
                None,
            ]
        ),
    }
    if rng.random() < 0.3:
        changes["status"] = rng.choice(ALL_STATUSES)
        if rng.random() < 0.5:
            changes.update(transcript_path=None, stt_duration_sec=None, audio_duration_sec=None)
        changes["cost"] = rng.choice([None, None, 0.006])
        changes["error_code"] = "stt_5xx"
        changes["duration_sec"] = rng.choice([0, 45])
    if rng.random() < 0.15:  # audio off from Bitrix24's duration, or not measured
        changes["audio_duration_sec"] = rng.choice([None, seconds * 1.2, seconds + 0.5, 12.0])
    if rng.random() < 0.1:
        changes["stt_duration_sec"] = rng.choice([None, seconds + 61])
    if rng.random() < 0.1:
        changes["cost"] = rng.choice([None, 0.0, 0.003, 1.0])
    if rng.random() < 0.03:
        changes["duration_sec"] = 0
    hour, minute = rng.randrange(8, 20), rng.randrange(60)
    started_at = rng.choice([f"{day}T{hour:02d}:{minute:02d}:00+03:00"] * 20 + [""])
    return transcribed_record(
        n, day=day, call_id=call_id, started_at=started_at, seconds=seconds, **changes
    )


def messy_period(seed: int, rows: int = 300) -> tuple[list[CallRecord], list[str]]:
    """Rows with every kind of offender, and the transcript keys a storage listing gives."""
    rng = random.Random(seed)
    calls = rows * 2 // 3
    records = [_row(rng, n, calls) for n in range(rows)]
    keys = [r.transcript_path for r in records if r.transcript_path and rng.random() < 0.9]
    keys += [
        f"exports/{rng.choice(['2026-10', '2026-11', '2026-12'])}/transcripts/"
        f"call_c{rng.randrange(calls)}.txt"
        for _ in range(rows // 10)
    ]
    keys += [
        f"exports/2026-11/transcripts/call_c{rng.randrange(calls)}.txt/",  # not normalised
        f"exports/2026-11//transcripts/call_c{rng.randrange(calls)}.txt",
        "exports/2026-11/transcripts/call_unknown.txt",  # not a call of the period
        "exports/2026-11/summary/call_c1.md",  # not a transcript
    ]
    keys += rng.sample(keys, len(keys) // 20)  # listed twice
    rng.shuffle(keys)
    return records, keys


# The single-pass checks, under the names the list-based oracle gives them.
ONE_PASS = SimpleNamespace(
    duration_variance=quality.duration_variance,
    coverage=quality.coverage,
    duplicate_transcripts=duplicates.duplicate_transcripts,
    cost_matches=quality.cost_matches,
)


def _checks(
    module: Any, records: Iterable[CallRecord], keys: Iterable[str], make: Callable[..., Any]
) -> list[CheckOutcome]:
    return [
        module.duration_variance(make(records)),
        module.coverage(make(records)),
        module.duplicate_transcripts(make(records), make(keys)),
        module.cost_matches(make(records), 0.006),
    ]


@pytest.mark.parametrize("seed", range(12))
def test_one_pass_checks_equal_the_list_based_ones(seed: int) -> None:
    records, keys = messy_period(seed)
    expected = _checks(reference, records, keys, list)
    streams: list[OneShot[Any]] = []

    def one_shot(items: Iterable[Any]) -> OneShot[Any]:
        streams.append(OneShot(items))
        return streams[-1]

    assert _checks(ONE_PASS, records, keys, one_shot) == expected
    assert all(stream.passes == 1 for stream in streams)
    # the data really has offenders of every kind, so the comparison means something
    assert [outcome.passed for outcome in expected] == [False] * 4
    duplicates = expected[2].details
    assert all(duplicates[kind] for kind in duplicates), duplicates


def test_the_checks_read_a_plain_generator_once() -> None:
    records, keys = messy_period(1)
    outcome = coverage(r for r in records)
    assert outcome == reference.coverage(records)
    assert outcome.value == pytest.approx(outcome.details["transcribed"] / len(records), abs=1)
    assert duplicate_transcripts(iter(records), iter(keys)) == reference.duplicate_transcripts(
        records, keys
    )


@pytest.mark.parametrize("seed", range(4))
def test_cut_offending_ids_keep_the_first_and_count_them_all(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, keys = messy_period(seed, rows=400)
    expected = _checks(reference, records, keys, list)
    monkeypatch.setattr(quality, "MAX_OFFENDING_IDS", 3)
    monkeypatch.setattr(duplicates, "MAX_OFFENDING_IDS", 3)
    for got, want in zip(_checks(ONE_PASS, records, keys, OneShot), expected, strict=True):
        assert len(want.offending_call_ids) > 3, want.name  # the cut really happens
        assert got.offending_call_ids == want.offending_call_ids[:3]
        assert got.offending_count == got.offending_calls == len(want.offending_call_ids)
        assert got.metadata()["offending_calls"] == len(want.offending_call_ids)
        assert (
            dataclasses.replace(
                got, offending_call_ids=want.offending_call_ids, offending_count=None
            )
            == want
        )


def test_a_thousand_offending_ids_then_only_the_count() -> None:
    records = [
        transcribed_record(n, day=DAYS[0], call_id=f"c{n:05d}", started_at="", seconds=60.0)
        for n in range(2500)
    ]
    wrong = [dataclasses.replace(r, cost=None) for r in records]
    outcome = cost_matches(OneShot(wrong))
    assert outcome.value == 2500.0 and outcome.offending_calls == 2500
    assert outcome.offending_call_ids == tuple(r.call_id for r in wrong[:1000])
    twice = duplicate_transcripts(OneShot([*records, *reversed(records)]))
    assert twice.value == 2500.0 and twice.metadata()["offending_calls"] == 2500
    assert twice.offending_call_ids == tuple(f"c{n:05d}" for n in range(1000))
    assert twice.details["same_call_twice"] == {f"c{n:05d}": 2 for n in range(10)}
    assert twice.summary.startswith("2500 calls transcribed twice, 0 calls with several")
    # one path, several records: the path is shared (and each call transcribed twice)
    other_record = [dataclasses.replace(r, record_id="other") for r in records[:30]]
    shared = duplicate_transcripts(OneShot(records[:30] + other_record))
    assert shared.details["one_path_for_several_calls"] == {
        r.transcript_path: [r.call_id, r.call_id] for r in records[:10]
    }
    assert shared.summary.endswith("30 transcript paths shared by several calls")


# -- QA sample -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [0, 1, 5, 50, 400])
def test_qa_sample_one_pass_equals_the_list_based_one(seed: int, n: int) -> None:
    records, _ = messy_period(seed)
    rng = random.Random(seed)
    # the same key twice with other contents: the last row of a key is the one sampled
    records += [dataclasses.replace(r, language="en") for r in rng.sample(records, 20)]
    label = f"2026-11-{seed + 1:02d}_2026-11-30"
    expected = reference.qa_sample(records, label, n)
    sample = qa_sample(OneShot(records), label, n)
    assert sample == expected
    assert len(sample) == min(n, len({r.key for r in records if r.status == Status.TRANSCRIBED}))
    assert qa_sample_outcome(sample, OneShot(records), n) == reference.qa_sample_outcome(
        sample, records, n
    )
    assert qa_sample_outcome(sample, OneShot(records), n).passed


def test_qa_sample_outcome_counts_keys_and_names_strays_in_one_pass() -> None:
    records, _ = messy_period(3)
    transcribed = [r for r in records if r.status == Status.TRANSCRIBED]
    stray = next(r for r in records if r.status != Status.TRANSCRIBED)
    sample = [*transcribed[:4], stray, transcribed[0]]  # a stray and a repeat
    outcome = qa_sample_outcome(sample, (r for r in records + transcribed), n=10)
    assert outcome == reference.qa_sample_outcome(sample, records + transcribed, n=10)
    assert not outcome.passed and outcome.offending_call_ids == (stray.call_id,)
    distinct = len({r.key for r in transcribed})  # the data repeats some keys, fed twice here
    assert distinct < len(transcribed)
    assert outcome.summary == f"QA sample of 6 calls (wanted 10 of {distinct} transcribed)"


def test_qa_sample_refuses_a_negative_size() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        qa_sample([], "p", -1)


# -- helpers ---------------------------------------------------------------------------------


def test_float_sum_is_sum_to_the_last_bit() -> None:
    rng = random.Random(5)
    for size in [0, 1, 2, 3, 10, 1000]:
        for values in (
            [rng.uniform(0, 1200) for _ in range(size)],
            [rng.choice([0.1, 0.2, 0.3, 1e16, -1e16, 33.319, 19.382, -0.0]) for _ in range(size)],
        ):
            total = FloatSum()
            for value in values:
                total.add(value)
            expected = sum(value for value in values)
            assert type(total.value) is type(expected)  # sum() of nothing is the int 0
            assert total.value == expected or math.isnan(expected)


def test_smallest_is_a_stable_sort_cut() -> None:
    rng = random.Random(2)
    items = [(rng.randrange(20), n) for n in range(500)]
    for limit in [0, 1, 3, 64, 1000]:
        kept: Smallest[tuple[int, int]] = Smallest(limit, key=lambda item: item[0])
        for item in items:
            kept.add(item)
        assert kept.items() == sorted(items, key=lambda item: item[0])[:limit]
        assert kept.total == 500


def test_fingerprint_table_against_a_dict() -> None:
    rng = random.Random(3)
    table, plain, keys_only = FingerprintTable(), {}, FingerprintTable(values=False)
    for _ in range(20_000):
        fp = fingerprint(f"c{rng.randrange(15_000)}")
        value = rng.getrandbits(64)
        assert table.put(fp, value) == (fp not in plain)
        keys_only.put(fp)
        plain[fp] = value
    assert len(table) == len(keys_only) == len(plain)
    assert all(table.get(fp) == value and keys_only.get(fp) == 0 for fp, value in plain.items())
    assert table.get(fingerprint("not there")) is None
    assert fingerprint("ab", "c") != fingerprint("a", "bc") and fingerprint("") != 0


# -- memory ----------------------------------------------------------------------------------

ROWS = 10_000


def _lazy_period() -> Iterator[CallRecord]:
    """A period made as it is read: memory held after a row is the check's alone."""
    for n in range(ROWS):
        day = DAYS[n % 2]
        call_id = f"{n:010d}"
        yield transcribed_record(
            n,
            day=day,
            call_id=call_id,
            started_at=f"{day}T10:{n % 60:02d}:00+03:00",
            seconds=float(30 + n % 600),
            status=Status.TRANSCRIBED if n % 50 else Status.TRANSCRIPTION_ERROR,
        )


REPORT: dict[str, Any] = {
    "period_from": DAYS[0],
    "period_to": DAYS[1],
    "forecast": None,
    "price_per_minute": 0.006,
    "usd_rub_rate": 92.5,
    "budget_usd": None,
    "run_seconds": 1.0,
}


def _peak_bytes(run: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("name", "run", "bytes_per_call"),
    [
        ("duration_variance", lambda: duration_variance(_lazy_period()), 0),
        ("coverage", lambda: coverage(_lazy_period()), 0),
        ("cost_matches", lambda: cost_matches(_lazy_period()), 0),
        ("qa_sample", lambda: qa_sample(_lazy_period(), "p"), 0),
        # one table word per call id: 16 bytes a slot, the table at most 3/4 full, and twice
        # that while it grows (old and new arrays)
        ("duplicate_transcripts", lambda: duplicate_transcripts(_lazy_period()), 50),
        ("qa_sample_outcome", lambda: qa_sample_outcome([], _lazy_period()), 25),
        ("build_report_data", lambda: build_report_data(_lazy_period(), **REPORT), 0),
    ],
)
def test_memory_does_not_grow_with_the_calls(
    name: str, run: Callable[[], object], bytes_per_call: int
) -> None:
    # A fixed allowance (up to a thousand offending ids, the report's first exceptions) plus
    # the check's own share per call; the list-based checks held 0.8 to 1.3 KB a call.
    limit = 300_000 + bytes_per_call * ROWS
    assert _peak_bytes(run) < limit, name
