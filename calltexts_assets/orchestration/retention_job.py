"""The retention job: delete exports past their age limits, with an audit log."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from calltexts_assets.orchestration.retention import RetentionRules, run_retention
from calltexts_assets.resources.export_settings import ExportSettings
from calltexts_assets.resources.ledger import LedgerResource
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.state.audit import AuditEvent, AuditJournal, run_actor
from calltexts_assets.state.idempotency import IdempotencyStore


class RetentionConfig(dg.Config):
    dry_run: bool = True  # the safe default: list what would go
    raw_days: int = 90
    transcript_days: int = 180  # transcripts and summaries
    report_days: int = 180  # reports and QA samples
    registry_days: int = 365
    idempotency_key_days: int = 30  # answers the API replays for a retried request
    audit_days: int = 365  # the audit journal, as long as the registry


@dg.op(
    description="Deletes raw audio after 90 days, transcripts and reports after 180, CSV "
    "after 365 (configurable), recording each deletion in logs/retention_audit.jsonl; and "
    "the API's idempotency keys after 30 days and the audit journal after 365; the sweep "
    "itself is journalled (`calltexts audit`)."
)
def apply_retention(
    context: dg.OpExecutionContext,
    config: RetentionConfig,
    storage: StorageResource,
    ledger: LedgerResource,
    export_settings: ExportSettings,
) -> dict:
    rules = RetentionRules(
        raw_days=config.raw_days,
        transcript_days=config.transcript_days,
        report_days=config.report_days,
        registry_days=config.registry_days,
    )
    audit = Path(export_settings.log_dir) / "retention_audit.jsonl"
    result = run_retention(storage.get(), datetime.now(UTC), audit, rules, config.dry_run)
    engine = ledger.get().engine
    keys = IdempotencyStore(engine).purge(
        timedelta(days=config.idempotency_key_days), dry_run=config.dry_run
    )
    journal = AuditJournal(engine, export_settings.log_dir)
    pruned = journal.prune(timedelta(days=config.audit_days), dry_run=config.dry_run)
    summary = {
        "dry_run": result.dry_run,
        "deleted": len(result.deleted),
        "would_delete": len(result.would_delete),
        "failed": len(result.failed),
        "freed_bytes": result.freed_bytes,
        "idempotency_keys_purged": keys,
        "audit_entries_pruned": pruned,
        "audit_log": str(audit),
    }
    via, actor = run_actor(context.run.tags)
    outcome = "dry run" if result.dry_run else ("failed" if result.failed else "done")
    counts = {k: v for k, v in summary.items() if k not in ("dry_run", "audit_log")}
    journal.record(
        AuditEvent("retention", actor, via, outcome, run_id=context.run_id, detail=counts)
    )
    context.log.info(f"retention: {summary}")
    if result.failed:
        raise dg.Failure(f"{len(result.failed)} deletions failed; see {audit}", metadata=summary)
    return summary


@dg.job(description="Retention of exported files (dry run unless configured otherwise).")
def retention() -> None:
    apply_retention()
