"""Crash: PostgreSQL stops with an immediate shutdown (no checkpoint) in the middle of a
concurrent load, then restarts. Every operation that returned success must still be there,
and the books must verify clean."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from ledger_helpers import DATA_KEY, next_key, provision_card, provision_terminal, withdrawal

from ledger.embedded import EmbeddedPostgres
from ledger.errors import LedgerError
from ledger.migrations import upgrade
from ledger.model import IdempotencyKey, OpKind, Outcome, Result
from ledger.store import Ledger
from tests.conftest import temporary_server

WORKERS = 16
CARDS = 8
BALANCE = 10_000_000


@pytest.fixture
def crash_server() -> Iterator[EmbeddedPostgres]:
    """A server of its own: crashing the session's server would disturb other tests."""
    with temporary_server("atm-switch-crash-") as server:
        server.ensure_database("crash")
        yield server


async def test_immediate_shutdown_loses_nothing_acknowledged(
        crash_server: EmbeddedPostgres) -> None:
    dsn = crash_server.dsn_for("crash")
    upgrade(dsn)
    ledger = await Ledger.open(dsn, data_key=DATA_KEY, pool_size_max=WORKERS,
                               call_timeout_s=5, acquire_timeout_s=5)
    acknowledged: dict[IdempotencyKey, tuple[int, int, Result]] = {}
    unknown: list[tuple[int, IdempotencyKey, int]] = []
    stop = asyncio.Event()
    try:
        await provision_terminal(ledger)
        cards = [await provision_card(ledger, n, balance=BALANCE) for n in range(CARDS)]

        async def worker(n: int) -> None:
            card = cards[n % CARDS]
            while not stop.is_set():
                key = next_key()
                amount = 100 + n
                try:
                    result = await ledger.authorize(withdrawal(card, amount, key=key))
                except LedgerError:
                    # Outcome unknown (the connection died with the call in flight).
                    unknown.append((card, key, amount))
                    await asyncio.sleep(0.05)
                    continue
                assert result.outcome is Outcome.APPROVED
                acknowledged[key] = (card, amount, result)

        tasks = [asyncio.create_task(worker(n)) for n in range(WORKERS)]
        await asyncio.sleep(1.0)
        before_crash = len(acknowledged)
        await asyncio.to_thread(crash_server.restart_immediate)
        await asyncio.sleep(1.5)   # load continues on the restarted server
        stop.set()
        await asyncio.gather(*tasks)
        assert before_crash > 50, before_crash
        assert unknown, "the crash should have interrupted calls in flight"
        assert len(acknowledged) > before_crash, "the pool should recover after the restart"
    finally:
        await ledger.close()

    # A fresh process (new pool) looks at what survived.
    survivor = await Ledger.open(dsn, data_key=DATA_KEY, pool_size_max=4)
    try:
        for key, (_card, _amount, result) in acknowledged.items():
            found = await survivor.find_result(key)
            assert found is not None, key
            assert (found.outcome, found.approval_code, found.authorization_id) == (
                result.outcome, result.approval_code, result.authorization_id)
        # Each card's balance is its opening balance minus every approved withdrawal,
        # including the in-flight ones that did commit.
        spent = dict.fromkeys(cards, 0)
        for card, amount, _result in acknowledged.values():
            spent[card] += amount
        for card, key, amount in unknown:
            found = await survivor.find_result(key)
            if found is not None and found.outcome is Outcome.APPROVED:
                spent[card] += amount
        for card in cards:
            inquiry = await survivor.authorize(withdrawal(card, 0, kind=OpKind.BALANCE_INQUIRY))
            assert inquiry.ledger_balance == BALANCE - spent[card]
        await survivor.fold_hot_accounts()
        report = await survivor.verify()
        assert report.ok, report.render()
    finally:
        await survivor.close()

