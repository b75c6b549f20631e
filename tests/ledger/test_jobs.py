"""The background jobs (hot-account fold, hold expiry): plans that join nothing, FIFO, no loss.

Migration 0013 rewrote both so that no table statistics can give them a join:
after an analyze of a nearly empty queue the old fold compared every queued row
with every picked one. The plans are read from PostgreSQL itself (auto_explain,
sent to this session as notices), with statistics made stale on purpose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from ledger_helpers import Clock, next_key, provision_card, withdrawal

from ledger.model import OpKind, Outcome
from ledger.store import Ledger

BACKLOG = 3_000


@pytest.fixture
async def conn(fresh_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def _plans_of(conn: asyncpg.Connection, sql: str, *args: object) -> tuple[object, str]:
    """Run ``sql`` once in a transaction that is rolled back; its value and every
    plan PostgreSQL ran for it, nested statements included."""
    plans: list[str] = []

    def listen(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        plans.append(str(message.message))

    conn.add_log_listener(listen)
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("LOAD 'auto_explain'")
        for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                               ("log_level", "notice")):
            await conn.execute(f"SET LOCAL auto_explain.{setting} = {value}")
        value = await conn.fetchval(sql, *args)
    finally:
        await transaction.rollback()
        conn.remove_log_listener(listen)
    return value, "\n".join(plans)


def _joins_nothing_and_scans_nothing(plans: str) -> None:
    for node in ("Join", "Nested Loop", "Seq Scan", "CTE Scan on picked"):
        assert node not in plans, f"{node} in a job's plan:\n{plans}"


async def test_fold_deletes_by_row_address_whatever_the_statistics(
        ledger: Ledger, conn: asyncpg.Connection) -> None:
    card = await provision_card(ledger, 1, balance=1_000_000)
    assert (await ledger.authorize(withdrawal(card, 100))).outcome is Outcome.APPROVED
    queued = await conn.fetchval("SELECT count(*) FROM hot_pending")
    cash = await conn.fetchval("SELECT account_id FROM hot_pending LIMIT 1")
    # Statistics of a queue of a few rows, then a backlog they know nothing of.
    await conn.execute("ANALYZE hot_pending")
    await conn.execute(
        "INSERT INTO hot_pending (journal_id, line, account_id, amount) "
        "SELECT -g, 2, $1, -1 FROM generate_series(1, $2::integer) AS g", cash, BACKLOG)
    try:
        folded, plans = await _plans_of(conn, "SELECT ledger_fold_hot($1)", 10_000)
    finally:
        await conn.execute("DELETE FROM hot_pending WHERE journal_id < 0")
    assert folded == BACKLOG + queued
    assert "Delete on hot_pending" in plans and "Tid Scan on hot_pending" in plans, plans
    assert ("Index Scan using pk_accounts on accounts" in plans
            or "Bitmap Index Scan on pk_accounts" in plans), plans
    _joins_nothing_and_scans_nothing(plans)
    assert (await ledger.verify()).ok


async def test_fold_takes_the_oldest_first_and_keeps_the_rest(
        ledger: Ledger, conn: asyncpg.Connection) -> None:
    card = await provision_card(ledger, 2, balance=1_000_000)
    await ledger.fold_hot_accounts()   # provisioning's own postings
    for _ in range(5):
        assert (await ledger.authorize(withdrawal(card, 100))).outcome is Outcome.APPROVED
    queued = [r["journal_id"] for r in
              await conn.fetch("SELECT journal_id FROM hot_pending ORDER BY journal_id")]
    cash = await conn.fetchval("SELECT DISTINCT account_id FROM hot_pending")
    credits = "SELECT posted_credits FROM accounts WHERE id = $1"
    before = await conn.fetchval(credits, cash)
    assert await conn.fetchval("SELECT ledger_fold_hot(2)") == 2
    left = [r["journal_id"] for r in
            await conn.fetch("SELECT journal_id FROM hot_pending ORDER BY journal_id")]
    assert left == queued[2:]
    assert len(queued) == 5
    # The two oldest withdrawals of 100, credited to the ATM's cash account.
    assert await conn.fetchval(credits, cash) - before == 200
    report = await ledger.verify()
    assert report.ok and report.counts["unfolded_hot_postings"] == 3, report.render()
    assert await ledger.fold_hot_accounts() == 3
    assert (await ledger.verify()).counts["unfolded_hot_postings"] == 0


async def test_fold_refuses_to_drop_postings_of_a_missing_account(
        ledger: Ledger, conn: asyncpg.Connection) -> None:
    card = await provision_card(ledger, 3, balance=1_000_000)
    assert (await ledger.authorize(withdrawal(card, 100))).outcome is Outcome.APPROVED
    queued = await conn.fetchval("SELECT count(*) FROM hot_pending")
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("INSERT INTO hot_pending (journal_id, line, account_id, amount) "
                           "VALUES (-1, 2, -42, 100)")
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.fetchval("SELECT ledger_fold_hot(100)")
    finally:
        await transaction.rollback()
    # Nothing was deleted: the real postings are still queued and fold normally.
    assert await conn.fetchval("SELECT count(*) FROM hot_pending") == queued
    assert await ledger.fold_hot_accounts() == queued
    assert (await ledger.verify()).ok


async def test_hold_expiry_closes_by_key_whatever_the_statistics(
        ledger: Ledger, conn: asyncpg.Connection, clock: Clock) -> None:
    card = await provision_card(ledger, 4, balance=1_000_000)
    for _ in range(3):
        hold = await ledger.authorize(withdrawal(card, 1_000, key=next_key(),
                                                 kind=OpKind.HOLD))
        assert hold.outcome is Outcome.APPROVED
    await conn.execute("ANALYZE holds")
    released, plans = await _plans_of(conn, "SELECT ledger_expire_holds($1, $2)",
                                      clock.now + timedelta(days=8), 2)
    assert released == 2
    assert "Update on holds" in plans, plans
    # By primary key, read one entry at a time or as a bitmap: either way no table scan.
    assert ("Index Scan using pk_holds on holds" in plans
            or "Bitmap Index Scan on pk_holds" in plans), plans
    _joins_nothing_and_scans_nothing(plans)
    # Rolled back above; the job itself releases all three, oldest expiry first.
    assert await ledger.expire_holds(clock.now + timedelta(days=8)) == 3
    assert await conn.fetchval(
        "SELECT pending_debits FROM accounts a JOIN card_accounts ca ON ca.account_id = a.id "
        "WHERE ca.card_id = $1", card) == 0
    assert (await ledger.verify()).ok
