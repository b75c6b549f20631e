"""The embedded server and the migrations, against the real PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from ledger.embedded import EmbeddedPostgres
from ledger.migrations import (
    alembic_config,
    head_revision,
    schema_is_current,
    sqlalchemy_url,
    upgrade,
)
from ledger.schema import metadata


def test_server_is_durable_and_sized(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["fsync", "synchronous_commit", "full_page_writes", "max_connections",
              "listen_addresses"],),
        ).fetchall())
    assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
                        "max_connections": "200", "listen_addresses": "127.0.0.1"}


def test_pgbench_is_shipped(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.pgbench_path().exists()


async def test_fresh_database_is_at_head(fresh_dsn: str) -> None:
    assert await schema_is_current(fresh_dsn)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        assert await schema_is_current(conn)
    finally:
        await conn.close()


async def test_empty_database_is_not_current(pg_server: EmbeddedPostgres) -> None:
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE empty_schema_check")
    dsn = pg_server.dsn_for("empty_schema_check")
    assert not await schema_is_current(dsn)
    upgrade(dsn)
    assert await schema_is_current(dsn)
    upgrade(dsn)  # idempotent
    assert head_revision()


def test_migrations_match_the_sqlalchemy_schema(fresh_dsn: str) -> None:
    engine = create_engine(sqlalchemy_url(fresh_dsn), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_restart_reuses_data_dir_and_port() -> None:
    root = Path(tempfile.mkdtemp(prefix="atm-switch-pg-restart-"))
    server = EmbeddedPostgres(root / "pg")
    try:
        dsn = server.start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        port = server.port
        server.stop()
        assert not server.is_running()
        again = EmbeddedPostgres(root / "pg")
        assert again.start() == dsn
        assert again.port == port
        dsn = again.restart_immediate()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
        again.stop()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_migration_codes_match_the_enums() -> None:
    import importlib.util

    from ledger.model import OpKind, Outcome

    versions = Path(upgrade.__code__.co_filename).parent / "versions"

    def revision(name: str) -> Any:
        spec = importlib.util.spec_from_file_location(name[:-3], versions / name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    # Revisions freeze the codes as they were; a later revision adds codes, never renumbers.
    added_later = {"KEY_STALE": revision("0007_wrong_pin_key_check.py").KEY_STALE}
    for name in ("0002_functions.py", "0004_lean_authorize.py"):
        module = revision(name)
        assert module.OUTCOMES | added_later == {o.name: o.value for o in Outcome}
        assert module.OP_KINDS == {"TOMBSTONE": 0, **{k.name: k.value for k in OpKind}}


_ARGS_0006 = ("smallint, text, bytea, bigint, text, text, text, bigint, text, "
              "bigint, text, text, integer, text, text, text, date, timestamptz")
_ARGS = _ARGS_0006 + ", text"


def _authorize_definition(dsn: str, args: str = _ARGS) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_get_functiondef(%s::regprocedure)",
                           (f"ledger_authorize({args})",)).fetchone()
        overloads = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname = 'ledger_authorize'").fetchone()
    assert row is not None and overloads is not None
    assert overloads[0] == 1, "one ledger_authorize, so every call resolves to it"
    return str(row[0])


def _has_batch_function(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regproc('ledger_authorize_batch') IS NOT NULL").fetchone()
    assert row is not None
    return bool(row[0])


def test_authorize_is_one_call_with_the_tombstone_probe_and_downgrades(fresh_dsn: str) -> None:
    current = _authorize_definition(fresh_dsn)
    assert "rrn_tombstones" in current and "ledger_authorize_body" not in current
    assert "p_tpk IS DISTINCT FROM t_tpk" in current
    assert "LEFT JOIN rrn_tombstones" in current, "the probe rides the card read (0010)"
    assert "WITH claim AS" in current, "a withdrawal's claim rides its posting (0011)"
    cfg = alembic_config(fresh_dsn)
    assert _has_batch_function(fresh_dsn), "group commits call ledger_authorize_batch (0012)"
    command.downgrade(cfg, "0011")
    assert not _has_batch_function(fresh_dsn)
    assert _authorize_definition(fresh_dsn) == current, "0012 leaves ledger_authorize as it is"
    command.downgrade(cfg, "0009")
    probe = _authorize_definition(fresh_dsn)
    assert "LEFT JOIN rrn_tombstones" not in probe and "EXISTS" in probe
    command.downgrade(cfg, "0006")
    merged = _authorize_definition(fresh_dsn, _ARGS_0006)
    assert "rrn_tombstones" in merged and "t_tpk" not in merged
    command.downgrade(cfg, "0005")
    wrapper = _authorize_definition(fresh_dsn, _ARGS_0006)
    assert "rrn_tombstones" in wrapper and "ledger_authorize_body" in wrapper
    upgrade(fresh_dsn)
    assert _authorize_definition(fresh_dsn) == current
    assert _has_batch_function(fresh_dsn)


def _batch_source(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = 'ledger_authorize_batch'").fetchone()
    assert row is not None
    return str(row[0])


def test_calls_stay_inside_a_run_and_that_downgrades(fresh_dsn: str) -> None:
    current = _batch_source(fresh_dsn)
    assert "v_calls" in current and "x_conflict" in current, "0015's run keeps its calls"
    assert "t_tpk" in current, "0016's statement decides wrong PINs"
    command.downgrade(alembic_config(fresh_dsn), "0015")
    assert "t_tpk" not in _batch_source(fresh_dsn), "0015 calls for wrong PINs"
    command.downgrade(alembic_config(fresh_dsn), "0014")
    assert "v_calls" not in _batch_source(fresh_dsn), "0012's run ends at a call"
    upgrade(fresh_dsn)
    assert _batch_source(fresh_dsn) == current


_REVERSE_ARGS = "text, bytea, text, text, text, bigint, boolean"


def _reverse_definition(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_get_functiondef(%s::regprocedure)",
                           (f"ledger_reverse({_REVERSE_ARGS})",)).fetchone()
    assert row is not None
    return str(row[0])


def test_reverse_is_one_call_with_a_lean_withdrawal_path_and_downgrades(fresh_dsn: str) -> None:
    current = _reverse_definition(fresh_dsn)
    assert "rrn_tombstones" in current and "ledger_reverse_body" not in current
    assert "INSERT INTO hot_pending" in current, "the common reversal in one statement"
    cfg = alembic_config(fresh_dsn)
    command.downgrade(cfg, "0007")
    wrapper = _reverse_definition(fresh_dsn)
    assert "ledger_reverse_body" in wrapper and "INSERT INTO hot_pending" not in wrapper
    upgrade(fresh_dsn)
    assert _reverse_definition(fresh_dsn) == current


# One write per rule that 0009 moved from a CHECK constraint to a domain; each must be
# refused (23514) by the database itself, with the domains and after a downgrade alike.
_BROKEN_WRITES = (
    "UPDATE accounts SET posted_debits = -1 WHERE id = (SELECT min(id) FROM accounts)",
    "UPDATE accounts SET overdraft_limit = -5 WHERE id = (SELECT min(id) FROM accounts)",
    "UPDATE accounts SET status = 'asleep' WHERE id = (SELECT min(id) FROM accounts)",
    "UPDATE accounts SET currency = 'USD' WHERE id = (SELECT min(id) FROM accounts)",
    "UPDATE accounts SET kind = 'piggy' WHERE id = (SELECT min(id) FROM accounts)",
    "INSERT INTO journals (kind) VALUES ('gift')",
    "INSERT INTO postings (journal_id, line, account_id, amount, currency) "
    "VALUES (1, 1, 1, 0, '840')",
    "INSERT INTO authorizations (key, kind, outcome, amount) VALUES ('k|neg', 1, 0, -1)",
    "INSERT INTO reversals (key, is_advice, outcome, amount) VALUES ('k|neg', false, 0, -1)",
    "INSERT INTO cards (pan_index, pan_sealed, expiry, status, pin_method) "
    "VALUES ('\\x01', '\\x01', '3013', 'active', 'pvv')",
    "INSERT INTO cards (pan_index, pan_sealed, expiry, status, pin_method) "
    "VALUES ('\\x02', '\\x01', '3012', 'dormant', 'pvv')",
    "INSERT INTO cards (pan_index, pan_sealed, expiry, status, pin_method, pin_tries) "
    "VALUES ('\\x03', '\\x01', '3012', 'active', 'pvv', -1)",
)


def _refused_writes(dsn: str) -> list[str]:
    refused = []
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO accounts (code, kind, currency, hot) "
                     "VALUES ('RULES:1', 'checking', '840', false) ON CONFLICT DO NOTHING")
        conn.commit()
        for sql in _BROKEN_WRITES:
            try:
                conn.execute(sql)
            except psycopg.errors.CheckViolation:
                refused.append(sql)
            conn.rollback()
    return refused


def test_value_rules_hold_as_domains_and_after_a_downgrade(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn) as conn:
        checks = conn.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'c' "
            "AND conrelid = ANY('{accounts,cards,authorizations,reversals,journals,postings}'"
            "::regclass[])").fetchall()
    assert checks == [], "the hot path's tables carry their rules as domains"
    assert _refused_writes(fresh_dsn) == list(_BROKEN_WRITES)
    command.downgrade(alembic_config(fresh_dsn), "0008")
    assert _refused_writes(fresh_dsn) == list(_BROKEN_WRITES)
    upgrade(fresh_dsn)
    assert _refused_writes(fresh_dsn) == list(_BROKEN_WRITES)


def _job_languages(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT p.proname, l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
            " WHERE p.proname IN ('ledger_fold_hot', 'ledger_expire_holds')").fetchall()
    return {str(name): str(language) for name, language in rows}


def test_jobs_join_nothing_and_downgrade(fresh_dsn: str) -> None:
    assert _job_languages(fresh_dsn) == {"ledger_fold_hot": "plpgsql",
                                         "ledger_expire_holds": "plpgsql"}
    cfg = alembic_config(fresh_dsn)
    command.downgrade(cfg, "0012")
    assert _job_languages(fresh_dsn) == {"ledger_fold_hot": "sql", "ledger_expire_holds": "sql"}
    upgrade(fresh_dsn)
    assert _job_languages(fresh_dsn) == {"ledger_fold_hot": "plpgsql",
                                         "ledger_expire_holds": "plpgsql"}


def test_settings_on_top_of_the_projects_reach_the_server() -> None:
    root = Path(tempfile.mkdtemp(prefix="atm-switch-pg-settings-"))
    server = EmbeddedPostgres(root / "pg", {"track_functions": "pl",
                                            "application_name": "it's set"})
    try:
        dsn = server.start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SHOW track_functions").fetchone() == ("pl",)
            assert conn.execute("SHOW jit").fetchone() == ("off",)   # the project's own
        # The next start without them is the project's settings alone again.
        server.stop()
        plain = EmbeddedPostgres(root / "pg")
        with psycopg.connect(plain.start(), autocommit=True) as conn:
            assert conn.execute("SHOW track_functions").fetchone() == ("none",)
        plain.stop()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    with pytest.raises(ValueError):
        EmbeddedPostgres(root / "pg", {"fsync = off\nwork_mem": "1"})


def _stat_targets(dsn: str) -> dict[str, set[int]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, coalesce(a.attstattarget, -1) FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relname IN ('authorizations', 'journals', 'postings', 'reversals',"
            " 'cards') AND a.attnum > 0 AND NOT a.attisdropped").fetchall()
    targets: dict[str, set[int]] = {}
    for table, target in rows:
        targets.setdefault(str(table), set()).add(int(target))
    return targets


def test_the_ledger_logs_take_small_statistics_samples_and_downgrade(fresh_dsn: str) -> None:
    logs = {"authorizations", "journals", "postings", "reversals"}
    targets = _stat_targets(fresh_dsn)
    assert all(targets[t] == {10} for t in logs), ("every column (0014)", targets)
    assert targets["cards"] == {-1}, "updated tables keep the default"
    command.downgrade(alembic_config(fresh_dsn), "0013")
    assert set().union(*_stat_targets(fresh_dsn).values()) == {-1}
    upgrade(fresh_dsn)
    assert _stat_targets(fresh_dsn)["authorizations"] == {10}
