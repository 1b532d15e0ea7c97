"""Registry, report and the quality gates through Dagster, on sandbox exports."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from calltexts_assets.assets import (
    all_assets,
    call_list,
    cost_report,
    raw_audio,
    registry_csv,
    transcripts,
)
from calltexts_assets.billing.cost import format_usd
from calltexts_assets.state.ledger import Status
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.sandboxed import make_sandbox, materialize_range, sandbox_resources

DAY1, DAY2 = "2026-11-01", "2026-11-02"


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _report_value(markdown: str, label: str) -> str:
    match = re.search(rf"^\| {re.escape(label)} \| (.+?) \|$", markdown, re.M)
    assert match, f"{label!r} not in the report"
    return match.group(1)


@pytest.fixture
def five_calls(audio_cache_dir: Path):
    running = make_sandbox(audio_cache_dir, days=1, calls_per_day=5)
    yield running
    running.stop()


def test_smoke_five_calls_every_artifact_and_report_equals_ledger(
    five_calls: Sandbox, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    rows = five_calls.portal.rows
    drive_only = next(r for r in rows if r["RECORD_FILE_ID"])
    drive_only["CALL_RECORD_URL"] = None  # kept as a Drive file only (real portals do)
    five_calls.portal.set_rows(rows)
    resources = sandbox_resources(five_calls, tmp_path)
    result = materialize_range(all_assets, resources, instance, DAY1, DAY1)
    assert result.success
    records = resources["ledger"].get().records([DAY1])
    assert len(records) == 5
    store = tmp_path / "store"
    for record in records:
        if record.has_recording:
            assert (store / record.audio_path).stat().st_size == record.audio_bytes
            assert (store / record.transcript_path).read_bytes()[:3] != b"\xef\xbb\xbf"
    period = f"{DAY1}_{DAY1}"
    registry = store / f"exports/{period}/registry/calls_{period}.csv"
    assert registry.read_bytes().startswith(b"\xef\xbb\xbf")
    assert (store / f"exports/{period}/reports/summary_{period}.pdf").read_bytes()[:5] == b"%PDF-"
    assert (store / f"exports/{period}/reports/qa_sample_{period}.csv").exists()

    markdown = (store / f"exports/{period}/reports/summary_{period}.md").read_text("utf-8")
    transcribed = [r for r in records if r.status == Status.TRANSCRIBED]
    assert _report_value(markdown, "Всего звонков") == str(len(records))
    assert _report_value(markdown, "Расшифровано") == str(len(transcribed))
    # Found on a clean clone's demo: the forecast left out calls kept as Drive files only.
    with_recording = sum(r.has_recording for r in records)
    assert _report_value(markdown, "Прогноз: звонков с записью") == str(with_recording)
    total = sum((Decimal(str(r.cost)) for r in transcribed), Decimal(0))
    assert _report_value(markdown, "Стоимость, USD") == format_usd(total)
    report_event = instance.get_latest_materialization_event(dg.AssetKey("cost_report"))
    assert report_event is not None
    meta = report_event.asset_materialization.metadata
    assert meta["transcribed"].value == len(transcribed)
    assert meta["cost_usd"].value == pytest.approx(float(total))
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_regression_300_calls_with_404s_and_whisper_errors(
    audio_cache_dir: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    sandbox = make_sandbox(audio_cache_dir, days=2, calls_per_day=150)
    try:
        # Short calls keep the suite fast: the figures under test do not depend on length.
        sandbox.portal.set_rows(
            [
                {**row, "CALL_DURATION": str(min(int(row["CALL_DURATION"]), 30))}
                for row in sandbox.portal.rows
            ]
        )
        resources = sandbox_resources(sandbox, tmp_path)
        with_audio = [r for r in sandbox.portal.rows if r.get("RECORD_FILE_ID")]
        gone = [str(r["RECORD_FILE_ID"]) for r in with_audio[:3]]
        sandbox.portal.add_fault(kind="missing", target="records", times=None, record_ids=gone)
        sandbox.stt.set_faults(bad_request_on={5, 40, 90, 160, 250})
        result = materialize_range(
            all_assets, resources, instance, DAY1, DAY2, raise_on_error=False
        )
    finally:
        sandbox.stop()
    records = resources["ledger"].get().records([DAY1, DAY2])
    assert len(records) == 300
    missing = [r for r in records if r.status == Status.MISSING_AUDIO]
    failed = [r for r in records if r.status == Status.TRANSCRIPTION_ERROR]
    assert sorted(r.record_id for r in missing) == sorted(gone)
    assert 1 <= len(failed) <= 5  # both channels of one call may draw two of the five
    available = len(with_audio) - len(gone)
    expected = (available - len(failed)) / available

    checks = _checks(result)
    assert checks["coverage"].metadata["value"].value == pytest.approx(expected)
    assert checks["coverage"].passed is (expected >= 0.99)
    if expected < 0.99:
        assert checks["coverage"].severity == (
            dg.AssetCheckSeverity.WARN if expected >= 0.98 else dg.AssetCheckSeverity.ERROR
        )
    for name in ("duplicate_transcripts", "duration_variance", "registry_complete", "cost_matches"):
        assert checks[name].passed, name
    period = f"{DAY1}_{DAY2}"
    markdown = (tmp_path / f"store/exports/{period}/reports/summary_{period}.md").read_text("utf-8")
    for record in [*missing, *failed]:
        assert record.call_id in markdown
    assert _report_value(markdown, "Запись не найдена") == "3"


@pytest.fixture
def exported(sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance) -> dict[str, Any]:
    resources = sandbox_resources(sandbox, tmp_path)
    upstream = [call_list, raw_audio, transcripts]
    assert materialize_range(upstream, resources, instance, DAY1, DAY2).success
    return resources


def _report_and_registry(resources: dict[str, Any], instance: dg.DagsterInstance):
    result = materialize_range(
        [registry_csv, cost_report], resources, instance, DAY1, DAY2, raise_on_error=False
    )
    built = instance.get_latest_materialization_event(dg.AssetKey("cost_report"))
    return _checks(result), built


def test_variance_over_half_a_percent_blocks_the_report(
    exported: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    ledger = exported["ledger"].get()
    records = [r for r in ledger.records([DAY1, DAY2]) if r.status == Status.TRANSCRIBED]
    bitrix_total = sum(r.duration_sec for r in records)
    # Move measured durations to exactly Bitrix24's total + 0.6 %, on one call.
    for r in records:
        ledger.update(r.key, audio_duration_sec=float(r.duration_sec))
        ledger.update(r.key, stt_duration_sec=float(r.duration_sec))
    longest = max(records, key=lambda r: r.duration_sec)
    stretched = longest.duration_sec + bitrix_total * 0.006
    ledger.update(longest.key, audio_duration_sec=stretched, stt_duration_sec=stretched)

    checks, built = _report_and_registry(exported, instance)
    assert not checks["duration_variance"].passed
    assert checks["duration_variance"].metadata["value"].value == pytest.approx(0.006, rel=1e-3)
    assert built is None  # blocking: the report was not built past the failure


def test_good_partition_passes_and_builds_the_report(
    exported: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    checks, built = _report_and_registry(exported, instance)
    assert all(c.passed for c in checks.values())
    assert built is not None


def test_duplicate_wrong_cost_and_missing_field_each_fail_their_check(
    exported: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    ledger = exported["ledger"].get()
    first, second, third = [
        r for r in ledger.records([DAY1, DAY2]) if r.status == Status.TRANSCRIBED
    ][:3]
    # One file, two calls: the second row takes the first's file with its hash and time, so
    # the file is intact for both rows (with only the path, a re-run finds the file is not
    # the second's, whenever it was written after the second's, and re-makes the second).
    ledger.update(
        second.key,
        transcript_path=first.transcript_path,
        transcript_sha256=first.transcript_sha256,
        transcript_written_at=first.transcript_written_at,
    )
    ledger.update(third.key, cost=(third.cost or 0) + 0.006)  # a minute too many
    ledger.update(first.key, language=None)  # required when transcribed

    result = materialize_range(
        [transcripts, registry_csv, cost_report],
        exported,
        instance,
        DAY1,
        DAY2,
        raise_on_error=False,
    )
    checks = _checks(result)
    assert not checks["duplicate_transcripts"].passed
    assert not checks["cost_matches"].passed
    assert third.call_id in checks["cost_matches"].metadata["offending_call_ids"].value
    assert not checks["registry_complete"].passed
    assert instance.get_latest_materialization_event(dg.AssetKey("cost_report")) is None
