"""The JSONL run log: format, thread safety, and no secret or phone number on disk."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from calltexts_assets.assets.call_steps import open_for_dagster_run
from calltexts_assets.runlog.log import (
    RunLog,
    RunLogHandler,
    ScrubFilter,
    scrub,
    scrub_text,
)

RUN_ID = "c331e3ba-f0ca-416a-bec7-26077fa833b4"
STARTED = datetime(2026, 11, 25, 7, 30, 1, 123456, tzinfo=UTC)

WEBHOOK = "https://acme.bitrix24.ru/rest/17/k3yw3bh00kc0de42/voximplant.statistic.get.json"
SECRETS = [
    "k3yw3bh00kc0de42",  # webhook code
    "0auth70kenXYZ",  # ?auth= of an OAuth call
    "hunter2pass",  # user:password@
    "eyJhbGciOiJIUzI1NiJ9.payload.sig",  # Bearer token
    "sk-proj-abcdefghijklmnopqrstuvwx",  # OpenAI key
    "pgs3cr3tpw",  # password inside a database URL
    "apikeyvalue123",  # api_key= outside a URL
]
PHONES = ["+79161234567", "+7 (916) 765-43-21", "8-800-555-35-35", "79031112233"]
RAW_DIGITS = ["9161234567", "9167654321", "8005553535", "9031112233"]


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_json_object_per_line_with_the_fixed_fields(tmp_path: Path) -> None:
    with RunLog(tmp_path / "logs", RUN_ID, started_at=STARTED) as log:
        log.event("call_step", call_id="c1", stage="transcripts", duration_ms=12, outcome="ok")
        log.event("run_finished")
    assert log.path == tmp_path / "logs" / "call_export_20261125T073001_123456Z.jsonl"
    first, second = lines(log.path)
    assert list(first)[:7] == [
        "ts",
        "event",
        "call_id",
        "stage",
        "duration_ms",
        "error_code",
        "correlation_id",
    ]
    assert first["correlation_id"] == RUN_ID
    assert first["outcome"] == "ok"
    assert first["duration_ms"] == 12
    assert second == {**second, "event": "run_finished", "call_id": None, "error_code": None}
    datetime.fromisoformat(str(first["ts"]))


def test_no_secret_or_phone_number_reaches_the_file(tmp_path: Path) -> None:
    with RunLog(tmp_path, RUN_ID, started_at=STARTED) as log:
        log.event(
            "bitrix24_error",
            stage="call_list",
            error_code="expired_token",
            url=f"{WEBHOOK}?auth=0auth70kenXYZ&start=50",
            message=f"GET {WEBHOOK} failed; retry with Authorization: Bearer {SECRETS[3]}",
            proxy="http://ops:hunter2pass@proxy.local:3128",
            database="postgresql://calltexts:pgs3cr3tpw@db:5432/ledger",
            headers={"Authorization": f"Bearer {SECRETS[3]}", "X-Api-Key": SECRETS[4]},
            note=f"openai said: invalid key {SECRETS[4]}; api_key={SECRETS[6]}",
        )
        log.event(
            "call_step",
            call_id="c2",
            stage="call_list",
            phone_from=PHONES[0],
            phone_to=79031112233,
            dialogue=[f"client: call me back at {PHONES[1]}", f"or {PHONES[2]}"],
            nested={"caller": {"number": PHONES[3]}},
        )
    text = log.path.read_text(encoding="utf-8")
    for secret in SECRETS:
        assert secret not in text
    for digits in RAW_DIGITS:
        assert digits not in re.sub(r"\D", "", text.replace(RUN_ID, ""))
    # what remains is still useful: hosts, the method, the last 4 digits
    assert "acme.bitrix24.ru/rest/17/***/voximplant.statistic.get.json" in text
    assert "start=50" in text
    assert "4567" in text
    assert "3535" in text
    assert "expired_token" in text


def test_concurrent_writers_keep_lines_whole(tmp_path: Path) -> None:
    # two step processes of one run share a file; threads share one writer
    logs = [RunLog(tmp_path, RUN_ID, started_at=STARTED) for _ in range(2)]
    assert logs[0].path == logs[1].path

    def write(n: int) -> None:
        for i in range(200):
            logs[n % 2].event("call_step", call_id=f"t{n}-{i}", stage="raw_audio", pad="x" * 500)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    records = lines(logs[0].path)
    assert len(records) == 1600
    assert len({r["call_id"] for r in records}) == 1600


def test_every_step_of_a_dagster_run_writes_one_file(tmp_path: Path) -> None:
    # contexts unannotated: dagster rejects string annotations (from __future__) of them
    @dg.asset
    def first(context) -> None:  # type: ignore[no-untyped-def]
        with open_for_dagster_run(tmp_path, context) as log:
            log.event("step", stage="first")

    @dg.asset(deps=[first])
    def second(context) -> None:  # type: ignore[no-untyped-def]
        with open_for_dagster_run(tmp_path, context) as log:
            log.event("step", stage="second")

    result = dg.materialize([first, second])
    [path] = tmp_path.glob("call_export_*.jsonl")
    records = lines(path)
    assert [r["stage"] for r in records] == ["first", "second"]
    assert {r["correlation_id"] for r in records} == {result.run_id}


def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = RunLog(tmp_path, RUN_ID)
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.event("late")


def test_logging_handler_writes_scrubbed_records(tmp_path: Path) -> None:
    logger = logging.getLogger("calltexts.test_runlog")
    logger.propagate = False
    with RunLog(tmp_path, RUN_ID) as log:
        handler = RunLogHandler(log)
        logger.addHandler(handler)
        try:
            logger.warning("listing %s for %s", WEBHOOK, PHONES[0], extra={"call_id": "c7"})
            try:
                raise RuntimeError(f"download failed: {WEBHOOK}?auth=0auth70kenXYZ")
            except RuntimeError:
                logger.exception("raw_audio failed")
        finally:
            logger.removeHandler(handler)
    text = log.path.read_text(encoding="utf-8")
    assert "k3yw3bh00kc0de42" not in text and "0auth70kenXYZ" not in text
    assert "9161234567" not in text
    warning, error = lines(log.path)
    assert warning["event"] == "log" and warning["level"] == "WARNING"
    assert warning["call_id"] == "c7"
    assert "Traceback" in str(error["message"])


def test_scrub_filter_masks_records_for_any_handler() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubFilter())
    logger = logging.getLogger("calltexts.test_runlog.filter")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.error("token %s for %s", f"Bearer {SECRETS[3]}", PHONES[1])
    finally:
        logger.removeHandler(handler)
    assert SECRETS[3] not in stream.getvalue()
    assert "765-43-21" not in stream.getvalue()
    assert "4321" in stream.getvalue()


def test_scrub_keeps_what_is_not_secret() -> None:
    value = {
        "tokens": 1532,  # a count, not a token
        "duration_ms": 1234567890123,
        "date": "2026-11-24",
        "run": RUN_ID,
        "checksum": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "text": "Звонок длился 120 секунд",
        "password": "",
    }
    assert scrub(value) == value
    assert scrub_text("reached 127.0.0.1:8724 in 0.25 s") == "reached 127.0.0.1:8724 in 0.25 s"
