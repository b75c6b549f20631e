"""Shared database fixtures: one real embedded PostgreSQL per test session.

- ``pg_server``: the session's :class:`ledger.embedded.EmbeddedPostgres`
  (in a temporary directory, stopped and removed at session end).
- ``pg_dsn``: superuser DSN of its ``postgres`` database (for admin work).
- ``template_db``: name of a database migrated to the head revision once per
  session; never connect to it (it must stay connection-free to be copied).
- ``fresh_dsn``: a DSN to a brand-new migrated database per test, cloned
  from the template with ``CREATE DATABASE … TEMPLATE`` (fast: no migrations).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledger.embedded import EmbeddedPostgres
from ledger.migrations import upgrade

TEMPLATE_DB = "atm_switch_template"
_db_numbers = itertools.count(1)


def _admin_execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]  # fixed, test-owned DDL text


@contextlib.contextmanager
def temporary_server(prefix: str) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL in a temporary directory, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root / "pg")
    try:
        server.start()
        yield server
    finally:
        try:
            # The data dir is thrown away: skip the shutdown checkpoint, which
            # would flush every test database to disk first (tens of seconds).
            server.stop(mode="immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    with temporary_server("atm-switch-pg-") as server:
        yield server


@pytest.fixture(scope="session")
def pg_dsn(pg_server: EmbeddedPostgres) -> str:
    return pg_server.dsn


@pytest.fixture(scope="session")
def template_db(pg_server: EmbeddedPostgres) -> str:
    _admin_execute(pg_server.dsn, f"CREATE DATABASE {TEMPLATE_DB}")
    upgrade(pg_server.dsn_for(TEMPLATE_DB))
    return TEMPLATE_DB


def new_database(server: EmbeddedPostgres, template: str) -> str:
    """Clone ``template`` into a new database; return its DSN."""
    name = f"t{next(_db_numbers)}_{template}"[:63]
    _admin_execute(server.dsn, f"CREATE DATABASE {name} TEMPLATE {template}")
    return server.dsn_for(name)


@pytest.fixture
def fresh_dsn(pg_server: EmbeddedPostgres, template_db: str) -> str:
    return new_database(pg_server, template_db)
