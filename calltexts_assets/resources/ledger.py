"""The ledger as a Dagster resource: one engine per database URL and process. Whatever run
uses it journals its start (state/audit.py): runs of the CLI, the schedules and the UI alike."""

from __future__ import annotations

import threading

import dagster as dg

from calltexts_assets.state.audit import AuditJournal, run_started
from calltexts_assets.state.ledger import Ledger, LedgerUnreadable

_ledgers: dict[str, Ledger] = {}
_lock = threading.Lock()


def ledger_for(url: str) -> Ledger:
    with _lock:
        if url not in _ledgers:
            _ledgers[url] = Ledger(url)
        return _ledgers[url]


class LedgerResource(dg.ConfigurableResource):
    """SQLite file by default; PostgreSQL when CALLTEXTS_DATABASE_URL is set."""

    database_url: str
    journal_dir: str = ""  # the audit journal's JSON lines go under it (CALLTEXTS_HOME/logs)

    def get(self) -> Ledger:
        try:
            return ledger_for(self.database_url)
        except LedgerUnreadable as exc:  # the step fails with the one line that says what to do
            raise dg.Failure(description=str(exc)) from None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every process of a run gets here (one per step with the multiprocess executor):
        # the run's id makes the entry once.
        run = context.run
        event = run_started(run.run_id, run.tags) if run is not None else None
        if event is not None:
            journal = AuditJournal(self.get().engine, self.journal_dir or None)
            journal.record(event, once=f"run:{run.run_id}")
