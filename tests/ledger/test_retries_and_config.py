"""Retries on serialization failure, their hook and bound; DSN resolution; unreachable DB."""

from __future__ import annotations

import asyncio
import pickle
import shutil
import tempfile
from pathlib import Path

import asyncpg
import pytest
from ledger_helpers import DATA_KEY, provision_card, withdrawal

from ledger.database import DATABASE_URL_ENV, resolve_dsn
from ledger.errors import LedgerUnavailable, RetriesExhausted
from ledger.migrations import schema_is_current
from ledger.model import Outcome
from ledger.store import Ledger


async def _conflicting_call(dsn: str, ledger: Ledger, card: int) -> Outcome:
    """Hold the account's row while the call starts, commit under it: its SERIALIZABLE
    snapshot predates our update, so its own update fails with 40001."""
    blocker = await asyncpg.connect(dsn)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("UPDATE accounts SET overdraft_limit = overdraft_limit "
                              "WHERE code = 'CH:acct-1-20'")
        call = asyncio.ensure_future(ledger.authorize(withdrawal(card, 100)))
        await asyncio.sleep(0.3)
        assert not call.done(), "the call should be waiting on the row lock"
        await transaction.commit()
        return (await call).outcome
    finally:
        await blocker.close()


async def test_serialization_failure_is_retried_and_reported(ledger: Ledger,
                                                             fresh_dsn: str) -> None:
    card = await provision_card(ledger, 1)
    reasons: list[str] = []
    retrying = await Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=2,
                                 on_retry=reasons.append)
    try:
        assert await _conflicting_call(fresh_dsn, retrying, card) is Outcome.APPROVED
    finally:
        await retrying.close()
    assert reasons == ["serialization"]
    assert (await ledger.verify()).ok


async def test_retries_are_bounded(ledger: Ledger, fresh_dsn: str) -> None:
    card = await provision_card(ledger, 1)
    strict = await Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=2, retries_max=0)
    try:
        with pytest.raises(RetriesExhausted) as caught:
            await _conflicting_call(fresh_dsn, strict, card)
    finally:
        await strict.close()
    assert (caught.value.attempts, caught.value.sqlstate) == (1, "40001")
    # It crosses a process boundary whole (the benchmark's workers report it).
    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 (our own bytes)
    assert (copy.attempts, copy.sqlstate, str(copy)) == (1, "40001", str(caught.value))


async def test_unreachable_database_is_ledger_unavailable() -> None:
    with pytest.raises(LedgerUnavailable):
        await Ledger.open("postgresql://nobody@127.0.0.1:1/none", data_key=DATA_KEY)


def test_dsn_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://env/db")
    assert resolve_dsn("postgresql://config/db", Path("unused")) == ("postgresql://env/db", None)
    monkeypatch.delenv(DATABASE_URL_ENV)
    assert resolve_dsn("postgresql://config/db", Path("unused")) == (
        "postgresql://config/db", None)


async def test_embedded_server_when_nothing_is_configured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    root = Path(tempfile.mkdtemp(prefix="atm-switch-resolve-"))
    try:
        dsn, server = resolve_dsn(None, root / "pg")
        assert server is not None
        try:
            assert dsn.endswith("/atm_switch")
            assert not await schema_is_current(dsn)
        finally:
            server.stop(mode="immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_provisioning_transactions_that_fail_together_each_get_their_error(
        ledger: Ledger) -> None:
    # Cards provisioned at once conflict (SERIALIZABLE) and are retried, and statements
    # that fail at once each raise their own error: none is lost on the way out of
    # its transaction. (A build that compiled this module with mypyc lost them: the
    # tasks never finished. See BENCHMARKS.md, 2026-12-05.)
    cards = await asyncio.wait_for(
        asyncio.gather(*(provision_card(ledger, n) for n in range(400, 408))), 60)
    assert len(set(cards)) == 8

    async def divide_by_zero(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT 1/0")

    failed = await asyncio.wait_for(asyncio.gather(
        *(ledger._transaction(divide_by_zero) for _ in range(4)), return_exceptions=True), 30)
    assert [type(e).__name__ for e in failed] == ["LedgerError"] * 4
    assert all("22012" in str(e) for e in failed)
