from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from calltexts_assets.clients.s3 import S3Storage
from calltexts_assets.clients.storage import LocalStorage, ObjectInfo
from calltexts_assets.files import storage_keys as sk
from calltexts_assets.orchestration.retention import (
    Deletion,
    RetentionRules,
    apply_retention,
    plan_retention,
    run_retention,
)

if TYPE_CHECKING:  # imported for real by pytest_plugins
    from calltexts_tests.s3_server import S3Server


NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
CALL_AT = datetime(2026, 11, 3, 14, 5, tzinfo=timezone(timedelta(hours=3)))
D1, D3 = date(2026, 11, 1), date(2026, 11, 3)

# key -> age in days at NOW; the comment says whether the default rules expire it
AGES = {
    sk.raw_audio_key("old", CALL_AT): 91,  # expired (90)
    sk.raw_audio_key("new", CALL_AT): 89,
    sk.transcript_key("old", CALL_AT): 181,  # expired (180)
    sk.transcript_key("new", CALL_AT): 100,
    sk.summary_key("old", CALL_AT): 181,  # expired (follows transcripts)
    sk.report_key(D1, D3, "md"): 181,  # expired (180)
    sk.report_key(D1, D3, "pdf"): 179,
    sk.qa_sample_key(D1, D3): 200,  # expired (follows reports)
    sk.registry_key(D1, D3): 300,
    sk.registry_key(D1, D1): 366,  # expired (365)
    sk.log_key(CALL_AT): 400,  # expired (365)
    "exports/2026-11/raw/notes.txt": 1000,  # not a layout key: never touched
}
EXPIRED = sorted(
    [
        sk.raw_audio_key("old", CALL_AT),
        sk.transcript_key("old", CALL_AT),
        sk.summary_key("old", CALL_AT),
        sk.report_key(D1, D3, "md"),
        sk.qa_sample_key(D1, D3),
        sk.registry_key(D1, D1),
        sk.log_key(CALL_AT),
    ]
)


def _backdated_storage(root: Path) -> LocalStorage:
    storage = LocalStorage(root)
    for key, days in AGES.items():
        storage.write_bytes(key, key.encode())
        stamp = (NOW - timedelta(days=days)).timestamp()
        os.utime(root / key, (stamp, stamp))
    return storage


