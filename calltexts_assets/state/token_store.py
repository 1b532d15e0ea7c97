"""The current OAuth token pair of a portal, kept in the ledger's database.

Bitrix24 refresh tokens are single-use: each refresh returns a new pair and the old refresh
token stops working. The pair is therefore state, not configuration: every run (and every
process of a run) reads the newest one here, and a refresh replaces it only if nobody has
replaced it since (compare-and-set on the refresh token it was made from).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from calltexts_assets.state.ledger import create_tables

_metadata = sa.MetaData()

oauth_tokens = sa.Table(
    "oauth_tokens",
    _metadata,
    sa.Column("portal", sa.String(255), primary_key=True),
    sa.Column("access_token", sa.Text, nullable=False),
    sa.Column("refresh_token", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float),  # Unix time; None when unknown
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_at: float | None = None

    def __repr__(self) -> str:  # never print the tokens
        return f"TokenPair(expires_at={self.expires_at})"


class TokenStore:
    """Token pairs by portal in a SQLite or PostgreSQL database (the ledger's)."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        create_tables(_metadata, engine)

    @classmethod
    def at(cls, url: str) -> TokenStore:
        connect_args = (
            {"check_same_thread": False, "timeout": 30} if url.startswith("sqlite") else {}
        )
        return cls(sa.create_engine(url, connect_args=connect_args))

    def load(self, portal: str) -> TokenPair | None:
        c = oauth_tokens.c
        stmt = sa.select(c.access_token, c.refresh_token, c.expires_at).where(c.portal == portal)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return TokenPair(*row) if row else None

    def replace(self, portal: str, pair: TokenPair, *, made_from: str) -> bool:
        """Store `pair` if the stored one is still the one refreshed with `made_from` (or
        there is none); False when another process stored a newer pair first."""
        values = {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "expires_at": pair.expires_at,
            "updated_at": datetime.now(UTC),
        }
        c = oauth_tokens.c
        with self.engine.begin() as conn:
            updated = conn.execute(
                sa.update(oauth_tokens)
                .where(c.portal == portal, c.refresh_token == made_from)
                .values(**values)
            ).rowcount
            if updated:
                return True
            if conn.execute(sa.select(c.portal).where(c.portal == portal)).first():
                return False
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(oauth_tokens).values(portal=portal, **values))
        except sa.exc.IntegrityError:  # another process stored the first pair meanwhile
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
