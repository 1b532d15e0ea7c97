"""The retention job through Dagster: dry run lists, a real run deletes exactly the expired."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from calltexts_assets.orchestration.retention_job import retention
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.state.audit import AuditEvent, AuditJournal
from calltexts_assets.state.idempotency import IdempotencyStore

DAY = 86_400


def _file(root: Path, key: str, age_days: float) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 10)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def _idempotency_keys(
    ledger_url: str, ages_days: tuple[int, ...]
) -> tuple[IdempotencyStore, list[str]]:
    """Completed API keys made `ages_days` ago, in that order."""
    now = datetime.now(UTC)
    made = []
    for age in ages_days:
        store = IdempotencyStore(
            sa.create_engine(ledger_url), clock=lambda a=age: now - timedelta(days=a)
        )
        key = str(uuid.uuid4())
        assert store.reserve(key, "h") is None
        store.complete(key, 202, b"{}")
        made.append(key)
    return IdempotencyStore(sa.create_engine(ledger_url)), made


def test_dry_run_then_real_run(tmp_path: Path) -> None:
    root = tmp_path / "store"
    old_raw = _file(root, "exports/2026-05/raw/2026/05/01/call_a1.mp3", 120)
    new_raw = _file(root, "exports/2026-11/raw/2026/11/01/call_b2.mp3", 10)
    old_text = _file(root, "exports/2026-04/transcripts/call_c3.txt", 200)
    mid_text = _file(root, "exports/2026-07/transcripts/call_d4.txt", 120)
    csv = _file(root, "exports/2026-01-01_2026-01-02/registry/calls_2026-01-01_2026-01-02.csv", 300)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    store, keys = _idempotency_keys(ledger_url, ages_days=(45, 31, 2))
    resources = {
        "storage": StorageResource(backend="local", local_root=str(root)),
        "ledger": LedgerResource(database_url=ledger_url),
        "export_settings": ExportSettings(
            log_dir=str(tmp_path / "logs"), work_dir=str(tmp_path / "tmp")
        ),
    }
    with dg.instance_for_test() as instance:
        dry = retention.execute_in_process(resources=resources, instance=instance)
        assert dry.output_for_node("apply_retention")["would_delete"] == 2
        assert dry.output_for_node("apply_retention")["idempotency_keys_purged"] == 2
        assert all(p.exists() for p in (old_raw, new_raw, old_text, mid_text, csv))
        assert all(store.get(k) for k in keys)

        config = {"ops": {"apply_retention": {"config": {"dry_run": False}}}}
        real = retention.execute_in_process(
            resources=resources, instance=instance, run_config=config
        )
    assert real.output_for_node("apply_retention")["deleted"] == 2
    assert real.output_for_node("apply_retention")["idempotency_keys_purged"] == 2
    assert [store.get(k) is not None for k in keys] == [False, False, True]
    assert not old_raw.exists() and not old_text.exists()
    assert new_raw.exists() and mid_text.exists() and csv.exists()
    audit = [
        json.loads(line)
        for line in (tmp_path / "logs/retention_audit.jsonl").read_text().splitlines()
    ]
    assert [a["action"] for a in audit].count("would_delete") == 2
    assert [a["action"] for a in audit].count("delete") == 2


def test_each_sweep_is_journalled_and_the_journal_kept_365_days(tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    engine = sa.create_engine(ledger_url)
    now = datetime.now(UTC)
    old = AuditJournal(engine, tmp_path / "logs", clock=lambda: now - timedelta(days=400))
    old.record(AuditEvent("backup", "someone", "cli", "done"))
    kept = AuditJournal(engine, tmp_path / "logs", clock=lambda: now - timedelta(days=300))
    kept.record(AuditEvent("restore", "someone", "cli", "done"))
    resources = {
        "storage": StorageResource(backend="local", local_root=str(tmp_path / "store")),
        "ledger": LedgerResource(database_url=ledger_url),
        "export_settings": ExportSettings(
            log_dir=str(tmp_path / "logs"), work_dir=str(tmp_path / "tmp")
        ),
    }
    config = {"ops": {"apply_retention": {"config": {"dry_run": False}}}}
    with dg.instance_for_test() as instance:
        result = retention.execute_in_process(
            resources=resources,
            instance=instance,
            run_config=config,
            tags={"dagster/schedule_name": "weekly_retention"},
        )
    assert result.output_for_node("apply_retention")["audit_entries_pruned"] == 1
    events = AuditJournal(engine, None).since(now - timedelta(days=1000))
    assert [e.event for e in events] == ["restore", "retention"]
    sweep = events[-1]
    assert (sweep.actor, sweep.via, sweep.outcome) == ("weekly_retention", "schedule", "done")
    assert sweep.run_id == result.run_id and sweep.detail["audit_entries_pruned"] == 1
    months = sorted(p.name for p in (tmp_path / "logs" / "audit").glob("*.jsonl"))
    assert f"audit_{(now - timedelta(days=400)):%Y-%m}.jsonl" not in months
    assert f"audit_{now:%Y-%m}.jsonl" in months
