"""Idempotency keys of the trigger API, kept in the ledger database.

A request first *reserves* its key by inserting a row; the primary key makes exactly one
of any number of concurrent requests win (the database arbitrates, across API processes
too). The winner launches and then completes the row with the response bytes; everyone
else replays those bytes, or learns that the key belongs to a different request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from calltexts_assets.state.ledger import create_tables

metadata = sa.MetaData()

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("key", sa.String(36), primary_key=True),  # a UUID, canonical lower-case form
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer),  # NULL while the first request is in flight
    sa.Column("response_body", sa.LargeBinary),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
)


def request_hash(body: Any) -> str:
    """Hash of the request as the client sent it (not of defaults resolved today), so the
    same empty body replayed tomorrow is still the same request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredKey:
    key: str
    request_hash: str
    status_code: int | None
    response_body: bytes | None
    created_at: datetime

    @property
    def completed(self) -> bool:
        return self.status_code is not None


class IdempotencyStore:
    def __init__(self, engine: sa.Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))
        create_tables(metadata, engine)

    def reserve(self, key: str, hash_: str) -> StoredKey | None:
        """Claim `key` for this request: None when claimed, else the row that holds it."""
        for _ in range(2):  # the holder may release the key between our insert and read
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.insert(idempotency_keys).values(
                            key=key, request_hash=hash_, created_at=self.clock()
                        )
                    )
                return None
            except sa.exc.IntegrityError:
                stored = self.get(key)
                if stored is not None:
                    return stored
        raise RuntimeError(f"idempotency key {key} keeps changing hands")

    def complete(self, key: str, status_code: int, body: bytes) -> None:
        stmt = (
            sa.update(idempotency_keys)
            .where(idempotency_keys.c.key == key)
            .values(status_code=status_code, response_body=body, completed_at=self.clock())
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def release(self, key: str) -> None:
        """Forget an unfinished reservation (the launch failed), so the client may retry."""
        stmt = sa.delete(idempotency_keys).where(
            idempotency_keys.c.key == key, idempotency_keys.c.status_code.is_(None)
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def get(self, key: str) -> StoredKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(idempotency_keys).where(idempotency_keys.c.key == key)
            ).first()
        if row is None:
            return None
        m = row._mapping
        return StoredKey(
            key=m["key"],
            request_hash=m["request_hash"],
            status_code=m["status_code"],
            response_body=bytes(m["response_body"]) if m["response_body"] is not None else None,
            created_at=m["created_at"],
        )

    def take_over(self, key: str, hash_: str, older_than: timedelta) -> bool:
        """Claim a reservation whose request died before it finished (no answer stored and
        older than `older_than`); True for the one request that wins it."""
        now = self.clock()
        stmt = (
            sa.update(idempotency_keys)
            .where(
                idempotency_keys.c.key == key,
                idempotency_keys.c.request_hash == hash_,
                idempotency_keys.c.status_code.is_(None),
                idempotency_keys.c.created_at < now - older_than,
            )
            .values(created_at=now)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def purge(self, older_than: timedelta, *, dry_run: bool = False) -> int:
        """Delete completed keys older than `older_than` (the retention job); returns how
        many were (with `dry_run`: would be) deleted."""
        cutoff = self.clock() - older_than
        expired = sa.and_(
            idempotency_keys.c.created_at < cutoff, idempotency_keys.c.status_code.is_not(None)
        )
        with self.engine.begin() as conn:
            if dry_run:
                counted = sa.select(sa.func.count()).select_from(idempotency_keys).where(expired)
                return conn.execute(counted).scalar_one()
            return conn.execute(sa.delete(idempotency_keys).where(expired)).rowcount
