"""The production Dagster instance (deploy/dagster-postgres/dagster.yaml) on a real PostgreSQL.

Each test gets a fresh database `calltexts_ci_<random>`, dropped afterwards. Without a
reachable server the tests skip on a developer's machine and FAIL when CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.instance.ref import InstanceRef

from calltexts_assets.settings import load_settings, portal_today

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
PRODUCTION_YAML = REPO / "deploy" / "dagster-postgres" / "dagster.yaml"
# The driver is explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, while the
# project installs psycopg2 (as dagster-postgres does).
SERVER_URL = os.environ.get(
    "CALLTEXTS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


def unreachable(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where the Postgres tests must run."""
    message = f"PostgreSQL at {sa.make_url(SERVER_URL).render_as_string()} unreachable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty database on the server; its URL."""
    admin = sa.create_engine(SERVER_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"calltexts_ci_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unreachable(str(exc.orig).strip().splitlines()[0])
    try:
        yield sa.make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def instance(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """The production dagster.yaml, unchanged, in a fresh DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(PRODUCTION_YAML.read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", pg_url)
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        yield instance


def test_ci_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="unreachable"):
        unreachable("connection refused")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        unreachable("connection refused")


def test_production_instance_settings(instance: dg.DagsterInstance, pg_url: str) -> None:
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    concurrency = instance.get_concurrency_config()
    assert concurrency.run_queue_config is not None
    assert concurrency.run_queue_config.max_concurrent_runs == 2
    # the `stt` pool of the transcripts asset takes the default limit until set explicitly
    stt = instance.event_log_storage.get_concurrency_info("stt")
    assert stt.limit == 2
    assert instance.run_monitoring_enabled
    # the tables landed in the fresh database, not anywhere else
    engine = sa.create_engine(pg_url)
    try:
        assert "runs" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_materialize_a_call_list_partition_through_postgres(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calltexts_assets.assets.call_list import call_list
    from calltexts_assets.definitions import build_resources
    from calltexts_sandbox.runtime import sandbox_environment

    monkeypatch.setenv("CALLTEXTS_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("CALLTEXTS_DATABASE_URL", raising=False)
    day: date = portal_today() - timedelta(days=2)
    with sandbox_environment(seed=11, start=day - timedelta(days=1), days=3, calls_per_day=6):
        result = dg.materialize(
            [call_list],
            partition_key=day.isoformat(),
            instance=instance,
            resources={
                k: v
                for k, v in build_resources(load_settings()).items()
                if k in {"bitrix24", "ledger", "export_settings"}
            },
        )
    assert result.success
    [materialization] = result.asset_materializations_for_node("call_list")
    assert materialization.partition == day.isoformat()
    assert materialization.metadata["calls"].value == 6

    # what the run left is in PostgreSQL: the run and the partition's materialization
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.SUCCESS
    event = instance.get_latest_materialization_event(dg.AssetKey("call_list"))
    assert event is not None and event.run_id == run.run_id
    assert instance.get_materialized_partitions(dg.AssetKey("call_list")) == {day.isoformat()}


def test_idempotency_keys_arbitrate_races_on_postgres(pg_url: str) -> None:
    """The API's key table on the production database: one winner among racing requests."""
    from concurrent.futures import ThreadPoolExecutor

    from calltexts_assets.state.idempotency import IdempotencyStore, request_hash

    engine = sa.create_engine(pg_url, pool_size=10)
    try:
        store = IdempotencyStore(engine)
        key, hash_ = str(uuid.uuid4()), request_hash({"period_from": "2026-11-01"})
        with ThreadPoolExecutor(max_workers=10) as pool:
            claims = list(pool.map(lambda _: store.reserve(key, hash_), range(10)))
        assert sum(claim is None for claim in claims) == 1
        store.complete(key, 202, b'{"run_id":"r"}')
        stored = store.get(key)
        assert stored is not None and stored.response_body == b'{"run_id":"r"}'
    finally:
        engine.dispose()
