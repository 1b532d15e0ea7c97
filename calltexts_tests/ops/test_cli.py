"""`calltexts` refuses what it cannot do before any work: one line, exit code 2."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from calltexts_assets.ops.cli import main
from calltexts_assets.settings import portal_today


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CALLTEXTS_HOME", str(home))
    return home


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"calltexts {argv[0]}: ")
    return err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["run", "--to", (portal_today() + timedelta(days=1)).isoformat()], "in the future"),
        (["run", "--to", portal_today().isoformat()], "is not complete yet"),
        (["run", "--from", "2001-01-01", "--to", "2001-01-31"], "before the first exportable"),
        (["run", "--from", "2026-02-01", "--to", "2026-01-01"], "is after period_to"),
        (["run", "--days", "0"], "--days must be at least 1"),
    ],
)
def test_a_period_that_cannot_be_exported_is_refused_before_any_work(
    home: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    err = _refused(capsys, argv)
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (home / "ledger.sqlite").exists() and not (home / "exports").exists()


def test_bad_settings_are_listed_one_line_each(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLTEXTS_CONCURRENCY", "abc")
    monkeypatch.setenv("CALLTEXTS_TIMEZONE", "Europe/Nowhere")
    err = _refused(capsys, ["run", "--days", "1"])
    assert err.splitlines()[1:] == [
        "CALLTEXTS_TIMEZONE='Europe/Nowhere': expected an IANA time zone such as Europe/Moscow",
        "CALLTEXTS_CONCURRENCY='abc': expected a whole number from 1 to 100",
    ]


def test_a_home_that_cannot_be_written_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CALLTEXTS_HOME", str(blocker / "home"))
    err = _refused(capsys, ["run", "--days", "1"])
    assert (
        err.strip()
        == f"calltexts run: CALLTEXTS_HOME={blocker / 'home'}: not writable (Not a directory)"
    )


def test_a_dead_database_is_one_line_without_its_password(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from calltexts_sandbox.server import free_port

    url = f"postgresql+psycopg2://calltexts:pgS3cret@127.0.0.1:{free_port()}/ledger"
    monkeypatch.setenv("CALLTEXTS_DATABASE_URL", url)
    err = _refused(capsys, ["run", "--days", "1"])
    assert len(err.strip().splitlines()) == 1
    assert "CALLTEXTS_DATABASE_URL: cannot connect to the database" in err
    assert "pgS3cret" not in err


def test_estimate_prints_the_cost_before_anything_is_spent(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["estimate", "--days", "2", "--sandbox-calls-per-day", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("No Bitrix24 credentials set: using the SANDBOX portal")
    assert ": 8 calls, " in out[1] and out[1].endswith(" with a recording")
    # the bill in the model's unit (gpt-transcribe in the sandbox: per second), then the formula
    assert re.fullmatch(
        r"Billable: \$[\d.]+ \([\d.,]+ RUB, billed per second\); \d+ min rounded up per call",
        out[2],
    ), out[2]
    assert out[3] == "Already transcribed: 0 calls, 0 min"
    assert out[4].startswith("Left to pay: ")
    assert not (home / "exports").exists()  # nothing was exported


def test_retention_prints_for_a_person(
    home: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One summary, the rules and the audit log: no Dagster debug lines, no Python dict."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    old = home / "exports/2025-01/raw/2025/01/02/call_a.mp3"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"ID3" + bytes(100))
    os.utime(old, (0, 0))  # modified in 1970: past every retention
    assert main(["retention", "--dry-run"]) == 0
    out, err = capfd.readouterr()
    assert out.splitlines() == [
        "Retention, dry run (nothing deleted): 1 files would be deleted; 0 API idempotency "
        "keys would be purged.",
        "Kept: recordings 90 days, transcripts and summaries 180, reports and QA samples 180, "
        "registry 365, API idempotency keys 30.",
        f"Audit log: {home / 'logs' / 'retention_audit.jsonl'}",
    ]
    assert "DEBUG" not in out + err and "{'dry_run'" not in out + err
    assert old.exists()
