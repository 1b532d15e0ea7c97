import csv
import io
import json
import random
from dataclasses import replace
from typing import Any

import pytest

from calltexts_assets.quality.checks import (
    cost_matches,
    coverage,
    duration_variance,
    registry_complete,
)
from calltexts_assets.quality.duplicates import duplicate_transcripts
from calltexts_assets.quality.qa_sample import (
    QA_SAMPLE_COLUMNS,
    qa_sample,
    qa_sample_csv,
    qa_sample_outcome,
)
from calltexts_assets.registry.rows import registry_frame, registry_rows, write_registry_csv
from calltexts_assets.state.ledger import CallRecord, Status
from calltexts_tests.support.records import transcribed_record

DAY = "2026-11-24"


def make_record(n: int = 1, **changes: Any) -> CallRecord:
    """A transcribed 100 s call whose audio measures exactly what Bitrix24 says."""
    changes.setdefault("call_id", f"call{n}")
    changes.setdefault(
        "started_at", f"{DAY}T{9 + n // 3600 % 12:02d}:{n // 60 % 60:02d}:{n % 60:02d}+03:00"
    )
    return transcribed_record(
        n,
        day=DAY,
        seconds=100.0,
        incoming=False,
        **changes,
    )


def not_transcribed(n: int, status: str, error_code: str | None = "stt_5xx") -> CallRecord:
    return make_record(
        n,
        status=status,
        error_code=error_code,
        transcript_path=None,
        language=None,
        stt_duration_sec=None,
        cost=None,
    )


def good_period(calls: int = 10) -> list[CallRecord]:
    return [make_record(n) for n in range(1, calls + 1)]


def test_a_good_period_passes_every_check() -> None:
    records = good_period()
    listed = [r.transcript_path for r in records if r.transcript_path]
    outcomes = [
        duration_variance(records),
        coverage(records),
        duplicate_transcripts(records, listed),
        cost_matches(records, 0.006),
    ]
    for outcome in outcomes:
        assert outcome.passed, outcome
        assert outcome.state == "ok"
        assert outcome.offending_call_ids == ()
        json.dumps(outcome.metadata())  # Dagster metadata must be JSON-able


# -- duration variance -----------------------------------------------------------------------


def test_variance_of_0_6_percent_fails_and_names_the_call() -> None:
    records = good_period()  # 1000 s in Bitrix24
    records[3] = make_record(4, audio_duration_sec=106.0)  # +6 s over 1000 s = 0.6 %
    outcome = duration_variance(records)
    assert not outcome.passed
    assert outcome.value == pytest.approx(0.006)
    assert outcome.threshold == 0.005
    assert outcome.offending_call_ids == ("call4",)
    assert outcome.details["difference_seconds"] == 6.0


def test_variance_of_0_4_percent_passes() -> None:
    records = good_period()
    records[3] = make_record(4, audio_duration_sec=104.0)
    outcome = duration_variance(records)
    assert outcome.passed and outcome.value == pytest.approx(0.004)


def test_variance_falls_back_to_stt_duration_and_skips_calls_without_audio() -> None:
    records = [
        make_record(1, audio_duration_sec=None, stt_duration_sec=110.0),
        make_record(2),
        # no audio at all: neither sum includes its 100 s
        make_record(3, status=Status.MISSING_AUDIO, audio_duration_sec=None, stt_duration_sec=None),
    ]
    outcome = duration_variance(records)
    assert outcome.details["calls_measured"] == 2
    assert outcome.value == pytest.approx(10 / 200)


def test_variance_without_audio_passes() -> None:
    records = [
        make_record(1, status=Status.NO_RECORDING, audio_duration_sec=None, stt_duration_sec=None)
    ]
    assert duration_variance(records).passed


# -- coverage --------------------------------------------------------------------------------


def _coverage_period(with_audio: int, transcribed: int) -> list[CallRecord]:
    records = [make_record(n) for n in range(transcribed)]
    records += [
        not_transcribed(n, Status.TRANSCRIPTION_ERROR) for n in range(transcribed, with_audio)
    ]
    # calls without audio do not count either way
    records += [
        not_transcribed(with_audio + 1, Status.MISSING_AUDIO, "http_404"),
        not_transcribed(with_audio + 2, Status.NO_RECORDING, None),
        not_transcribed(with_audio + 3, Status.INVALID, "invalid_row"),
    ]
    return records


def test_coverage_of_97_percent_is_an_error() -> None:
    outcome = coverage(_coverage_period(100, 97))
    assert not outcome.passed and outcome.severity == "error" and outcome.state == "fail"
    assert outcome.value == pytest.approx(0.97)
    assert outcome.details["calls_with_audio"] == 100
    assert len(outcome.offending_call_ids) == 3


def test_coverage_of_98_5_percent_is_a_warning() -> None:
    outcome = coverage(_coverage_period(200, 197))
    assert not outcome.passed and outcome.severity == "warn" and outcome.state == "warn"
    assert outcome.value == pytest.approx(0.985)


