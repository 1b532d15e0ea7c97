"""A backup restores into a fresh home, and a re-run of its period there is a no-op with the
same registry: SQLite (online backup) and PostgreSQL (pg_dump / pg_restore)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from calltexts_assets.assets import all_assets
from calltexts_assets.ops.backup import (
    MANIFEST,
    PG_DUMP,
    BackupError,
    backup,
    ledger_schema,
    restore,
)
from calltexts_assets.ops.cli import main
from calltexts_assets.resources.ledger import LedgerResource, ledger_for
from calltexts_assets.resources.storage import StorageResource
from calltexts_assets.settings import Settings, load_settings
from calltexts_assets.state.ledger import Status
from calltexts_sandbox.runtime import Sandbox
from calltexts_tests.support.databases import postgres_schema
from calltexts_tests.support.sandboxed import materialize_range, sandbox_resources

DAY1, DAY2 = "2026-11-01", "2026-11-02"
REGISTRY = f"exports/{DAY1}_{DAY2}/registry/calls_{DAY1}_{DAY2}.csv"
PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The ledger of the original home and of the restored one."""
    if request.param == "sqlite":
        yield (f"sqlite:///{tmp_path / 'a' / 'ledger.sqlite'}",) * 2  # type: ignore[misc]
        return
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    names = [f"calltexts_backup_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        urls = [sa.make_url(PG_SERVER).set(database=n).render_as_string(False) for n in names]
        yield urls[0], urls[1]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _settings(home: Path, ledger_url: str) -> Settings:
    return load_settings({"CALLTEXTS_HOME": str(home), "CALLTEXTS_DATABASE_URL": ledger_url})


def _resources(sandbox: Sandbox, root: Path, home: Path, ledger_url: str) -> dict[str, Any]:
    resources = sandbox_resources(sandbox, root)
    resources["storage"] = StorageResource(backend="local", local_root=str(home))
    resources["ledger"] = LedgerResource(database_url=ledger_url)
    return resources


def test_a_restored_backup_makes_the_rerun_a_no_op(
    sandbox: Sandbox,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    ledger_urls: tuple[str, str],
) -> None:
    original_url, restored_url = ledger_urls
    if original_url.startswith("sqlite"):
        restored_url = f"sqlite:///{tmp_path / 'b' / 'ledger.sqlite'}"
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    first = _resources(sandbox, tmp_path / "run-a", home_a, original_url)
    assert materialize_range(all_assets, first, instance, DAY1, DAY2).success

    made = backup(_settings(home_a, original_url), tmp_path / "backups")
    manifest = json.loads((made.path / MANIFEST).read_text())
    assert made.files == manifest["files"] > 0

    settings_b = _settings(home_b, restored_url)
    restore(made.path, settings_b)
    with pytest.raises(BackupError, match="already holds exports"):
        restore(made.path, settings_b)  # never over a home in use

    sandbox.portal.reset_stats()
    sandbox.stt.reset()
    again = _resources(sandbox, tmp_path / "run-b", home_b, restored_url)
    assert materialize_range(all_assets, again, instance, DAY1, DAY2).success
    assert sandbox.portal.request_count("records") == 0
    assert sandbox.stt.stats()["requests"] == 0
    assert (home_b / REGISTRY).read_bytes() == (home_a / REGISTRY).read_bytes()
    records = again["ledger"].get().records([DAY1, DAY2])
    assert records and all(r.status in (Status.TRANSCRIBED, Status.NO_RECORDING) for r in records)


def test_the_cli_backs_up_and_refuses_a_damaged_backup(
    sandbox: Sandbox,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'ledger.sqlite'}"
    assert materialize_range(
        all_assets, _resources(sandbox, tmp_path / "run", home, url), instance, DAY1, DAY2
    ).success
    monkeypatch.setenv("CALLTEXTS_HOME", str(home))
    assert main(["backup", str(tmp_path / "backups")]) == 0
    [made] = (tmp_path / "backups").iterdir()
    assert "Backed up the sqlite ledger" in capsys.readouterr().out

    (made / "ledger.sqlite").write_bytes(b"damaged")
    monkeypatch.setenv("CALLTEXTS_HOME", str(tmp_path / "fresh"))
    assert main(["restore", str(made)]) == 2
    assert "does not match its manifest" in capsys.readouterr().err
    # The refusal wrote nothing into the fresh home, a look at its journal neither: the
    # next restore there still finds it empty.
    assert main(["audit", "--since", "1d"]) == 0
    assert "No audit entries" in capsys.readouterr().out
    assert not (tmp_path / "fresh" / "ledger.sqlite").exists()


@pytest.mark.postgres
def test_a_ledger_in_a_schema_is_backed_up_and_restored_alone(tmp_path: Path) -> None:
    """A ledger kept in a schema of a shared database (`?options=-csearch_path=...`): the
    backup holds that schema only, and a restore leaves the database's other schemas as
    they are (a dump of the whole database took, and could wait on, every one of them)."""
    with postgres_schema("backup") as ledger_url, postgres_schema("neighbour") as other_url:
        ledger_for(ledger_url)  # the ledger's tables, in its schema
        neighbour = sa.create_engine(other_url)
        with neighbour.begin() as conn:
            conn.execute(sa.text("CREATE TABLE their_rows (n int)"))
            conn.execute(sa.text("INSERT INTO their_rows VALUES (1)"))
        home = tmp_path / "home"
        home.mkdir()
        made = backup(_settings(home, ledger_url), tmp_path / "backups")

        listed = subprocess.run(
            ["pg_restore", "--list", str(made.path / PG_DUMP)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        # "<id>; <oid> <oid> TABLE <schema> <name> <owner>" (and "TABLE DATA <schema> ...")
        entries = [line.split()[3:] for line in listed.splitlines() if not line.startswith(";")]
        schemas = {e[2] if e[1] == "DATA" else e[1] for e in entries if e[0] == "TABLE"}
        assert schemas == {ledger_schema(sa.make_url(ledger_url))}
        assert str(ledger_schema(sa.make_url(other_url))) not in listed

        with neighbour.begin() as conn:
            conn.execute(sa.text("INSERT INTO their_rows VALUES (2)"))
        restore(made.path, _settings(tmp_path / "restored", ledger_url))
        with neighbour.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM their_rows")).scalar() == 2
        neighbour.dispose()
