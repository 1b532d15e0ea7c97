"""The OAuth token pair in the ledger's database: compare-and-set on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from calltexts_assets.core.token_store import TokenPair, TokenStore
from calltexts_tests.core.test_ledger import PG_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TokenStore]:
    if request.param == "sqlite":
        found = TokenStore.at(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield found
        found.dispose()
        return
    schema = f"tokens_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    found = TokenStore.at(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        yield found
    finally:
        found.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_a_pair_replaces_only_the_one_it_was_refreshed_from(store: TokenStore) -> None:
    assert store.load("p") is None
    assert store.replace("p", TokenPair("a1", "r1", 10.0), made_from="r0")  # the first pair
    assert store.replace("p", TokenPair("a2", "r2", 20.0), made_from="r1")
    # A process that refreshed from r1 too comes second: it must not overwrite r2.
    assert not store.replace("p", TokenPair("a3", "r3", 30.0), made_from="r1")
    assert store.load("p") == TokenPair("a2", "r2", 20.0)
    assert store.load("other") is None
    assert "a2" not in repr(store.load("p"))