@pytest.mark.parametrize(("with_audio", "transcribed"), [(100, 99), (100, 100)])
def test_coverage_of_99_percent_or_more_passes(with_audio: int, transcribed: int) -> None:
    outcome = coverage(_coverage_period(with_audio, transcribed))
    assert outcome.passed


def test_nothing_to_cover_is_a_warning_that_says_what_to_check() -> None:
    """An empty period is no success: a wrong scope, period or time zone looks like this."""
    empty = coverage([])
    assert not empty.passed and empty.severity == "warn"
    assert "no calls were listed" in empty.summary and "telephony" in empty.summary
    unrecorded = coverage(_coverage_period(0, 0))  # 3 calls, none with a recording
    assert not unrecorded.passed and unrecorded.severity == "warn"
    assert "3 calls were listed but none has a recording" in unrecorded.summary


def test_download_errors_count_against_coverage() -> None:
    records = [*good_period(98), not_transcribed(99, Status.DOWNLOAD_ERROR, "timeout")]
    records += [not_transcribed(100, Status.LISTED, None)]
    outcome = coverage(records)
    assert outcome.value == pytest.approx(0.98)
    assert outcome.details["not_transcribed_by_status"] == {"download_error": 1, "listed": 1}


# -- duplicates ------------------------------------------------------------------------------


def test_the_same_call_transcribed_in_two_runs_is_a_duplicate() -> None:
    records = [*good_period(3), make_record(2, run_id="2026-11-25")]
    outcome = duplicate_transcripts(records)
    assert not outcome.passed
    assert outcome.offending_call_ids == ("call2",)
    assert outcome.details["same_call_twice"] == {"call2": 2}


def test_several_recordings_of_one_call_each_with_its_own_transcript_pass() -> None:
    legs = [
        make_record(
            n,
            call_id="call9",
            record_id=f"90{n}",
            transcript_path=f"exports/2026-11/transcripts/call_call9~90{n}.txt",
        )
        for n in (1, 2)
    ]
    records = [*good_period(3), *legs]
    listed = [r.transcript_path for r in records if r.transcript_path]
    assert duplicate_transcripts(records, listed).passed
    # The same leg transcribed twice (another day's row) still is a duplicate.
    again = make_record(2, call_id="call9", record_id="902", run_id="2026-11-25",
                        transcript_path=legs[1].transcript_path)  # fmt: skip
    outcome = duplicate_transcripts([*records, again], listed)
    assert not outcome.passed and outcome.offending_call_ids == ("call9~902",)


def test_two_transcript_files_for_one_call_are_duplicates() -> None:
    records = good_period(3)
    listed = [r.transcript_path for r in records if r.transcript_path] + [
        "exports/2026-12/transcripts/call_call3.txt",  # the same call filed under another month
        "exports/2026-11/transcripts/call_other.txt",  # not a call of this period: ignored
        "exports/2026-11/summary/call_call1.md",  # not a transcript: ignored
    ]
    outcome = duplicate_transcripts(records, listed)
    assert not outcome.passed and outcome.offending_call_ids == ("call3",)


def test_one_transcript_path_for_two_calls_is_a_duplicate() -> None:
    records = good_period(3)
    records[2] = make_record(3, transcript_path=records[0].transcript_path)
    outcome = duplicate_transcripts(records)
    assert not outcome.passed
    assert outcome.offending_call_ids == ("call1", "call3")


# -- cost ------------------------------------------------------------------------------------


def test_a_wrong_cost_fails() -> None:
    records = good_period(3)
    records[1] = make_record(2, cost=0.006)  # billed one minute for 100 s
    outcome = cost_matches(records, 0.006)
    assert not outcome.passed and outcome.offending_call_ids == ("call2",)
    assert outcome.details["mismatches"][0]["expected"] == pytest.approx(0.012)


def test_a_transcribed_call_without_cost_fails_and_tiny_float_noise_passes() -> None:
    assert not cost_matches([make_record(1, cost=None)], 0.006).passed
    assert cost_matches([make_record(1, cost=0.012 + 1e-12)], 0.006).passed


def test_cost_follows_the_stt_duration_and_the_tariff() -> None:
    record = make_record(1, stt_duration_sec=121.0, cost=0.009)  # 3 min x 0.003
    assert cost_matches([record], 0.003).passed
    assert not cost_matches([record], 0.006).passed


# -- the registry's required fields ----------------------------------------------------------


def _registry(records: list[CallRecord]) -> bytes:
    rows = registry_rows(records)
    return write_registry_csv(registry_frame(rows))


def test_registry_with_a_missing_field_fails() -> None:
    records = [*good_period(3), make_record(4, language=None)]
    outcome = registry_complete(_registry(records))
    assert not outcome.passed
    assert outcome.offending_call_ids == ("call4",)
    assert "language is empty" in outcome.details["problems"][0]


def test_complete_registry_passes() -> None:
    records = [*good_period(3), not_transcribed(4, Status.MISSING_AUDIO, "http_404")]
    assert registry_complete(_registry(records)).passed


