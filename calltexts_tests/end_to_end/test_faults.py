"""Fault injection against the sandbox over loopback: what each failure leaves in the ledger
and in storage, and that the next run repairs exactly what is broken.

In-process tests go through dagster's materialize (conftest); the kill -9 tests run the
export in a child process (pipeline_subprocess) and kill it mid-stage. Retry waits are the
configured waits times `retry_wait_scale`, never a patched sleep.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from calltexts_assets.assets import all_assets, call_list
from calltexts_assets.clients.bitrix24 import DEFAULT_RETRY_WAITS
from calltexts_assets.files.storage_keys import file_id_of, key_kind, raw_audio_key
from calltexts_assets.resources.bitrix24 import Bitrix24Resource
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.openai import WhisperResource
from calltexts_assets.state.ledger import CallRecord, Ledger, Status
from calltexts_sandbox.calls.seed import recording_is_stereo
from calltexts_sandbox.runtime import SANDBOX_API_KEY, STORAGE_HOST, Sandbox
from calltexts_tests.support.child_run import ChildLayout, run_child, start_child
from calltexts_tests.support.sandboxed import (
    TEST_RETRY_SCALE,
    make_sandbox,
    materialize_range,
    sandbox_child_env,
    sandbox_resources,
)

DAY1, DAY2 = "2026-11-01", "2026-11-02"
DAYS = [DAY1, DAY2]
FIRST, LAST = date(2026, 11, 1), date(2026, 11, 2)
REGISTRY = f"exports/{DAY1}_{DAY2}/registry/calls_{DAY1}_{DAY2}.csv"
STT_RETRIES = 3  # OpenAIResourceBase.retry_waits: 10/30/60 s
BITRIX_ATTEMPTS = len(DEFAULT_RETRY_WAITS) + 1
# Seeded calls are cut to this length: every code path is the same, the suite 2-3x faster.
MAX_CALL_SEC = 40


def cap_durations(sandbox: Sandbox, max_sec: int = MAX_CALL_SEC) -> None:
    rows = sandbox.portal.rows
    for row in rows:
        row["CALL_DURATION"] = str(min(int(row["CALL_DURATION"]), max_sec))
    sandbox.portal.set_rows(rows)


@pytest.fixture
def sandbox(audio_cache_dir: Path) -> Iterator[Sandbox]:
    """conftest's sandbox (seed 11, 2 days x 6 calls), with calls of at most 40 s."""
    running = make_sandbox(audio_cache_dir)
    cap_durations(running)
    yield running
    running.stop()


# -- helpers ---------------------------------------------------------------------------------


def fault_resources(
    sandbox: Sandbox,
    root: Path,
    *,
    bitrix24_retry_scale: float = TEST_RETRY_SCALE,
    stt_timeout_sec: float = 120.0,
    **settings: Any,
) -> dict[str, Any]:
    """conftest's resources with the knobs these tests turn. Built anew, not `model_copy`d:
    dagster runs a ConfigurableResource from its construction-time config, so an update
    through `model_copy(update=...)` is silently ignored at run time."""
    resources = sandbox_resources(sandbox, root)
    resources["export_settings"] = ExportSettings(
        is_sandbox=True,
        log_dir=str(root / "logs"),
        work_dir=str(root / "tmp"),
        **{"max_concurrency": 4, **settings},
    )
    resources["bitrix24"] = Bitrix24Resource(
        webhook_url=sandbox.webhook_url,
        requests_per_second=50,
        retry_wait_scale=bitrix24_retry_scale,
        recording_hosts=[STORAGE_HOST],
        allow_private_addresses=True,
    )
    resources["whisper"] = WhisperResource(
        api_key=SANDBOX_API_KEY,
        base_url=f"{sandbox.stt_url}/v1",
        retry_wait_scale=TEST_RETRY_SCALE,
        timeout_sec=stt_timeout_sec,
    )
    return resources


def seeded_with_audio(sandbox: Sandbox) -> list[dict[str, Any]]:
    """Seeded rows that have a recording, in start order (the order the assets work in)."""
    rows = [r for r in sandbox.portal.rows if r.get("RECORD_FILE_ID")]
    return sorted(rows, key=lambda r: (r["CALL_START_DATE"], r["CALL_ID"]))


def by_call(ledger: Ledger) -> dict[str, CallRecord]:
    records = ledger.records(DAYS)
    assert len(records) == len({r.call_id for r in records}), "a call is in the ledger twice"
    return {r.call_id: r for r in records}


def stt_requests(call_ids: list[str]) -> int:
    """STT requests a clean transcription of these sandbox calls takes: one per call, stereo
    or not (each sandbox recording is far under the upload limit)."""
    return len(call_ids)


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure message and description of a run, for assertions on wording."""
    parts = []
    for event in result.all_events:
        data = event.step_failure_data if event.is_step_failure else None
        if data is None:
            continue
        if data.error is not None:
            parts.append(data.error.to_string())
        if data.user_failure_data is not None:
            parts.append(data.user_failure_data.description or "")
    return "\n".join(parts)


def asset_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The run's totals of an asset (`run_totals`: the same on each partition of a range)."""
    event = next(
        m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(asset)
    ).materialization
    return dict(event.metadata["run_totals"].value)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def real_audio(sandbox: Sandbox, row: dict[str, Any]) -> bytes:
    """The recording as the portal serves it without faults."""
    found = sandbox.portal.recording(row["RECORD_FILE_ID"])
    assert found is not None
    return found[2]


