from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from calltexts_assets.files import storage_keys as sk
from calltexts_assets.files.storage_keys import UnsafeKeyError
from calltexts_assets.runlog.log import log_file_name

MSK = timezone(timedelta(hours=3))
STARTED = datetime(2026, 11, 3, 14, 5, tzinfo=MSK)
D1, D3 = date(2026, 11, 1), date(2026, 11, 3)

UNSAFE_IDS = [
    "",
    "..",
    ".",
    "../x",
    "a/b",
    "a\\b",
    "/etc/passwd",
    "C:\\x",
    "x\x00",
    "x\n",  # `$` in is_safe_id alone would accept this one
    " x",
    "x y",
    "-x",
    ".hidden",
    "a..b",
    "\uff0e\uff0e",  # fullwidth dots
    "a\u2215b",  # division slash
    "a\u2044b",  # fraction slash
    "ａｂｃ",  # fullwidth letters, NFKC-equal to "abc"
    "١٢٣",  # Arabic-Indic digits, matched by \d
    "abc\u202e",  # right-to-left override
    "ab\u200bc",  # zero-width space
    "x" * 200,
]


def test_per_call_keys_follow_the_layout() -> None:
    assert sk.raw_audio_key("c1", STARTED) == "exports/2026-11/raw/2026/11/03/call_c1.mp3"
    assert sk.transcript_key("c1", STARTED) == "exports/2026-11/transcripts/call_c1.txt"
    assert sk.summary_key("c1", STARTED) == "exports/2026-11/summary/call_c1.md"


def test_each_of_several_recordings_of_a_call_has_its_own_name() -> None:
    assert sk.recording_file_id("c1", "905", several=False) == "c1"  # today's names stay
    assert sk.recording_file_id("c1", "905", several=True) == "c1~905"
    assert sk.recording_file_id("c1", "", several=True) == "c1~link"
    hashed = sk.recording_file_id("c1", "link", several=True)  # not a Drive number
    assert hashed.startswith("c1~h") and hashed != "c1~link"
    key = sk.raw_audio_key("c1~905", STARTED)
    assert key == "exports/2026-11/raw/2026/11/03/call_c1~905.mp3"
    assert sk.key_kind(key) == "raw" and sk.file_id_of(key) == "c1~905"
    assert sk.file_id_of(sk.transcript_key("c1~905", STARTED)) == "c1~905"
    assert sk.key_kind(sk.summary_key("c1~905", STARTED)) == "summary"
    for bad in ("c1~", "c1~9/5", "c1~~9", "~9", "c1~9.5"):
        with pytest.raises(UnsafeKeyError):
            sk.transcript_key(bad, STARTED)


def test_call_keys_use_the_calls_own_wall_clock() -> None:
    # 00:30 Moscow on 1 Dec is still 30 Nov in UTC: the call belongs to December.
    late = datetime(2026, 12, 1, 0, 30, tzinfo=MSK)
    assert sk.raw_audio_key("c", late) == "exports/2026-12/raw/2026/12/01/call_c.mp3"
    assert sk.transcript_key("c", late.astimezone(UTC)).startswith("exports/2026-11/")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sk.raw_audio_key("c", datetime(2026, 11, 3))
    with pytest.raises(ValueError, match="timezone-aware"):
        sk.log_key(datetime(2026, 11, 3))


def test_period_keys_follow_the_layout() -> None:
    assert sk.period_label(D1, D3) == "2026-11-01_2026-11-03"
    assert sk.period_label(D1, D1) == "2026-11-01_2026-11-01"
    period = "exports/2026-11-01_2026-11-03"
    assert sk.registry_key(D1, D3) == f"{period}/registry/calls_2026-11-01_2026-11-03.csv"
    assert sk.report_key(D1, D3) == f"{period}/reports/summary_2026-11-01_2026-11-03.md"
    assert sk.report_key(D1, D3, "pdf") == f"{period}/reports/summary_2026-11-01_2026-11-03.pdf"
    assert sk.qa_sample_key(D1, D3) == f"{period}/reports/qa_sample_2026-11-01_2026-11-03.csv"


def test_period_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        sk.registry_key(D3, D1)
    with pytest.raises(TypeError):
        sk.period_label(datetime(2026, 11, 1, tzinfo=UTC), D3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="md"):
        sk.report_key(D1, D3, "html")  # type: ignore[arg-type]


def test_log_key_is_utc_and_file_name_safe() -> None:
    assert sk.log_key(STARTED) == "logs/call_export_20261103T110500_000000Z.jsonl"
    assert sk.log_key(STARTED) == f"logs/{log_file_name(STARTED)}"
    assert sk.validate_key(sk.log_key(STARTED.replace(microsecond=5)))


@pytest.mark.parametrize("call_id", UNSAFE_IDS)
def test_unsafe_call_ids_never_make_a_key(call_id: str) -> None:
    for make in (sk.raw_audio_key, sk.transcript_key, sk.summary_key):
        with pytest.raises(UnsafeKeyError):
            make(call_id, STARTED)


@pytest.mark.parametrize("call_id", [None, 12, b"abc"])
def test_non_string_ids_are_unsafe(call_id: object) -> None:
    with pytest.raises(UnsafeKeyError):
        sk.transcript_key(call_id, STARTED)  # type: ignore[arg-type]


def test_realistic_ids_are_accepted() -> None:
    for call_id in ("externalCall.5d1f7c.1700000000.123", "ABC-1_2", "9" * 128):
        key = sk.transcript_key(call_id, STARTED)
        assert sk.validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs/x",
        "a//b",
        "a/",
        "a/../b",
        "a/./b",
        "..",
        "a\\b",
        "a/b\x00",
        "a/b\n",
        "exports/\uff0e\uff0e/x",
        "x" * 1025,
    ],
)
def test_validate_key_rejects_escapes(key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        sk.validate_key(key)


def test_validate_prefix() -> None:
    for ok in ("", "exports/", "exports/2026-11/raw", "exports/2026-1", "logs/call_"):
        assert sk.validate_prefix(ok) == ok
    for bad in ("/", "../", "a/../", "a//", "exports/..", "/exports"):
        with pytest.raises(UnsafeKeyError):
            sk.validate_prefix(bad)


def test_key_kind_recognises_every_layout_entry() -> None:
    assert sk.key_kind(sk.raw_audio_key("c", STARTED)) == "raw"
    assert sk.key_kind(sk.transcript_key("c", STARTED)) == "transcript"
    assert sk.key_kind(sk.summary_key("c", STARTED)) == "summary"
    assert sk.key_kind(sk.registry_key(D1, D3)) == "registry"
    assert sk.key_kind(sk.report_key(D1, D3, "md")) == "report"
    assert sk.key_kind(sk.report_key(D1, D3, "pdf")) == "report"
    assert sk.key_kind(sk.qa_sample_key(D1, D3)) == "qa_sample"
    assert sk.key_kind(sk.log_key(STARTED)) == "log"
    for other in ("exports/2026-11/raw/notes.txt", "README.md", "exports/x/registry/calls.csv"):
        assert sk.key_kind(other) is None
    # registry file name must repeat its period directory
    assert (
        sk.key_kind("exports/2026-11-01_2026-11-03/registry/calls_2026-11-01_2026-11-04.csv")
        is None
    )
