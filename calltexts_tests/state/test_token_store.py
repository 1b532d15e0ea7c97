"""The OAuth token pair in the ledger's database: compare-and-set on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from calltexts_assets.state.token_store import TokenPair, TokenStore
from calltexts_tests.support.databases import postgres_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TokenStore]:
    if request.param == "sqlite":
        found = TokenStore.at(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield found
        found.dispose()
        return
    with postgres_schema("tokens") as url:
        found = TokenStore.at(url)
        yield found
        found.dispose()


def test_a_pair_replaces_only_the_one_it_was_refreshed_from(store: TokenStore) -> None:
    assert store.load("p") is None
    assert store.replace("p", TokenPair("a1", "r1", 10.0), made_from="r0")  # the first pair
    assert store.replace("p", TokenPair("a2", "r2", 20.0), made_from="r1")
    # A process that refreshed from r1 too comes second: it must not overwrite r2.
    assert not store.replace("p", TokenPair("a3", "r3", 30.0), made_from="r1")
    assert store.load("p") == TokenPair("a2", "r2", 20.0)
    assert store.load("other") is None
    assert "a2" not in repr(store.load("p"))
