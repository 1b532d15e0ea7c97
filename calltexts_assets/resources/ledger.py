"""The ledger as a Dagster resource: one engine per database URL and process."""

from __future__ import annotations

import threading

import dagster as dg

from calltexts_assets.state.ledger import Ledger

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

    def get(self) -> Ledger:
        return ledger_for(self.database_url)
