"""CallSteps: outcomes recorded in the ledger, run-wide errors, the project's warnings in
the run log."""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from calltexts_assets.limits.run_errors import RunWideError
from calltexts_assets.listing.calls import call_from_row
from calltexts_assets.runlog.log import PROJECT_LOGGER, RunLog, scrubbed_logger
from calltexts_assets.state.ledger import CallRecord, Ledger, Status
from calltexts_assets.state.steps import (
    CLAIMED_ELSEWHERE,
    DONE_ELSEWHERE,
    CallSteps,
    RunStopped,
    StepOutcome,
    error_code,
)

DAY = "2026-11-02"
client_log = scrubbed_logger("calltexts_assets.clients.fake")


def _ledger(tmp_path: Path, calls: int) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    rows = [
        {
            "ID": str(n + 1),
            "CALL_ID": f"c{n}",
            "CALL_TYPE": "2",
            "CALL_DURATION": "30",
            "CALL_START_DATE": f"{DAY}T10:00:0{n}+03:00",
            "PHONE_NUMBER": "+79161234567",
            "CALL_RECORD_URL": f"https://rec.example/{n}.mp3",
        }
        for n in range(calls)
    ]
    ledger.upsert_listed(DAY, [call_from_row(row) for row in rows])
    return ledger


def _steps(ledger: Ledger, log_dir: Path, warnings: list[str]) -> CallSteps:
    started = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    return CallSteps(
        ledger,
        stage="raw_audio",
        failure_status=Status.DOWNLOAD_ERROR,
        run_id="run-1",
        open_run_log=lambda: RunLog(log_dir, "run-1", started_at=started),
        warn=warnings.append,
    )


def _events(log_dir: Path) -> list[dict]:
    [path] = log_dir.glob("call_export_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_outcomes_failures_and_project_warnings_are_recorded(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, 3)
    warnings: list[str] = []

    def work(record: CallRecord) -> StepOutcome:
        if record.call_id == "c1":
            # a client retrying: its warning names a webhook and a caller's number
            client_log.warning(
                "retrying https://p.example/rest/1/s3cr3tc0de/batch.json for +79161234567"
            )
            raise OSError("disk on fire")
        return StepOutcome("downloaded", {"status": Status.DOWNLOADED})

    tally = _steps(ledger, tmp_path / "logs", warnings).run(
        ledger.iter_records([DAY]), work, max_workers=2
    )
    assert dict(tally.outcomes) == {"downloaded": 2, "failed": 1}
    rows = {r.call_id: r for r in ledger.records([DAY])}
    assert rows["c1"].status == Status.DOWNLOAD_ERROR and rows["c1"].attempts == 1
    assert rows["c1"].error_code == "o_s_error" and rows["c0"].dagster_run_id == "run-1"
    assert warnings == ["raw_audio failed for call c1: o_s_error"]

    events = _events(tmp_path / "logs")
    [logged] = [e for e in events if e["event"] == "log"]
    assert logged["level"] == "WARNING" and logged["logger"] == "calltexts_assets.clients.fake"
    assert "s3cr3tc0de" not in logged["message"] and "+79161234567" not in logged["message"]
    assert "+7******4567" in logged["message"]
    # the handler lives as long as the stage
    assert not logging.getLogger(PROJECT_LOGGER).handlers


def test_a_run_wide_error_stops_the_stage_and_leaves_the_calls_as_they_were(
    tmp_path: Path,
) -> None:
    ledger = _ledger(tmp_path, 4)

    class Expired(RunWideError):
        pass

    def work(record: CallRecord) -> StepOutcome:
        raise Expired("token expired")

    with pytest.raises(RunStopped, match="raw_audio stopped: token expired") as info:
        _steps(ledger, tmp_path / "logs", []).run(ledger.iter_records([DAY]), work, max_workers=1)
    assert isinstance(info.value.cause, Expired)
    assert {r.status for r in ledger.records([DAY])} == {Status.LISTED}
    assert all(r.attempts == 0 for r in ledger.records([DAY]))


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full"),
        (OSError(errno.EROFS, "Read-only file system"), "read_only_filesystem"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission_denied"),
        (ValueError("x"), "value_error"),
    ],
)
def test_error_codes_name_what_an_operator_acts_on(exc: BaseException, code: str) -> None:
    assert error_code(exc) == code