def transcript_dir_files(store: Path) -> list[Path]:
    """Everything in the transcripts folders, hidden temp files included."""
    return sorted(p for p in store.glob("exports/*/transcripts/*") if p.is_file())


# call_list asks for the names the listing mentions once a run: `user.get` in one batch and
# `voximplant.line.get` (clients/bitrix24/directory.py).
NAMES_REQUESTS = 2


class _RequestClock:
    """Arrival times of the portal's HTTP requests to one endpoint (to measure back-off)."""

    def __init__(self, sandbox: Sandbox, endpoint: str, monkeypatch: pytest.MonkeyPatch):
        self.times: list[float] = []
        real = sandbox.portal._count

        def counting(name: str, *, http: bool = True) -> None:
            if http and name == endpoint:
                self.times.append(time.monotonic())
            real(name, http=http)

        monkeypatch.setattr(sandbox.portal, "_count", counting)

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


# -- Bitrix24 listing: limit storms, HTML ---------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "burst", "retry_after"),
    [
        ("voximplant.statistic.get", 429, 3, None),
        ("batch", 503, 5, None),
        ("batch", 503, 2, 20.0),  # Retry-After 20 s (scaled) outweighs the 5 s first wait
    ],
)
def test_listing_limit_storm_is_retried_with_backoff_and_loses_nothing(
    sandbox: Sandbox,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    status: int,
    burst: int,
    retry_after: float | None,
) -> None:
    scale = 0.005  # waits 25, 75, 150, 300, 600 ms: long enough to measure, short to run
    resources = fault_resources(sandbox, tmp_path, bitrix24_retry_scale=scale)
    clock = _RequestClock(sandbox, "batch", monkeypatch)
    sandbox.portal.add_fault(
        kind="status", target=target, status=status, times=burst, retry_after=retry_after
    )

    result = materialize_range([call_list], resources, instance, DAY1, DAY2)

    meta = asset_metadata(result, "call_list")
    assert meta["bitrix24_retries"] == burst
    assert meta["bitrix24_limit_hits"] == burst
    # The listing's batch, its retries, then the names of the employees and lines it named.
    assert meta["bitrix24_requests"] == burst + 1 + NAMES_REQUESTS
    assert sandbox.portal.stats()["faults_fired"] == {"status": burst}
    assert sandbox.portal.stats()["responses"] == {str(status): burst, "200": 1 + NAMES_REQUESTS}
    # Back-off honoured: each retry came no sooner than its planned wait.
    planned = [w * scale for w in DEFAULT_RETRY_WAITS[:burst]]
    if retry_after is not None:
        cap = min(retry_after, max(DEFAULT_RETRY_WAITS)) * scale
        planned = [max(p, cap) for p in planned]
    # The retries' gaps come first; the names' batch follows the listing's.
    assert len(clock.gaps) >= burst
    for gap, wait in zip(clock.gaps[:burst], planned, strict=True):
        assert gap >= wait * 0.95, (clock.gaps, planned)
    # Nothing lost, nothing twice.
    ledger = resources["ledger"].get()
    assert sorted(by_call(ledger)) == sorted(r["CALL_ID"] for r in sandbox.portal.rows)