def _audit(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_plan_uses_the_rule_of_each_kind(tmp_path: Path) -> None:
    storage = _backdated_storage(tmp_path / "root")
    plan = plan_retention(storage.list(), NOW)
    assert [d.key for d in plan] == EXPIRED
    by_key = {d.key: d for d in plan}
    raw = by_key[sk.raw_audio_key("old", CALL_AT)]
    assert (raw.kind, raw.age_days, raw.size) == ("raw", 91, len(raw.key))
    assert by_key[sk.summary_key("old", CALL_AT)].kind == "summary"


def test_plan_boundaries_and_disabled_rules() -> None:
    key = sk.raw_audio_key("c", CALL_AT)
    exactly = ObjectInfo(key, 1, NOW - timedelta(days=90))
    just_over = ObjectInfo(key, 1, NOW - timedelta(days=90, seconds=1))
    assert plan_retention([exactly], NOW) == []
    assert [d.age_days for d in plan_retention([just_over], NOW)] == [90]
    assert plan_retention([just_over], NOW, RetentionRules(raw_days=None)) == []
    with pytest.raises(ValueError, match="aware"):
        plan_retention([exactly], datetime(2027, 6, 1))


def test_dry_run_deletes_nothing_and_logs_everything(tmp_path: Path) -> None:
    storage = _backdated_storage(tmp_path / "root")
    before = [o.key for o in storage.list()]
    audit = tmp_path / "audit" / "retention.jsonl"
    result = apply_retention(storage, plan_retention(storage.list(), NOW), True, audit)
    assert [o.key for o in storage.list()] == before
    assert [d.key for d in result.would_delete] == EXPIRED
    assert result.deleted == [] and result.failed == []
    lines = _audit(audit)
    assert [line["action"] for line in lines] == ["would_delete"] * len(EXPIRED)
    assert lines[0]["uri"] == str(tmp_path / "root" / EXPIRED[0])


def test_real_run_deletes_exactly_the_expired(tmp_path: Path) -> None:
    storage = _backdated_storage(tmp_path / "root")
    audit = tmp_path / "retention.jsonl"
    audit.write_text('{"earlier": "entry"}\n', encoding="utf-8")
    result = run_retention(storage, NOW, audit, dry_run=False)
    assert [d.key for d in result.deleted] == EXPIRED
    assert result.freed_bytes == sum(len(k) for k in EXPIRED)
    assert sorted(o.key for o in storage.list()) == sorted(set(AGES) - set(EXPIRED))
    lines = _audit(audit)
    assert lines[0] == {"earlier": "entry"}  # appended, not rewritten
    assert [line["key"] for line in lines[1:]] == EXPIRED
    assert {line["action"] for line in lines[1:]} == {"delete"}
    # a second sweep finds nothing left to do
    assert run_retention(storage, NOW, audit, dry_run=False).deleted == []


def test_hand_made_plan_cannot_reach_other_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    storage.write_bytes("exports/2026-11/raw/notes.txt", b"keep")
    plan = [
        Deletion("../precious.txt", "raw", 999),
        Deletion("exports/2026-11/raw/notes.txt", "raw", 999),
        Deletion(sk.transcript_key("c", CALL_AT), "raw", 999),  # wrong kind
    ]
    result = apply_retention(storage, plan, False, tmp_path / "audit.jsonl")
    assert len(result.failed) == 3 and result.deleted == []
    assert outside.read_text() == "keep"
    assert storage.exists("exports/2026-11/raw/notes.txt")
    assert {line["action"] for line in _audit(tmp_path / "audit.jsonl")} == {"refused"}


def test_a_failing_delete_does_not_stop_the_sweep(tmp_path: Path) -> None:
    class Flaky(LocalStorage):
        def delete(self, key: str) -> None:
            if "transcripts" in key:
                raise PermissionError("read-only")
            super().delete(key)

    _backdated_storage(tmp_path / "root")
    storage = Flaky(tmp_path / "root")
    result = run_retention(storage, NOW, tmp_path / "audit.jsonl", dry_run=False)
    assert [d.key for d, _ in result.failed] == [sk.transcript_key("old", CALL_AT)]
    assert len(result.deleted) == len(EXPIRED) - 1
    assert storage.exists(sk.transcript_key("old", CALL_AT))
    failed = [e for e in _audit(tmp_path / "audit.jsonl") if e["action"] == "delete_failed"]
    assert "read-only" in str(failed[0]["error"])


def test_retention_on_s3(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    # S3 keeps its own LastModified, so move `now` forward instead of back-dating objects.
    storage = S3Storage(s3_server.client(), s3_bucket, prefix="calltexts")
    raw, text = sk.raw_audio_key("c1", CALL_AT), sk.transcript_key("c1", CALL_AT)
    storage.write_bytes(raw, b"mp3")
    storage.write_text(text, "text")
    later = datetime.now(UTC) + timedelta(days=100)
    audit = tmp_path / "audit.jsonl"

    dry = run_retention(storage, later, audit, dry_run=True)
    assert [d.key for d in dry.would_delete] == [raw]
    assert storage.exists(raw)

    real = run_retention(storage, later, audit, dry_run=False)
    assert [d.key for d in real.deleted] == [raw]
    assert not storage.exists(raw) and storage.exists(text)
    lines = _audit(audit)
    assert [line["action"] for line in lines] == ["would_delete", "delete"]
    assert lines[1]["uri"] == f"s3://{s3_bucket}/calltexts/{raw}"