# -- QA sample -------------------------------------------------------------------------------


def _period_for_sampling() -> list[CallRecord]:
    records = good_period(120)
    records += [not_transcribed(n, Status.TRANSCRIPTION_ERROR) for n in range(121, 141)]
    return records


def test_qa_sample_is_reproducible_and_order_independent() -> None:
    records = _period_for_sampling()
    sample = qa_sample(records, "2026-11-24_2026-11-24")
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    assert qa_sample(shuffled, "2026-11-24_2026-11-24") == sample
    assert qa_sample(records[::-1], "2026-11-24_2026-11-24") == sample
    assert len(sample) == 50
    assert all(r.status == Status.TRANSCRIBED for r in sample)
    assert sample == sorted(sample, key=lambda r: r.started_at)  # handed out in time order
    assert len({r.key for r in sample}) == 50
    assert qa_sample_outcome(sample, records).passed


def test_qa_sample_depends_on_the_period_and_is_stable_under_other_calls() -> None:
    records = _period_for_sampling()
    sample = qa_sample(records, "2026-11-24_2026-11-24")
    assert qa_sample(records, "2026-11-25_2026-11-25") != sample
    outside = next(r for r in records if r not in sample and r.status == Status.TRANSCRIBED)
    fewer = [r for r in records if r != outside]
    assert qa_sample(fewer, "2026-11-24_2026-11-24") == sample


def test_qa_sample_of_a_small_period_takes_every_transcribed_call() -> None:
    records = [*good_period(5), not_transcribed(6, Status.MISSING_AUDIO, "http_404")]
    sample = qa_sample(records, "p", n=50)
    assert [r.call_id for r in sample] == [f"call{n}" for n in range(1, 6)]
    assert qa_sample_outcome(sample, records).passed
    assert not qa_sample_outcome(sample[:3], records).passed


def test_qa_sample_csv() -> None:
    sample = qa_sample(good_period(3), "p")
    data = qa_sample_csv(sample)
    assert data.startswith(b"\xef\xbb\xbf")
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    rows = list(csv.DictReader(text, delimiter=";"))
    assert tuple(rows[0]) == QA_SAMPLE_COLUMNS
    assert [r["call_id"] for r in rows] == ["call1", "call2", "call3"]
    assert rows[0]["transcript_path"] == "exports/2026-11/transcripts/call_call1.txt"
    assert rows[0]["qa_verdict"] == ""


def test_audio_where_bitrix24_says_zero_seconds_fails_with_a_finite_value() -> None:
    outcome = duration_variance([make_record(1, duration_sec=0, audio_duration_sec=12.0)])
    assert not outcome.passed and outcome.value == 1.0
    json.dumps(outcome.metadata(), allow_nan=False)


def test_every_call_that_needs_review_is_in_the_qa_sample() -> None:
    records = _period_for_sampling()
    label = "2026-11-24_2026-11-24"
    plain = qa_sample(records, label)
    outside = [r for r in records if r.status == Status.TRANSCRIBED and r not in plain][:3]
    flagged_keys = {r.key for r in outside}
    records = [
        replace(r, verdict="needs_review", doubts="repetition") if r.key in flagged_keys else r
        for r in records
    ]
    sample = qa_sample(records, label)
    assert len(sample) == 50 and flagged_keys <= {r.key for r in sample}
    assert len({r.key for r in sample} - {r.key for r in plain}) == 3  # three others left
    assert qa_sample_outcome(sample, records).passed
    # a sample that leaves one out fails its check
    assert not qa_sample_outcome(plain, records).passed
    # more doubtful calls than places: all of them, and only them
    many = [replace(r, verdict="needs_review") if r.status == Status.TRANSCRIBED else r
            for r in records]  # fmt: skip
    assert (
        len(qa_sample(many, label)) == 120
        and qa_sample_outcome(qa_sample(many, label), many).passed
    )


def test_a_doubt_a_re_run_cleared_leaves_the_qa_sample() -> None:
    """A row repeated with the same key counts as its last version: a call that needed review
    and then (a re-run) no longer does is sampled as any other call, and the check wants no
    flagged call for it."""
    records = _period_for_sampling()
    label = "2026-11-24_2026-11-24"
    plain = qa_sample(records, label)
    outside = next(r for r in records if r.status == Status.TRANSCRIBED and r not in plain)
    doubtful = replace(outside, verdict="needs_review", doubts="repetition")
    cleared = [*records, doubtful, outside]  # flagged, then cleared by the re-run
    sample = qa_sample(cleared, label)
    assert sample == plain  # the cleared call is not kept in as needing review
    assert qa_sample_outcome(sample, cleared).passed
    # ...and the other way round: flagged by the last version, it is in
    raised = [*records, outside, doubtful]
    sample = qa_sample(raised, label)
    assert doubtful in sample and qa_sample_outcome(sample, raised).passed
    assert not qa_sample_outcome(plain, raised).passed
