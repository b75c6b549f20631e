"""Schema migrations (Alembic), shipped inside the package.

``upgrade(dsn)`` brings a database to the head revision (tables and the
PL/pgSQL functions); ``schema_is_current`` tells whether it is there.
Both raise :class:`ledger.errors.LedgerUnavailable` when the database
cannot be reached.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from ledger.errors import LedgerUnavailable

_HERE = Path(__file__).resolve().parent


def revision_module(filename: str) -> ModuleType:
    """A revision file of ``versions/``, loaded by path (its name is not an
    identifier): a later revision builds on an earlier one's function text."""
    path = _HERE / "versions" / filename
    spec = importlib.util.spec_from_file_location(f"_ledger_revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Anchor = str | tuple[str, str]


def edited_function(sql: str, edits: Iterable[tuple[Anchor, str]], source: str) -> str:
    """``sql`` (an earlier revision's function text) with each anchor replaced; every
    anchor must occur exactly once, so a text that no longer matches fails loudly.

    An anchor is a text, or a pair (first, last): the span from the one occurrence
    of ``first`` through the next occurrence of ``last``, so a long passage can be
    replaced without copying it."""
    for anchor, replacement in edits:
        first, last = anchor if isinstance(anchor, tuple) else (anchor, "")
        assert sql.count(first) == 1, f"{source}'s function text changed near {first[:40]!r}"
        start = sql.index(first)
        end = sql.find(last, start + len(first))
        assert end >= 0, f"{source}'s function text changed near {last[:40]!r}"
        sql = sql[:start] + replacement + sql[end + len(last):]
    return sql


def sqlalchemy_url(dsn: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix):]
    return dsn


def alembic_config(dsn: str | None = None) -> Config:
    config = Config(str(_HERE / "alembic.ini"))
    config.set_main_option("script_location", str(_HERE))
    if dsn is not None:
        # configparser interpolation: a literal % must be doubled.
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def upgrade(dsn: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Raises LedgerUnavailable."""
    try:
        command.upgrade(alembic_config(dsn), revision)
    except sqlalchemy.exc.OperationalError as exc:
        raise LedgerUnavailable("cannot run migrations: database unreachable") from exc


async def current_revision(conn: Any) -> str | None:
    exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    if not exists:
        return None
    value = await conn.fetchval("SELECT version_num FROM alembic_version")
    return None if value is None else str(value)


async def schema_is_current(conn_or_dsn: Any) -> bool:
    """True when the database is at the head revision.

    Accepts an asyncpg connection (or pool) or a DSN. Raises LedgerUnavailable.
    """
    try:
        if isinstance(conn_or_dsn, str):
            conn = await asyncpg.connect(conn_or_dsn)
            try:
                return await current_revision(conn) == head_revision()
            finally:
                await conn.close()
        return await current_revision(conn_or_dsn) == head_revision()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise LedgerUnavailable("cannot read the schema revision") from exc
