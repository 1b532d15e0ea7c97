"""`calltexts retention [--dry-run]`: the retention job of the code location, run in process."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from calltexts_assets.definitions import build_definitions
from calltexts_assets.orchestration.retention_job import RetentionConfig

# Dagster's console logger would print every event of the job at DEBUG: the person at the
# terminal reads the lines below; the run's events stay in the instance.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def retention_lines(summary: Mapping[str, Any], rules: RetentionConfig) -> list[str]:
    """What a retention run did (or would do, in a dry run), for a person."""
    mb = summary["freed_bytes"] / 1_000_000
    if summary["dry_run"]:
        head = (
            f"Retention, dry run (nothing deleted): {summary['would_delete']} files would be "
            f"deleted; {summary['idempotency_keys_purged']} API idempotency keys would be purged."
        )
    else:
        head = (
            f"Retention: {summary['deleted']} files deleted ({mb:.1f} MB freed), "
            f"{summary['failed']} failed; {summary['idempotency_keys_purged']} API "
            "idempotency keys purged."
        )
    return [
        head,
        f"Kept: recordings {rules.raw_days} days, transcripts and summaries "
        f"{rules.transcript_days}, reports and QA samples {rules.report_days}, registry "
        f"{rules.registry_days}, API idempotency keys {rules.idempotency_key_days}.",
        f"Audit log: {summary['audit_log']}",
    ]


def run_retention_job(*, dry_run: bool) -> int:
    """`calltexts retention [--dry-run]` runs the same job in process."""
    job = build_definitions().resolve_job_def("retention")
    config = {"ops": {"apply_retention": {"config": {"dry_run": dry_run}}}, **_QUIET}
    with dg.DagsterInstance.get() as instance:
        # the tag makes the audit journal name the OS user, via the CLI (state/audit.py)
        result = job.execute_in_process(
            instance=instance,
            run_config=config,
            tags={"actor": "calltexts retention"},
            raise_on_error=False,
        )
    if not result.success:
        print("Retention failed: see the run in the Dagster UI and the audit log.")
        return 1
    for line in retention_lines(result.output_for_node("apply_retention"), RetentionConfig()):
        print(line)
    return 0
