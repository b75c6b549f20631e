"""Authorization through the real PL/pgSQL functions: outcomes, replays, PIN tries, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from ledger_helpers import (
    CURRENCY,
    DATA_KEY,
    TERMINAL,
    TERMINAL_TPK,
    Clock,
    next_key,
    pan_for,
    provision_card,
    provision_terminal,
    withdrawal,
)

from ledger.errors import InvalidOperation, ProvisioningError
from ledger.model import CardLimits, CardStatus, OpKind, Outcome
from ledger.store import Ledger


async def test_withdrawal_posts_and_returns_balances(ledger: Ledger) -> None:
    card = await provision_card(ledger, 1, balance=50_000)
    result = await ledger.authorize(withdrawal(card, 20_000))
    assert result.outcome is Outcome.APPROVED
    assert not result.replayed
    assert result.approval_code is not None and len(result.approval_code) == 6
    assert result.account_type == "20"
    assert result.currency == CURRENCY
    assert (result.ledger_balance, result.available_balance) == (30_000, 30_000)
    report = await ledger.verify()
    assert report.ok, report.render()
    assert report.counts["unfolded_hot_postings"] > 0
    assert await ledger.fold_hot_accounts() > 0
    report = await ledger.verify()
    assert report.ok, report.render()
    assert report.counts["unfolded_hot_postings"] == 0


async def test_insufficient_funds_is_recorded_and_replayed(ledger: Ledger) -> None:
    card = await provision_card(ledger, 2, balance=10_000, overdraft=5_000)
    op = withdrawal(card, 15_001)
    first = await ledger.authorize(op)
    assert first.outcome is Outcome.INSUFFICIENT_FUNDS
    assert (first.ledger_balance, first.available_balance) == (10_000, 15_000)
    assert first.approval_code is None
    again = await ledger.authorize(op)
    assert again.replayed and again.outcome is Outcome.INSUFFICIENT_FUNDS
    # Within the overdraft it is approved and the available balance shows it.
    ok = await ledger.authorize(withdrawal(card, 15_000))
    assert ok.outcome is Outcome.APPROVED
    assert (ok.ledger_balance, ok.available_balance) == (-5_000, 0)
    assert (await ledger.verify()).ok


async def test_repeat_replays_and_mismatch_is_refused(ledger: Ledger) -> None:
    card = await provision_card(ledger, 3, balance=50_000)
    key = next_key()
    first = await ledger.authorize(withdrawal(card, 1_000, key=key))
    repeat = await ledger.authorize(withdrawal(card, 1_000, key=key))
    assert repeat.replayed
    assert (repeat.outcome, repeat.approval_code, repeat.ledger_balance) == (
        first.outcome, first.approval_code, first.ledger_balance)
    assert repeat.authorization_id == first.authorization_id
    other = await ledger.authorize(withdrawal(card, 2_000, key=key))
    assert other.outcome is Outcome.DUPLICATE_MISMATCH and not other.replayed
    balance = await ledger.authorize(withdrawal(card, 0, kind=OpKind.BALANCE_INQUIRY))
    assert balance.ledger_balance == 49_000   # posted exactly once
    report = await ledger.verify()            # one journal for the one approval
    assert report.ok, report.render()
    found = await ledger.find_result(key)
    assert found is not None and found.approval_code == first.approval_code
    assert await ledger.find_result(next_key()) is None


@pytest.mark.parametrize(("status", "outcome"), [
    (CardStatus.BLOCKED, Outcome.CARD_BLOCKED), (CardStatus.LOST, Outcome.CARD_LOST),
    (CardStatus.STOLEN, Outcome.CARD_STOLEN), (CardStatus.EXPIRED, Outcome.CARD_EXPIRED),
    (CardStatus.CLOSED, Outcome.CARD_CLOSED),
])
async def test_card_status_is_rechecked(ledger: Ledger, status: CardStatus,
                                        outcome: Outcome) -> None:
    card = await provision_card(ledger, 4)
    await ledger.set_card_status(pan_for(4), status)
    assert (await ledger.authorize(withdrawal(card, 100))).outcome is outcome
    await ledger.set_card_status(pan_for(4), CardStatus.ACTIVE)
    assert (await ledger.authorize(withdrawal(card, 100))).outcome is Outcome.APPROVED


async def test_expiry_date_is_checked(ledger: Ledger, clock: Clock) -> None:
    card = await provision_card(ledger, 5, expiry="2611")   # valid through 2026-11-30
    assert (await ledger.authorize(withdrawal(card, 100))).outcome is Outcome.APPROVED
    clock.now += timedelta(days=7)
    assert (await ledger.authorize(withdrawal(card, 100))).outcome is Outcome.CARD_EXPIRED


async def test_pin_tries_are_counted_in_the_same_round_trip(ledger: Ledger) -> None:
    card = await provision_card(ledger, 6)
    assert (await ledger.authorize(withdrawal(card, 100, pin="wrong"))).outcome \
        is Outcome.PIN_WRONG
    assert (await ledger.authorize(withdrawal(card, 100, pin="ok"))).outcome is Outcome.APPROVED
    record = await ledger.card_by_pan(pan_for(6))
    assert record is not None and record.pin_tries == 0
    outcomes = [(await ledger.authorize(withdrawal(card, 100, pin="wrong"))).outcome
                for _ in range(3)]
    assert outcomes == [Outcome.PIN_WRONG, Outcome.PIN_WRONG, Outcome.PIN_TRIES_EXCEEDED]
    # At the limit even the right PIN is refused, and the count stays put.
    assert (await ledger.authorize(withdrawal(card, 100, pin="ok"))).outcome \
        is Outcome.PIN_TRIES_EXCEEDED
    record = await ledger.card_by_pan(pan_for(6))
    assert record is not None and record.pin_tries == 3
    await ledger.reset_pin_tries(pan_for(6))
    assert (await ledger.authorize(withdrawal(card, 100, pin="ok"))).outcome is Outcome.APPROVED


async def test_a_wrong_pin_under_a_replaced_terminal_key_counts_nothing(ledger: Ledger) -> None:
    card = await provision_card(ledger, 61)
    stale = replace(withdrawal(card, 100, pin="wrong"), pin_key="TPK-BEFORE-KEY-CHANGE")
    result = await ledger.authorize(stale)
    assert result.outcome is Outcome.KEY_STALE and result.authorization_id is None
    record = await ledger.card_by_pan(pan_for(61))
    assert record is not None and record.pin_tries == 0
    # Nothing was recorded under the key: resubmitted under the current key, it applies.
    assert (await ledger.authorize(replace(stale, pin_key=TERMINAL_TPK))).outcome \
        is Outcome.PIN_WRONG
    record = await ledger.card_by_pan(pan_for(61))
    assert record is not None and record.pin_tries == 1
    # Only a wrong PIN is checked against the key; no key named, no check.
    assert (await ledger.authorize(replace(withdrawal(card, 100), pin_key="TPK-OLD"))).outcome \
        is Outcome.APPROVED
    assert (await ledger.authorize(withdrawal(card, 100, pin="wrong"))).outcome \
        is Outcome.PIN_WRONG


@contextlib.asynccontextmanager
async def _one_lane(dsn: str, clock: Clock, **hooks: Any) -> AsyncIterator[Ledger]:
    """A ledger with one group-commit lane and the test terminal, closed after."""
    ledger = await Ledger.open(dsn, data_key=DATA_KEY, pool_size_max=8, clock=clock,
                               batch_lanes=1, **hooks)
    try:
        await provision_terminal(ledger)
        yield ledger
    finally:
        await ledger.close()


async def test_the_key_check_holds_inside_a_group_commit(fresh_dsn: str, clock: Clock) -> None:
    sizes: list[int] = []
    async with _one_lane(fresh_dsn, clock, on_batch=sizes.append) as ledger:
        cards = [await provision_card(ledger, n) for n in range(62, 67)]
        ops = [withdrawal(cards[0], 100),
               replace(withdrawal(cards[1], 100, pin="wrong"), pin_key="TPK-OLD"),
               replace(withdrawal(cards[2], 100, pin="wrong"), pin_key=TERMINAL_TPK),
               replace(withdrawal(cards[3], 100), pin_key="TPK-OLD"),
               withdrawal(cards[4], 100, pin="wrong")]
        results = await asyncio.gather(*(ledger.authorize(op) for op in ops))
        assert sizes == [1, 4]   # the first alone, the other four in one statement
        assert [r.outcome for r in results] == [
            Outcome.APPROVED, Outcome.KEY_STALE, Outcome.PIN_WRONG, Outcome.APPROVED,
            Outcome.PIN_WRONG]
        tries = [await ledger.card_by_pan(pan_for(n)) for n in range(62, 67)]
        assert [t.pin_tries if t else None for t in tries] == [0, 0, 1, 0, 1]


async def test_a_second_lane_opens_only_for_a_full_batch_by_default(fresh_dsn: str,
                                                                    clock: Clock) -> None:
    # Pool 16: two lanes. With the default, the second opens only once batch_max
    # operations wait, so anything less gathers behind the one batch in flight.
    sizes: list[int] = []
    ledger = await Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=16, clock=clock,
                               batch_max=6, batch_lane_stall_s=60.0,
                               on_batch=sizes.append)
    try:
        await provision_terminal(ledger)
        cards = [await provision_card(ledger, n) for n in range(100, 111)]
        first = asyncio.ensure_future(ledger.authorize(withdrawal(cards[0], 100)))
        await asyncio.sleep(0)              # the first takes lane 1, alone
        four = [asyncio.ensure_future(ledger.authorize(withdrawal(c, 100)))
                for c in cards[1:5]]
        for _ in range(2):                  # four waiting < 6: lane 2 stays shut
            await asyncio.sleep(0)
        assert sizes == [1]
        rest = [asyncio.ensure_future(ledger.authorize(withdrawal(c, 100)))
                for c in cards[5:]]         # ten waiting: a full batch opens lane 2
        for _ in range(2):                  # they submit; lane 2's task starts
            await asyncio.sleep(0)
        assert sizes == [1, 6]
        results = await asyncio.gather(first, *four, *rest)
        assert sum(sizes) == 11 and max(sizes) <= 6
        assert all(r.outcome is Outcome.APPROVED for r in results)
    finally:
        await ledger.close()


async def test_a_statement_held_by_a_lock_holds_only_its_own_batch(fresh_dsn: str,
                                                                   clock: Clock) -> None:
    # Another session holds the row lock of one cardholder's account: that withdrawal's
    # statement waits. Operations arriving behind it, far fewer than a full batch, go
    # through the second lane once the first has run past the stall time.
    ledger = await Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=16, clock=clock,
                               batch_lane_stall_s=0.05)
    holder = await asyncpg.connect(fresh_dsn)
    try:
        await provision_terminal(ledger)
        locked = await provision_card(ledger, 120)
        others = [await provision_card(ledger, n) for n in range(121, 124)]
        lock = holder.transaction()
        await lock.start()
        assert await holder.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM accounts WHERE code = 'CH:acct-120-20' "
            "FOR UPDATE) AS locked") == 1
        held = asyncio.ensure_future(ledger.authorize(withdrawal(locked, 100)))
        await asyncio.sleep(0.2)
        assert not held.done()
        results = await asyncio.wait_for(
            asyncio.gather(*(ledger.authorize(withdrawal(c, 100)) for c in others)), 5.0)
        assert [r.outcome for r in results] == [Outcome.APPROVED] * 3
        assert not held.done()
        await lock.rollback()
        assert (await asyncio.wait_for(held, 5.0)).outcome is Outcome.APPROVED
    finally:
        await holder.close()
        await ledger.close()


async def test_group_commits_report_their_set_wise_operations(fresh_dsn: str,
                                                              clock: Clock) -> None:
    sizes: list[int] = []
    set_wise: list[int] = []
    async with _one_lane(fresh_dsn, clock, on_batch=sizes.append,
                         on_set_wise=set_wise.append) as ledger:
        cards = [await provision_card(ledger, n) for n in range(92, 98)]
        ops = [withdrawal(cards[0], 100), withdrawal(cards[1], 100),
               withdrawal(cards[2], 100, kind=OpKind.BALANCE_INQUIRY),
               withdrawal(cards[3], 100), withdrawal(cards[4], 100, pin="wrong"),
               withdrawal(cards[5], 100)]
        results = await asyncio.gather(*(ledger.authorize(op) for op in ops))
        assert sizes == [1, 5]   # the first alone, the other five in one statement
        # One run of five plain ones, the wrong PIN among them (0016).
        assert set_wise == [5]
        assert [r.outcome for r in results] == [Outcome.APPROVED] * 4 + [
            Outcome.PIN_WRONG, Outcome.APPROVED]
        assert all(r.authorization_id for r in results)


async def test_an_operation_waits_only_for_its_own_card(fresh_dsn: str, clock: Clock) -> None:
    sizes: list[int] = []
    async with _one_lane(fresh_dsn, clock, on_batch=sizes.append) as ledger:
        # Card ids 1,024 apart shared a lock stripe before: they no longer wait.
        cards = [await provision_card(ledger, n) for n in range(60, 62)]
        conn = await asyncpg.connect(fresh_dsn)
        try:
            await conn.execute("SELECT setval(pg_get_serial_sequence('cards', 'id'), $1)",
                               cards[0] + 1023)
        finally:
            await conn.close()
        cards.append(await provision_card(ledger, 62))
        assert cards[2] == cards[0] + 1024
        ops = [withdrawal(cards[0], 100), withdrawal(cards[1], 100),
               withdrawal(cards[0], 200), withdrawal(cards[2], 100)]
        results = await asyncio.gather(*(ledger.authorize(op) for op in ops))
        # The first alone; then the other cards together; the first card's second
        # operation only after its first one's commit.
        assert sizes == [1, 2, 1]
        assert [r.outcome for r in results] == [Outcome.APPROVED] * 4
        assert ledger._card_locks == {}, "no lock is kept once its card is idle"


async def test_card_lookups_in_flight_together_share_a_statement(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    cards = {n: await provision_card(ledger, n, savings=5_000) for n in range(70, 90)}
    statements: list[int] = []
    read_many = ledger._read_many

    async def counted(sql: str, *args: object) -> list[asyncpg.Record]:
        statements.append(len(args[0]) if args and isinstance(args[0], list) else 1)
        return await read_many(sql, *args)

    monkeypatch.setattr(ledger, "_read_many", counted)
    wanted = [pan_for(n) for n in range(70, 90)] + [pan_for(999), pan_for(70)]
    records = await asyncio.gather(*(ledger.card_by_pan(pan) for pan in wanted))
    assert [r.card_id if r else None for r in records] == \
        [cards[n] for n in range(70, 90)] + [None, cards[70]]
    assert all(r.account_types == ("10", "20") and r.default_account_type == "20"
               for r in records if r is not None)
    # 22 lookups: the first alone (nothing was in flight), the other 21, which arrived
    # while it was, together in the next statement (one card-read statement at a time).
    assert statements == [1, 21], statements


async def test_limits_per_transaction_and_per_business_day(ledger: Ledger, clock: Clock) -> None:
    card = await provision_card(ledger, 7, balance=1_000_000, limits=CardLimits(
        txn_amount_max=50_000, daily_amount_max=80_000, daily_count_max=3))
    assert (await ledger.authorize(withdrawal(card, 50_001))).outcome \
        is Outcome.EXCEEDS_TRANSACTION_LIMIT
    assert (await ledger.authorize(withdrawal(card, 50_000))).outcome is Outcome.APPROVED
    assert (await ledger.authorize(withdrawal(card, 30_001))).outcome \
        is Outcome.EXCEEDS_DAILY_AMOUNT
    assert (await ledger.authorize(withdrawal(card, 10_000))).outcome is Outcome.APPROVED
    assert (await ledger.authorize(withdrawal(card, 10_000))).outcome is Outcome.APPROVED
    assert (await ledger.authorize(withdrawal(card, 1))).outcome is Outcome.EXCEEDS_DAILY_COUNT
    clock.now += timedelta(days=1)
    assert (await ledger.authorize(withdrawal(card, 50_000))).outcome is Outcome.APPROVED
    await ledger.set_card_limits(pan_for(7), CardLimits(txn_amount_max=10))
    assert (await ledger.authorize(withdrawal(card, 11))).outcome \
        is Outcome.EXCEEDS_TRANSACTION_LIMIT
    assert (await ledger.verify()).ok


async def test_accounts_by_type(ledger: Ledger) -> None:
    card = await provision_card(ledger, 8, balance=10_000, savings=5_000)
    result = await ledger.authorize(withdrawal(card, 1_000, account="10"))
    assert (result.outcome, result.account_type, result.ledger_balance) == (
        Outcome.APPROVED, "10", 4_000)
    only_checking = await provision_card(ledger, 9)
    missing = await ledger.authorize(withdrawal(only_checking, 1_000, account="10"))
    assert (missing.outcome, missing.account_type, missing.account_side) == (
        Outcome.NO_SUCH_ACCOUNT, "10", "from")
    transfer = await ledger.authorize(withdrawal(only_checking, 1_000, kind=OpKind.TRANSFER,
                                                 account="20", to_account="10"))
    assert (transfer.outcome, transfer.account_type, transfer.account_side) == (
        Outcome.NO_SUCH_ACCOUNT, "10", "to")


async def test_balance_inquiry_deposit_transfer_and_fee(ledger: Ledger) -> None:
    card = await provision_card(ledger, 10, balance=10_000, savings=0)
    inquiry = await ledger.authorize(withdrawal(card, 0, kind=OpKind.BALANCE_INQUIRY))
    assert (inquiry.outcome, inquiry.ledger_balance, inquiry.available_balance) == (
        Outcome.APPROVED, 10_000, 10_000)
    deposit = await ledger.authorize(withdrawal(card, 2_500, kind=OpKind.DEPOSIT,
                                                to_account="10"))
    assert (deposit.outcome, deposit.account_type, deposit.ledger_balance) == (
        Outcome.APPROVED, "10", 2_500)
    transfer = await ledger.authorize(withdrawal(card, 4_000, kind=OpKind.TRANSFER,
                                                 account="20", to_account="10"))
    assert (transfer.outcome, transfer.ledger_balance) == (Outcome.APPROVED, 6_000)
    fee = await ledger.authorize(withdrawal(card, 1_000, fee=250))
    assert (fee.outcome, fee.ledger_balance) == (Outcome.APPROVED, 4_750)
    paid = await ledger.authorize(withdrawal(card, 0, kind=OpKind.BALANCE_INQUIRY, fee=50))
    assert paid.ledger_balance == 4_700
    savings = await ledger.authorize(withdrawal(card, 0, kind=OpKind.BALANCE_INQUIRY,
                                                account="10"))
    assert savings.ledger_balance == 6_500
    report = await ledger.verify()
    assert report.ok, report.render()


async def test_currency_terminal_and_card_checks(ledger: Ledger) -> None:
    card = await provision_card(ledger, 11)
    assert (await ledger.authorize(withdrawal(card, 100, currency="978"))).outcome \
        is Outcome.CURRENCY_MISMATCH
    assert (await ledger.authorize(withdrawal(card, 100, terminal="NOSUCH01"))).outcome \
        is Outcome.TERMINAL_NOT_USABLE
    assert (await ledger.authorize(withdrawal(10_000_000, 100))).outcome is Outcome.CARD_UNKNOWN
    with pytest.raises(InvalidOperation):
        await ledger.authorize(withdrawal(card, -1))
    with pytest.raises(InvalidOperation):
        await ledger.authorize(withdrawal(card, 100, key=next_key(transmission_dt="0230120000")))


async def test_provisioning_is_idempotent_and_pan_is_never_clear(
        ledger: Ledger, fresh_dsn: str) -> None:
    first = await provision_card(ledger, 12, balance=7_000)
    again = await provision_card(ledger, 12, balance=7_000)
    assert first == again
    inquiry = await ledger.authorize(withdrawal(first, 0, kind=OpKind.BALANCE_INQUIRY))
    assert inquiry.ledger_balance == 7_000
    record = await ledger.card_by_pan(pan_for(12))
    assert record is not None
    assert (record.card_id, record.account_types, record.default_account_type) == (
        first, ("20",), "20")
    assert await ledger.card_by_pan(pan_for(999)) is None
    assert await ledger.pan_of(first) == pan_for(12)
    conn = await asyncpg.connect(fresh_dsn)
    try:
        dump = await conn.fetchval("SELECT string_agg(c::text, '|') FROM cards c")
        raw = await conn.fetchval("SELECT string_agg(encode(pan_sealed, 'escape'), '|') "
                                  "FROM cards")
    finally:
        await conn.close()
    assert pan_for(12) not in dump and pan_for(12) not in raw
    assert (await ledger.verify()).ok


async def test_terminal_record_and_key_change(ledger: Ledger) -> None:
    record = await ledger.terminal(TERMINAL)
    assert record is not None
    assert (record.tpk, record.currency, record.sign_on_required) == (TERMINAL_TPK, CURRENCY, False)
    await ledger.set_terminal_key(TERMINAL, "tpk", "NEW-TPK")
    record = await ledger.terminal(TERMINAL)
    assert record is not None and record.tpk == "NEW-TPK"
    assert await ledger.terminal("NOSUCH01") is None
    with pytest.raises(ProvisioningError):
        await ledger.set_terminal_key("NOSUCH01", "tpk", "X")
    with pytest.raises(ProvisioningError):
        await ledger.set_terminal_key(TERMINAL, "zmk", "X")
    with pytest.raises(ProvisioningError):
        await ledger.set_card_status(pan_for(998), CardStatus.BLOCKED)


async def test_a_stalled_card_read_holds_only_its_own_lookups(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first lookup's statement is held back (as by a hung session); lookups
    # arriving behind it go in a second statement once it has stalled, not after it.
    for n in (130, 131, 132):
        await provision_card(ledger, n)
    release = asyncio.Event()
    read_many = ledger._read_many
    calls = 0

    async def first_stalls(sql: str, *args: object) -> list[asyncpg.Record]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
        return await read_many(sql, *args)

    monkeypatch.setattr(ledger, "_read_many", first_stalls)
    stuck = asyncio.ensure_future(ledger.card_by_pan(pan_for(130)))
    await asyncio.sleep(0.01)
    behind = await asyncio.wait_for(asyncio.gather(
        ledger.card_by_pan(pan_for(131)), ledger.card_by_pan(pan_for(132))), 2.0)
    assert all(card is not None for card in behind) and not stuck.done()
    release.set()
    assert await asyncio.wait_for(stuck, 2.0) is not None
    assert calls == 2
