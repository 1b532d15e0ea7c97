"""`calltexts retention [--dry-run]`: the retention job of the code location, run in process."""

import dagster as dg

from calltexts_assets.definitions import build_definitions


def run_retention_job(*, dry_run: bool) -> int:
    """`calltexts retention [--dry-run]` runs the same job in process."""
    job = build_definitions().resolve_job_def("retention")
    config = {"ops": {"apply_retention": {"config": {"dry_run": dry_run}}}}
    with dg.DagsterInstance.get() as instance:
        # the tag makes the audit journal name the OS user, via the CLI (state/audit.py)
        result = job.execute_in_process(
            instance=instance, run_config=config, tags={"actor": "calltexts retention"}
        )
    print(result.output_for_node("apply_retention"))
    return 0 if result.success else 1