def test_listing_storm_longer_than_the_retry_budget_fails_clearly_then_recovers(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    sandbox.portal.add_fault(kind="status", target="batch", status=503, times=BITRIX_ATTEMPTS)
    failed = materialize_range([call_list], resources, instance, DAY1, DAY2, raise_on_error=False)
    assert not failed.success
    text = failure_text(failed)
    assert f"failed after {BITRIX_ATTEMPTS} attempts" in text
    assert "QUERY_LIMIT_EXCEEDED" in text
    ledger = resources["ledger"].get()
    assert ledger.count_rows() == 0  # a partial listing is never written

    assert materialize_range([call_list], resources, instance, DAY1, DAY2).success
    assert sorted(by_call(ledger)) == sorted(r["CALL_ID"] for r in sandbox.portal.rows)


@pytest.mark.parametrize(("status", "attempts"), [(200, 1), (502, BITRIX_ATTEMPTS)])
def test_html_instead_of_json_on_listing_fails_clearly(
    sandbox: Sandbox,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    status: int,
    attempts: int,
) -> None:
    """A captive portal / proxy page (200) is not retried; a proxy's 502 page is, then fails."""
    sandbox.portal.add_fault(kind="html", target="batch", status=status, times=None)
    result = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "HTML instead of JSON" in text
    assert f"status {status}" in text
    assert sandbox.portal.request_count("batch") == attempts
    assert sandbox.portal.request_count("records") == 0
    assert resources["ledger"].get().count_rows() == 0
    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed_steps == {"call_list"}


# -- STT: 5xx and timeouts ------------------------------------------------------------------


def test_stt_errors_and_timeouts_are_retried_then_recorded_and_healed_by_a_rerun(
    sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    # One call at a time, so the injected faults hit the calls in their order.
    resources = fault_resources(sandbox, tmp_path, stt_timeout_sec=0.5, max_concurrency=1)
    # A request's timeout grows with its audio (30 s per audio minute): calls of at most 8 s
    # time out after 4.5 s, before the emulator's 10 s hang ends.
    cap_durations(sandbox, 8)
    calls = [r["CALL_ID"] for r in seeded_with_audio(sandbox)]
    # Requests in order: 4 time out (call 1 fails), 4 answer 500 (call 2 fails), 2 answer
    # 503 (call 3 succeeds on its third attempt), then everything succeeds.
    attempts = STT_RETRIES + 1
    sandbox.stt.set_faults(timeout=attempts, hang_sec=10.0, server_error=attempts, unavailable=2)

    first = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    ledger = resources["ledger"].get()
    records = by_call(ledger)
    failed = {c: r for c, r in records.items() if r.status == Status.TRANSCRIPTION_ERROR}
    assert sorted(failed) == sorted(calls[:2])
    assert records[calls[0]].error_code == "timeout"
    assert records[calls[1]].error_code == "500"
    for record in failed.values():
        assert f"failed after {attempts} attempts" in (record.error_message or "")
        assert record.attempts == 1
        assert record.transcript_path is None
        assert record.checksum and record.audio_path  # the audio stays for the next run
    assert all(records[c].status == Status.TRANSCRIBED for c in calls[2:])
    stats = sandbox.stt.stats()
    assert stats["by_status"]["500"] == attempts
    assert stats["by_status"]["503"] == 2
    assert stats["transcriptions"] == stt_requests(calls[2:])
    assert stats["requests"] == 2 * attempts + 2 + stt_requests(calls[2:])
    assert asset_metadata(first, "transcripts")["failed_now"] == 2
    store = tmp_path / "store"
    kept = {p: p.stat().st_mtime_ns for p in transcript_dir_files(store)}
    assert len(kept) == len(calls) - 2

    # Healed: the re-run transcribes exactly the two failed calls and downloads nothing.
    sandbox.stt.reset()
    sandbox.portal.reset_stats()
    second = materialize_range(all_assets, resources, instance, DAY1, DAY2)
    assert sandbox.portal.request_count("records") == 0
    assert sandbox.stt.stats()["transcriptions"] == stt_requests(calls[:2])
    assert sandbox.stt.stats()["requests"] == stt_requests(calls[:2])
    assert asset_metadata(second, "transcripts")["transcribed_now"] == 2
    records = by_call(ledger)
    assert all(records[c].status == Status.TRANSCRIBED for c in calls)
    assert all(records[c].error_code is None for c in calls)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the others were not rewritten
    assert len(transcript_dir_files(store)) == len(calls)


# -- recordings: 404/410, truncation ---------------------------------------------------------


def test_missing_and_truncated_recordings(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    rows = seeded_with_audio(sandbox)
    gone404, gone410, cut_twice, cut_always = rows[0], rows[1], rows[2], rows[3]
    portal = sandbox.portal
    portal.add_fault(
        kind="missing", target="records", times=None, record_ids=[gone404["RECORD_FILE_ID"]]
    )
    portal.add_fault(
        kind="missing",
        target="records",
        status=410,
        times=None,
        record_ids=[gone410["RECORD_FILE_ID"]],
    )
    portal.add_fault(
        kind="truncate", target="records", times=2, record_ids=[cut_twice["RECORD_FILE_ID"]]
    )
    portal.add_fault(
        kind="truncate",
        target="records",
        times=None,
        truncate_at=0.3,
        record_ids=[cut_always["RECORD_FILE_ID"]],
    )

    materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    ledger = resources["ledger"].get()
    records = by_call(ledger)
    assert len(records) == len(portal.rows)
    assert records[gone404["CALL_ID"]].status == Status.MISSING_AUDIO
    assert records[gone404["CALL_ID"]].error_code == "http_404"
    assert records[gone410["CALL_ID"]].status == Status.MISSING_AUDIO
    assert records[gone410["CALL_ID"]].error_code == "http_410"
    # Cut twice: the third attempt completes it and the checksum is the full file's.
    store = tmp_path / "store"
    healed = records[cut_twice["CALL_ID"]]
    full = real_audio(sandbox, cut_twice)
    assert healed.status == Status.TRANSCRIBED
    assert healed.checksum == sha256(full)
    assert healed.audio_bytes == len(full)
    assert (store / healed.audio_path).read_bytes() == full
    # Cut on every attempt: a download error after the whole retry budget, nothing stored.
    broken = records[cut_always["CALL_ID"]]
    assert broken.status == Status.DOWNLOAD_ERROR
    assert broken.error_code == "truncated"
    assert "truncated download" in (broken.error_message or "")
    key = raw_audio_key(broken.call_id, datetime.fromisoformat(broken.started_at))
    assert not (store / key).exists()
    assert not list(store.rglob(f"call_{broken.call_id}.*"))  # no partial file anywhere
    # A gone link is followed by its Drive file (gone too here: the faults name the file).
    gone_tries = sum(2 if r["CALL_RECORD_URL"] else 1 for r in (gone404, gone410))
    fired = portal.stats()["faults_fired"]
    assert fired == {"missing": gone_tries, "truncate": 2 + BITRIX_ATTEMPTS}
    extra = gone_tries - 2 + 2 + (BITRIX_ATTEMPTS - 1)
    assert portal.request_count("records") == len(rows) + extra
    others = [r["CALL_ID"] for r in rows[2:] if r is not cut_always]
    assert all(records[c].status == Status.TRANSCRIBED for c in others)
    csv = (store / REGISTRY).read_text(encoding="utf-8-sig")
    assert csv.count(";missing_audio;") == 2
    assert csv.count(";download_error;") == 1

    # Re-run: only the download error is fetched again; missing audio stays missing.
    portal.clear_faults()
    portal.reset_stats()
    assert materialize_range(all_assets, resources, instance, DAY1, DAY2).success
    assert portal.request_count("records") == 1
    records = by_call(ledger)
    assert records[cut_always["CALL_ID"]].status == Status.TRANSCRIBED
    assert records[cut_always["CALL_ID"]].checksum == sha256(real_audio(sandbox, cut_always))
    assert records[gone404["CALL_ID"]].status == Status.MISSING_AUDIO


# -- corrupt audio ---------------------------------------------------------------------------


class CorruptingAudio:
    """Stands in for the portal's audio cache: some calls' recordings are mangled on the
    way out (the shared on-disk cache of rendered audio is never touched)."""

    def __init__(self, real: Any, mangle: dict[str, Callable[[bytes], bytes]]) -> None:
        self.real = real
        self.mangle = mangle

    def open(self, call_id: str, duration_sec: int, stereo: bool, fmt: str = "mp3") -> bytes:
        data = self.real.get(call_id, duration_sec, stereo, fmt)
        change = self.mangle.get(call_id)
        return change(data) if change else data


def _garbage(data: bytes) -> bytes:
    return (b"\x13\x37 not audio at all " * (len(data) // 20 + 1))[: len(data)]


def _valid_header_zero_body(data: bytes) -> bytes:
    # The first frames survive; the rest of the file is zeroed, as a broken disk or an
    # interrupted upload leaves it. Its size still announces the full duration.
    return data[:2000] + bytes(len(data) - 2000)


def test_garbage_audio_and_html_instead_of_audio_end_in_download_error(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    rows = seeded_with_audio(sandbox)
    garbage, html = rows[0], rows[1]
    sandbox.portal.audio = CorruptingAudio(sandbox.portal.audio, {garbage["CALL_ID"]: _garbage})
    sandbox.portal.add_fault(
        kind="html", target="records", times=None, record_ids=[html["RECORD_FILE_ID"]]
    )

    materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    records = by_call(resources["ledger"].get())
    bad = records[garbage["CALL_ID"]]
    assert bad.status == Status.DOWNLOAD_ERROR
    assert bad.error_code == "audio_error"
    assert "not a readable audio file" in (bad.error_message or "")
    page = records[html["CALL_ID"]]
    assert page.status == Status.DOWNLOAD_ERROR
    assert page.error_code == "html_response"
    assert "HTML instead of audio" in (page.error_message or "")
    store = tmp_path / "store"
    for row in (garbage, html):
        assert not list(store.rglob(f"call_{row['CALL_ID']}.*"))  # nothing stored
    others = [r["CALL_ID"] for r in rows[2:]]
    assert all(records[c].status == Status.TRANSCRIBED for c in others)
    # The STT server never saw the bad files: exactly the other calls.
    assert sandbox.stt.stats()["requests"] == stt_requests(others)


def test_valid_header_with_corrupt_frames_ends_in_an_error_status(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    rows = seeded_with_audio(sandbox)
    victim = max(rows, key=lambda r: int(r["CALL_DURATION"]))  # a long stereo call
    assert recording_is_stereo(victim["CALL_ID"])
    sandbox.portal.audio = CorruptingAudio(
        sandbox.portal.audio, {victim["CALL_ID"]: _valid_header_zero_body}
    )

    materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    records = by_call(resources["ledger"].get())
    others = [r["CALL_ID"] for r in rows if r is not victim]
    assert all(records[c].status == Status.TRANSCRIBED for c in others)
    bad = records[victim["CALL_ID"]]
    # Found by this test: such a call used to end `transcribed` with "(речь не распознана)",
    # billed for the header's duration, and its empty language failed the period's registry.
    assert bad.status == Status.TRANSCRIPTION_ERROR, (bad.status, bad.transcript_path)
    assert bad.error_code == "audio_error"
    assert "corrupt" in (bad.error_message or "").lower()
    assert bad.transcript_path is None and not bad.cost


def test_a_call_without_speech_does_not_block_the_period_report(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    rows = sandbox.portal.rows
    # A 1-second call: too short for a word of the call script (real portals have many).
    quiet = next(r for r in rows if r["RECORD_FILE_ID"])
    quiet["CALL_DURATION"] = "1"
    sandbox.portal.set_rows(rows)

    result = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    records = by_call(resources["ledger"].get())
    assert records[quiet["CALL_ID"]].status == Status.TRANSCRIBED
    # Found by this test: the language stayed "" and the blocking registry_complete check
    # failed registry_csv (and skipped cost_report) for the whole period.
    assert records[quiet["CALL_ID"]].language
    report = tmp_path / f"store/exports/{DAY1}_{DAY2}/reports/summary_{DAY1}_{DAY2}.md"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["registry_complete"], checks
    assert result.success and report.exists()


def test_two_recordings_of_one_call_are_both_kept_under_their_own_names(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """A transferred call can have a statistic row per leg, each with its own recording.
    Found by this test: both were stored as call_<id>.mp3 and call_<id>.txt (the second
    overwrote the first) and the blocking duplicate check withheld the registry."""
    rows = sandbox.portal.rows
    first = seeded_with_audio(sandbox)[0]
    second_leg = {
        **first,
        "ID": str(max(int(r["ID"]) for r in rows) + 1),
        "RECORD_FILE_ID": int(first["RECORD_FILE_ID"]) + 900_000,
        "CALL_RECORD_URL": None,  # the second leg's file is on the Drive only
        "CALL_DURATION": str(int(first["CALL_DURATION"]) - 7),  # other audio
    }
    sandbox.portal.set_rows([*rows, second_leg])

    result = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert result.success and checks["duplicate_transcripts"], checks
    call_id = first["CALL_ID"]
    legs = [r for r in resources["ledger"].get().records(DAYS) if r.call_id == call_id]
    assert {r.record_id for r in legs} == {
        str(first["RECORD_FILE_ID"]),
        str(second_leg["RECORD_FILE_ID"]),
    }
    assert all(r.status == Status.TRANSCRIBED for r in legs), [r.status for r in legs]
    audio = {r.audio_path for r in legs}
    texts = {r.transcript_path for r in legs}
    assert len(audio) == 2 and len(texts) == 2, (audio, texts)
    store = tmp_path / "store"
    for leg in legs:
        assert leg.audio_path and leg.transcript_path
        assert Path(leg.audio_path).name.startswith(f"call_{call_id}~{leg.record_id}.")
        assert sha256((store / leg.audio_path).read_bytes()) == leg.checksum
        assert (store / leg.transcript_path).read_text("utf-8").count(str(leg.record_id)) >= 1
    # Every other call keeps the name it always had.
    others = [r for r in resources["ledger"].get().records(DAYS) if r.call_id != call_id]
    assert all(
        Path(r.transcript_path).name == f"call_{r.call_id}.txt" for r in others if r.transcript_path
    )
    registry = (store / REGISTRY).read_text("utf-8-sig")
    assert sum(line.count(f";{call_id};") for line in registry.splitlines()) == 2

    # A re-run downloads and transcribes nothing again.
    sandbox.portal.reset_stats()
    stt_before = sandbox.stt.stats()["requests"]
    again = materialize_range(all_assets, resources, instance, DAY1, DAY2)
    assert again.success
    assert sandbox.portal.request_count("records") == 0
    assert sandbox.stt.stats()["requests"] == stt_before


@pytest.mark.parametrize("role_mode", ["energy", "per_channel"])  # MP3 cut at frames / FLAC
def test_calls_cut_into_pieces_go_through_the_whole_graph(
    sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance, role_mode: str
) -> None:
    """Found by the 60-day benchmark: a FLAC piece's cut, placed in a pause, was a numpy
    float, the step's summed seconds became one, and Dagster could not store the
    materialization: the run failed after every call had been transcribed."""
    resources = fault_resources(sandbox, tmp_path, stt_role_mode=role_mode)
    resources["whisper"] = WhisperResource(
        api_key=SANDBOX_API_KEY,
        base_url=f"{sandbox.stt_url}/v1",
        retry_wait_scale=TEST_RETRY_SCALE,
        max_request_sec=30.0,  # STT_MAX_REQUEST_SEC's floor: calls of 30-40 s go in 2 pieces
    )
    result = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)
    assert result.success, failure_text(result)
    records = by_call(resources["ledger"].get()).values()
    cut = [r for r in records if (r.stt_requests or 0) > 1]
    assert cut, "no call was long enough to be cut"
    assert all(r.status == Status.TRANSCRIBED for r in records if r.audio_path)
    figures = asset_metadata(result, "transcripts")
    assert figures["stt_requests_now"] == sum(r.stt_requests or 0 for r in records)
    assert type(figures["stt_minutes_sent_now"]) is float


# -- refused recording links ------------------------------------------------------------------


def test_refused_recording_links_are_download_errors_and_the_run_completes(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """A recording host refusing a link (401/403: an expired token in it) is that call's
    problem: it is tried with a fresh link, then recorded as a download error; every other
    call is exported and the run succeeds. It used to stop the whole run."""
    rows = seeded_with_audio(sandbox)
    calls = [r["CALL_ID"] for r in rows]
    refused = rows[1]
    sandbox.portal.add_fault(
        kind="expired_token", target="records", times=None, record_ids=[refused["RECORD_FILE_ID"]]
    )

    result = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    records = by_call(resources["ledger"].get())
    bad = records[refused["CALL_ID"]]
    assert bad.status == Status.DOWNLOAD_ERROR and bad.attempts == 1
    assert bad.error_code == "http_401"
    assert "recording link refused" in (bad.error_message or "")
    assert not list((tmp_path / "store").rglob(f"call_{bad.call_id}.*"))
    others = [c for c in calls if c != bad.call_id]
    assert all(records[c].status == Status.TRANSCRIBED for c in others)
    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
    assert "raw_audio_and_transcripts" not in failed_steps
    csv = (tmp_path / "store" / REGISTRY).read_text(encoding="utf-8-sig")
    assert csv.count(";download_error;") == 1

    # The host takes the link again: the next run fetches exactly that call.
    sandbox.portal.clear_faults()
    sandbox.portal.reset_stats()
    assert materialize_range(all_assets, resources, instance, DAY1, DAY2).success
    assert by_call(resources["ledger"].get())[bad.call_id].status == Status.TRANSCRIBED


def test_stt_quota_exhausted_stops_the_stage_once_and_a_rerun_finishes(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    rows = seeded_with_audio(sandbox)
    sandbox.stt.set_faults(quota_exhausted=1000)  # the account stays out of money

    first = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    assert not first.success
    text = failure_text(first)
    assert "transcripts stopped" in text and "insufficient_quota" in text
    assert "Add credit or raise the spend limit" in text
    # Billing is not a rate limit: the stage stopped at the first refusals, nothing retried
    # (the calls already in flight each had their one request refused).
    assert sandbox.stt.stats()["requests"] <= resources["export_settings"].max_concurrency
    records = by_call(resources["ledger"].get())
    assert not [r for r in records.values() if r.status in Status.ERRORS]  # no call blamed
    assert all(records[r["CALL_ID"]].audio_path for r in rows)  # the downloads went on

    sandbox.stt.reset()
    assert materialize_range(all_assets, resources, instance, DAY1, DAY2).success
    records = by_call(resources["ledger"].get())
    assert all(records[r["CALL_ID"]].status == Status.TRANSCRIBED for r in rows)
    assert all(records[r["CALL_ID"]].attempts == 0 for r in rows)


# -- STT answers that are not to be believed (issue #28) -------------------------------------


@pytest.mark.parametrize("kind", ["html", "null_text", "truncated"])
def test_a_200_from_the_stt_that_is_no_transcription_is_an_error_never_a_text_or_a_bill(
    sandbox: Sandbox, tmp_path: Path, instance: dg.DagsterInstance, kind: str
) -> None:
    # One call at a time, so the bad answers all go to the first call sent (which one that
    # is depends on which download ends first: it is found, not assumed).
    resources = fault_resources(sandbox, tmp_path, max_concurrency=1)
    seeded_with_audio(sandbox)
    sandbox.stt.set_faults(bad_answer=STT_RETRIES + 1, bad_answer_kind=kind)

    materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    records = by_call(resources["ledger"].get())
    failed = [c for c, r in records.items() if r.status != Status.TRANSCRIBED and r.audio_path]
    assert len(failed) == 1, failed  # every other call with audio was transcribed
    victim = failed[0]
    record = records[victim]
    assert record.status == Status.TRANSCRIPTION_ERROR
    assert record.error_code == "stt_bad_answer"
    assert "asked for" in (record.error_message or "")
    assert record.transcript_path is None and record.cost is None  # no text, no bill
    store = tmp_path / "store"
    assert not [p for p in transcript_dir_files(store) if victim in p.name]
    assert sandbox.stt.stats()["by_status"]["200"] >= STT_RETRIES + 1  # retried, then given up
    report = (store / f"exports/{DAY1}_{DAY2}/reports/summary_{DAY1}_{DAY2}.md").read_text()
    assert victim in report and "stt_bad_answer" in report  # in the report's exceptions

    # A healthy server: the re-run transcribes it (downloading nothing), once.
    sandbox.stt.reset()
    assert materialize_range(all_assets, resources, instance, DAY1, DAY2).success
    record = by_call(resources["ledger"].get())[victim]
    assert record.status == Status.TRANSCRIBED and record.error_code is None
    assert sandbox.stt.stats()["transcriptions"] == 1


def test_an_stt_that_misreports_the_length_is_billed_what_was_sent_and_fails_the_period(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    sandbox.stt.set_faults(misreport_seconds=999_999)  # 11.6 days claimed for each call

    result = materialize_range(all_assets, resources, instance, DAY1, DAY2, raise_on_error=False)

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["stt_durations"].passed  # blocking: no registry-based report
    assert checks["cost_matches"].passed  # the cost is the bill of what was sent
    assert not result.success
    records = [r for r in by_call(resources["ledger"].get()).values() if r.audio_path]
    assert records and all(r.status == Status.TRANSCRIBED for r in records)
    for r in records:
        assert r.error_code == "stt_duration_mismatch"
        assert "usage.seconds 999999 s" in (r.error_message or "")
        [billed] = json.loads(r.stt_request_sec or "[]")
        assert billed == pytest.approx(r.audio_duration_sec, abs=0.001)  # what was sent
        assert r.cost is not None and r.cost <= MAX_CALL_SEC * 0.006 / 60 + 1e-9
    assert sandbox.stt.stats()["billed_seconds"] == 999_999 * len(records)  # the claim


def test_a_call_of_whole_seconds_is_billed_its_seconds_not_its_mp3_padding(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    rows = seeded_with_audio(sandbox)
    assert materialize_range(all_assets, resources, instance, DAY1, DAY2).success

    records = by_call(resources["ledger"].get())
    for row in rows:
        record, seconds = records[row["CALL_ID"]], int(row["CALL_DURATION"])
        # The recording's length by its headers, LAME delay and padding out: the call's.
        assert record.audio_duration_sec == seconds
        assert json.loads(record.stt_request_sec or "[]") == [seconds]
        assert record.cost == pytest.approx(seconds * 0.006 / 60)  # whisper-1, per second
    report = tmp_path / f"store/exports/{DAY1}_{DAY2}/reports/summary_{DAY1}_{DAY2}.md"
    text = report.read_text()
    assert "К оплате по счёту (посекундно)" in text
    assert "По формуле требований (мин. с округлением вверх)" in text


def test_token_expired_on_listing_fails_with_a_clear_message_then_recovers(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    sandbox.portal.add_fault(kind="expired_token", target="batch", times=None)
    failed = materialize_range([call_list], resources, instance, DAY1, DAY2, raise_on_error=False)
    assert not failed.success
    text = failure_text(failed)
    assert "access token expired" in text and "expired_token" in text
    assert sandbox.portal.request_count("batch") == 1  # an auth error is not retried
    ledger = resources["ledger"].get()
    assert ledger.count_rows() == 0

    sandbox.portal.clear_faults()
    assert materialize_range([call_list], resources, instance, DAY1, DAY2).success
    assert sorted(by_call(ledger)) == sorted(r["CALL_ID"] for r in sandbox.portal.rows)


# -- ledger bookkeeping ----------------------------------------------------------------------


def test_a_completed_export_is_marked_finished_in_call_exports(
    sandbox: Sandbox, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    assert materialize_range(all_assets, resources, instance, DAY1, DAY2).success
    ledger = resources["ledger"].get()
    for day in DAYS:
        export = ledger.export(day)
        assert export is not None
        # Found by this test: the rows stayed 'running' (finish_export was never called).
        assert export["status"] == "success", export
        assert export["finished_at"] is not None, export


def test_calltexts_run_with_a_database_url_reports_its_result(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calltexts_assets.ops.export_run import run_export

    layout = ChildLayout.under(tmp_path)
    env = sandbox_child_env(
        sandbox,
        layout,
        extra={"CALLTEXTS_DATABASE_URL": f"sqlite:///{tmp_path / 'pg-stand-in.sqlite'}"},
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # A day without seeded calls: the run itself is quick. Reading the ledger afterwards
    # once crashed on the unresolved dg.EnvVar of the database URL.
    assert run_export(date(2026, 10, 1), date(2026, 10, 1)) == 0
    assert (tmp_path / "pg-stand-in.sqlite").exists()


# -- kill -9 mid-stage, then a re-run --------------------------------------------------------


@dataclass
class ChildRun:
    layout: ChildLayout
    env: dict[str, str]
    log: Path

    @property
    def store(self) -> Path:
        return self.layout.home

    def ledger(self) -> Ledger:
        return Ledger(f"sqlite:///{self.layout.home / 'ledger.sqlite'}")

    def run(self) -> int:
        return run_child(FIRST, LAST, self.env, log_path=self.log)

    def start(self) -> subprocess.Popen[bytes]:
        return start_child(FIRST, LAST, self.env, log_path=self.log)


def _child(sandbox: Sandbox, root: Path, *, concurrency: int) -> ChildRun:
    layout = ChildLayout.under(root)
    env = sandbox_child_env(
        sandbox,
        layout,
        concurrency=concurrency,
    )
    return ChildRun(layout, env, root / "child.log")


def _reset(sandbox: Sandbox) -> None:
    sandbox.portal.clear_faults()
    sandbox.portal.reset_stats()
    sandbox.stt.reset()
    sandbox.stt.latency_per_audio_min_sec = 0.0


@pytest.fixture(scope="module")
def kill_sandbox(audio_cache_dir: Path) -> Iterator[Sandbox]:
    """One sandbox for the reference and the killed runs: the same portal URL, so the
    recording URLs in the registries are the same and the CSVs comparable byte for byte."""
    running = make_sandbox(audio_cache_dir)
    cap_durations(running)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def reference(kill_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> ChildRun:
    """An undisturbed export of the same seeded calls into its own root."""
    _reset(kill_sandbox)
    child = _child(kill_sandbox, tmp_path_factory.mktemp("reference"), concurrency=3)
    assert child.run() == 0, child.log.read_text()[-3000:]
    return child


def _kill_when(child: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the export ended before the kill point:\n{log.read_text()}")
        if ready():
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=60) == -signal.SIGKILL
            return
        time.sleep(0.01)
    child.kill()
    raise AssertionError("kill point not reached")


def _assert_same_as_reference(run: ChildRun, reference: ChildRun, sandbox: Sandbox) -> None:
    calls = sorted(r["CALL_ID"] for r in seeded_with_audio(sandbox))
    ledger = run.ledger()
    try:
        records = by_call(ledger)  # every call exactly once
        assert ledger.count_rows() == len(sandbox.portal.rows)
    finally:
        ledger.dispose()
    assert sorted(records) == sorted(r["CALL_ID"] for r in sandbox.portal.rows)
    assert all(records[c].status == Status.TRANSCRIBED for c in calls)
    without = [r for c, r in records.items() if c not in calls]
    assert all(r.status == Status.NO_RECORDING for r in without)
    assert all(r.attempts == 0 and r.error_code is None for r in records.values())
    # One transcript file per call; hidden temp files of an interrupted write (if any)
    # are never named like a transcript, and storage listings skip them.
    files = transcript_dir_files(run.store)
    transcripts = [p for p in files if p.name.startswith("call_") and p.suffix == ".txt"]
    litter = [p for p in files if p not in transcripts]
    assert sorted(p.name for p in transcripts) == [f"call_{c}.txt" for c in calls]
    assert all(p.name.startswith(".") for p in litter), litter
    # Same bytes as the undisturbed run: each transcript, and the registry.
    for path in transcripts:
        assert path.read_bytes() == (reference.store / path.relative_to(run.store)).read_bytes()
    # A recording the re-run adopted (stored just before the kill, its ledger row not yet
    # written) has no known source when the call offers a link and a Drive file: empty.
    unknown = {c for c, r in records.items() if r.audio_path and not r.recording_source}
    assert all(records[c].recording_url and records[c].record_id for c in unknown)
    registry = (run.store / REGISTRY).read_bytes()
    expected = (reference.store / REGISTRY).read_bytes()
    if unknown:
        assert _rows_without_source(registry, unknown) == _rows_without_source(expected, unknown)
    else:
        assert registry == expected


def _rows_without_source(registry: bytes, calls: set[str]) -> list[dict[str, str]]:
    """The registry's rows with the recording_source of `calls` blanked."""
    rows = list(csv.DictReader(io.StringIO(registry.decode("utf-8-sig")), delimiter=";"))
    for row in rows:
        if row["call_id"] in calls:
            row["recording_source"] = ""
    return rows


def _progress_at_kill(run: ChildRun) -> tuple[set[str], set[str]]:
    """Calls whose recording a re-run finds stored, and those whose STT answer it finds:
    in the ledger, or in the files alone (a kill between storing a file and writing its
    ledger row leaves the file, which the re-run adopts at no download or STT request)."""
    ledger = run.ledger()
    try:
        records = by_call(ledger)
    finally:
        ledger.dispose()
    stored = {c for c, r in records.items() if r.audio_path}
    answered = {c for c, r in records.items() if r.status == Status.TRANSCRIBED}
    for path in (run.store / "exports").rglob("call_*"):
        key = path.relative_to(run.store).as_posix()
        kind = key_kind(key)
        if kind == "raw":
            stored.add(file_id_of(key))
        elif kind == "stt_answer":
            answered.add(file_id_of(key.removesuffix(".stt.json.gz") + ".mp3"))
    return stored, answered


def test_kill_during_raw_audio_then_rerun(
    kill_sandbox: Sandbox, reference: ChildRun, tmp_path: Path
) -> None:
    sandbox = kill_sandbox
    _reset(sandbox)
    calls = [r["CALL_ID"] for r in seeded_with_audio(sandbox)]
    run = _child(sandbox, tmp_path, concurrency=3)
    # Slow downloads (0.3 s each) so that the kill lands among them.
    sandbox.portal.add_fault(kind="latency", target="records", delay_sec=0.3, times=None)

    child = run.start()
    _kill_when(child, lambda: sandbox.portal.request_count("records") >= 5, run.log)

    stored, transcribed = _progress_at_kill(run)
    assert 0 < len(stored) < len(calls), "the kill must land among the downloads"

    _reset(sandbox)
    assert run.run() == 0, run.log.read_text()[-3000:]
    # Downloads and transcriptions finished before the kill are not repeated.
    assert sandbox.portal.request_count("records") == len(calls) - len(stored)
    assert sandbox.stt.stats()["requests"] == stt_requests(
        [c for c in calls if c not in transcribed]
    )
    _assert_same_as_reference(run, reference, sandbox)


def test_kill_during_transcripts_then_rerun(
    kill_sandbox: Sandbox, reference: ChildRun, tmp_path: Path
) -> None:
    sandbox = kill_sandbox
    _reset(sandbox)
    calls = [r["CALL_ID"] for r in seeded_with_audio(sandbox)]
    run = _child(sandbox, tmp_path, concurrency=2)
    sandbox.stt.latency_per_audio_min_sec = 1.0  # a 40 s channel answers in 0.67 s

    child = run.start()
    _kill_when(child, lambda: sandbox.stt.stats()["transcriptions"] >= 6, run.log)

    stored, transcribed = _progress_at_kill(run)
    assert 0 < len(transcribed) < len(calls), "the kill must land among the transcriptions"

    _reset(sandbox)
    assert run.run() == 0, run.log.read_text()[-3000:]
    # Only what the ledger did not have went out again: stored recordings are not
    # downloaded twice, and only the calls without a transcript went to the STT.
    assert sandbox.portal.request_count("records") == len(calls) - len(stored)
    rest = [c for c in calls if c not in transcribed]
    assert sandbox.stt.stats()["requests"] == stt_requests(rest)
    _assert_same_as_reference(run, reference, sandbox)
