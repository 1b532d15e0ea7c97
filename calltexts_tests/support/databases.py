"""Scratch databases on the test PostgreSQL server, for tests and benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

# The driver is explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, while the
# project installs psycopg2 (as dagster-postgres does).
SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_schema(prefix: str, server_url: str = SERVER_URL) -> Iterator[str]:
    """A URL whose tables land in a fresh schema of the server's database, dropped after.
    Raises sqlalchemy's OperationalError when the server cannot be reached."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        yield f"{server_url}?options=-csearch_path%3D{schema}"
    finally:
        try:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        finally:
            admin.dispose()


@contextmanager
def postgres_database(prefix: str, server_url: str = SERVER_URL) -> Iterator[str]:
    """The URL of a fresh database on the server (a Dagster instance needs its own), dropped
    afterwards with whatever is still connected to it."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()
