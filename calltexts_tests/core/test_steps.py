"""CallSteps: outcomes recorded in the ledger, run-wide errors, the project's warnings in
the run log."""

from __future__ import annotations

import errno
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from calltexts_assets.core.errors import RunWideError
from calltexts_assets.core.ledger import CallRecord, Ledger, Status
from calltexts_assets.core.runlog import PROJECT_LOGGER, RunLog, scrubbed_logger
from calltexts_assets.core.steps import CallSteps, RunStopped, StepOutcome, error_code
from calltexts_assets.listing.calls import call_from_row

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