def _steps_of(ledger: Ledger, run_id: str, log_dir: Path, **options: Any) -> CallSteps:
    return CallSteps(
        ledger,
        stage="transcripts",
        failure_status=Status.TRANSCRIPTION_ERROR,
        run_id=run_id,
        open_run_log=lambda: RunLog(log_dir, run_id),
        warn=lambda message: None,
        needed=lambda record: record.status == Status.LISTED,
        elsewhere_poll_sec=0.05,
        **options,
    )


def test_overlapping_runs_share_the_calls_and_do_each_once(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, 8)
    done: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work_of(run_id: str) -> Callable[[CallRecord], StepOutcome]:
        def work(record: CallRecord) -> StepOutcome:
            time.sleep(0.05)
            with lock:
                done.append((run_id, record.call_id))
            return StepOutcome("transcribed", {"status": Status.TRANSCRIBED})

        return work

    runs = {name: _steps_of(ledger, name, tmp_path / name) for name in ("run-a", "run-b")}
    with ThreadPoolExecutor(max_workers=2) as pool:
        tallies = list(
            pool.map(
                lambda name: runs[name].run(ledger.records([DAY]), work_of(name), max_workers=3),
                runs,
            )
        )
    assert sorted(call for _, call in done) == [f"c{n}" for n in range(8)]  # each once
    assert {run for run, _ in done} == {"run-a", "run-b"}  # shared
    for tally in tallies:  # each run saw every call through: done here, or by the other
        assert tally.outcomes["transcribed"] + tally.outcomes[DONE_ELSEWHERE] == 8
    assert {r.status for r in ledger.records([DAY])} == {Status.TRANSCRIBED}
    assert not ledger.claimants()


def test_a_claim_of_a_run_that_died_is_taken_over_when_it_expires(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path, 2)
    key = (DAY, "c0", "")
    expired = datetime.now(UTC) - timedelta(seconds=1)
    assert ledger.claim(key, "dead-run", expired)
    live = datetime.now(UTC) + timedelta(minutes=10)
    assert ledger.claim((DAY, "c1", ""), "slow-run", live)
    assert not ledger.claim((DAY, "c1", ""), "run-c", live)  # held, not expired

    steps = _steps_of(ledger, "run-c", tmp_path / "logs", elsewhere_wait_sec=0.3)
    tally = steps.run(
        ledger.records([DAY]),
        lambda record: StepOutcome("transcribed", {"status": Status.TRANSCRIBED}),
        max_workers=1,
    )
    assert tally.outcomes["transcribed"] == 1  # c0, whose claim had expired
    assert tally.outcomes[CLAIMED_ELSEWHERE] >= 2  # c1, looked at again until the wait ended
    statuses = {r.call_id: r.status for r in ledger.records([DAY])}
    assert statuses == {"c0": Status.TRANSCRIBED, "c1": Status.LISTED}
    assert ledger.claimants() == {"slow-run"}


def test_a_settled_call_is_neither_claimed_nor_worked_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A no-op re-run: the recordings are stored, so nothing is written per call (the claim
    and its release were 2 of the 3 ledger writes that made 60 days' no-op 22 s)."""
    ledger = _ledger(tmp_path, 6)
    claimed: list[str] = []
    real_claim = ledger.claim

    def counting_claim(key: Any, run_id: str, until: datetime) -> bool:
        claimed.append(key[1])
        return real_claim(key, run_id, until)

    monkeypatch.setattr(ledger, "claim", counting_claim)
    stored = {"c0", "c2", "c4"}
    steps = CallSteps(
        ledger,
        stage="raw_audio",
        failure_status=Status.DOWNLOAD_ERROR,
        run_id="run-1",
        open_run_log=lambda: RunLog(tmp_path, "run-1", started_at=datetime.now(UTC)),
        warn=lambda message: None,
        settled=lambda r: StepOutcome("stored") if r.call_id in stored else None,
    )
    worked: list[str] = []

    def work(record: CallRecord) -> StepOutcome:
        worked.append(record.call_id)
        return StepOutcome("downloaded", {"status": Status.DOWNLOADED})

    tally = steps.run(ledger.records([DAY]), work, max_workers=2)
    assert sorted(worked) == sorted(claimed) == ["c1", "c3", "c5"]
    assert tally.outcomes["stored"] == 3 and tally.outcomes["downloaded"] == 3
