"""Runs whose process died (kill -9, OOM, a reboot) without telling Dagster.

`calltexts run` executes its run in its own process; killed, it leaves the run STARTED for
good, and the `stt` pool slot its step claimed is never given back: after two such kills
(the pool's limit) every later run waits forever. Each CLI run carries its host, pid and
the pid's start time as tags; a later run (and the daemon's sensor) marks the runs whose
process is gone as failed and frees their slots, and says so.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from calltexts_assets.limits.processes import pid_alive, process_start

HOST_TAG = "calltexts/host"
PID_TAG = "calltexts/pid"
PROCESS_START_TAG = "calltexts/process_start"
_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def process_tags() -> dict[str, str]:
    """Tags of a run executed by this process."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PROCESS_START_TAG: process_start(pid),
    }


@dataclass(frozen=True)
class Reaped:
    run_id: str
    pid: str  # "" for a finished run that only still held slots
    held_slots: bool


def reap_dead_runs(instance: dg.DagsterInstance) -> list[Reaped]:
    """Mark this host's runs whose process is gone as failed, and free the pool slots they
    (and any run that already finished) still hold."""
    host = socket.gethostname()
    storage = instance.event_log_storage
    holders = (
        set(storage.get_concurrency_run_ids())
        if storage.supports_global_concurrency_limits
        else set()
    )
    reaped: list[Reaped] = []
    records = instance.get_run_records(
        dg.RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: host}), limit=1000
    )
    for record in records:
        run = record.dagster_run
        pid = run.tags.get(PID_TAG, "")
        if not pid.isdigit() or pid_alive(int(pid), run.tags.get(PROCESS_START_TAG, "")):
            continue
        instance.report_run_failed(
            run, f"the process that ran it (pid {pid} on {host}) is gone: killed or crashed"
        )
        reaped.append(Reaped(run.run_id, pid, run.run_id in holders))
    finished = (
        instance.get_run_records(
            dg.RunsFilter(run_ids=list(holders), statuses=list(FINISHED_STATUSES)), limit=1000
        )
        if holders
        else []
    )
    done = {r.run_id for r in reaped}
    reaped += [
        Reaped(r.dagster_run.run_id, "", True) for r in finished if r.dagster_run.run_id not in done
    ]
    for entry in reaped:
        if entry.held_slots:
            storage.free_concurrency_slots_for_run(entry.run_id)
    return reaped


def describe(reaped: list[Reaped]) -> str:
    lines = [
        f"run {r.run_id}: its process {r.pid} is gone; marked failed"
        + ("; its pool slots freed" if r.held_slots else "")
        if r.pid
        else f"run {r.run_id}: finished, still held pool slots; freed"
        for r in reaped
    ]
    return "Cleaned up after earlier runs:\n  " + "\n  ".join(lines)
