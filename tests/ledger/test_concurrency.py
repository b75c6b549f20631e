"""Concurrency against the real database: no overdraft, no surfaced serialization failure."""

from __future__ import annotations

import asyncio

from ledger_helpers import DATA_KEY, provision_card, withdrawal

from ledger.errors import RetriesExhausted
from ledger.model import OpKind, Outcome
from ledger.store import Ledger

TASKS = 32


async def test_32_tasks_on_one_card_never_overdraw(ledger: Ledger, fresh_dsn: str) -> None:
    card = await provision_card(ledger, 1, balance=10_000)
    # Four independent ledgers (as four switch processes would be): the per-card
    # lock of one process cannot help, only the database keeps the books straight.
    others = [await Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=8,
                                retries_max=100) for _ in range(3)]
    ledgers = [ledger, *others]
    outcomes: list[Outcome] = []
    exhausted = 0

    async def worker(n: int) -> None:
        nonlocal exhausted
        for _ in range(3):
            try:
                result = await ledgers[n % len(ledgers)].authorize(withdrawal(card, 500))
            except RetriesExhausted:
                exhausted += 1
                continue
            outcomes.append(result.outcome)

    try:
        await asyncio.gather(*(worker(n) for n in range(TASKS)))
    finally:
        for other in others:
            await other.close()
    approved = outcomes.count(Outcome.APPROVED)
    assert approved == 20, (approved, exhausted)
    assert set(outcomes) <= {Outcome.APPROVED, Outcome.INSUFFICIENT_FUNDS}
    balance = await ledger.authorize(withdrawal(card, 0, kind=OpKind.BALANCE_INQUIRY))
    assert (balance.ledger_balance, balance.available_balance) == (0, 0)
    report = await ledger.verify()
    assert report.ok, report.render()


async def test_32_cards_through_one_atm_surface_no_serialization_failure(
        fresh_dsn: str) -> None:
    retries: list[str] = []
    ledger = await Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=TASKS,
                               on_retry=retries.append)
    try:
        from ledger_helpers import provision_terminal

        await provision_terminal(ledger)
        cards = [await provision_card(ledger, 100 + n, balance=1_000_000) for n in range(TASKS)]

        async def worker(card: int) -> list[Outcome]:
            return [(await ledger.authorize(withdrawal(card, 1_000, fee=10))).outcome
                    for _ in range(20)]

        results = await asyncio.gather(*(worker(card) for card in cards))
        assert all(outcome is Outcome.APPROVED for batch in results for outcome in batch)
        # Retries may happen (they are invisible to the ATM) but must stay rare:
        # cards do not share rows, and the hot ATM account is append-only.
        assert len(retries) <= TASKS * 20 // 20, retries
        report = await ledger.verify()
        assert report.ok, report.render()
    finally:
        await ledger.close()


async def test_fold_and_verify_while_withdrawals_run(ledger: Ledger) -> None:
    cards = [await provision_card(ledger, 200 + n, balance=1_000_000) for n in range(16)]
    stop = asyncio.Event()
    approved = 0

    async def worker(card: int) -> None:
        nonlocal approved
        while not stop.is_set():
            result = await ledger.authorize(withdrawal(card, 100, fee=1))
            assert result.outcome is Outcome.APPROVED
            approved += 1

    async def housekeeping() -> list[bool]:
        verdicts = []
        for _ in range(6):
            await asyncio.sleep(0.1)
            await ledger.fold_hot_accounts()
            verdicts.append((await ledger.verify()).ok)
        stop.set()
        return verdicts

    *_, verdicts = await asyncio.gather(*(worker(card) for card in cards), housekeeping())
    assert all(verdicts), verdicts
    assert approved > 0
    await ledger.fold_hot_accounts()
    report = await ledger.verify()
    assert report.ok and report.counts["unfolded_hot_postings"] == 0, report.render()
