"""The set-wise group commit (migration 0012) against one call per operation.

Random batches (plain withdrawals and balance inquiries on every kind of card,
account and terminal, mixed with repeats of stored and in-batch keys, late
originals, wrong PINs, fees, deposits, holds and reversals) run twice in the same
starting state, each in a transaction that is rolled back: once through
``ledger_authorize_batch`` as the switch calls it, once as one call of
ledger_authorize/ledger_reverse per operation, in order. The answers and every
row left behind must be the same (ids drawn from sequences aside).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import (
    ACQUIRER,
    CURRENCY,
    DATA_KEY,
    TERMINAL,
    TERMINAL_TPK,
    pan_for,
    provision_card,
    provision_terminal,
    reversal,
    withdrawal,
)

from ledger.migrations import revision_module
from ledger.model import (
    AccountSpec,
    CardLimits,
    CardSpec,
    CardStatus,
    IdempotencyKey,
    Operation,
    OpKind,
    ReversalOp,
    TerminalSpec,
)
from ledger.store import _AUTHORIZE_MANY_SQL, REVERSAL_ADVICE_KIND, Ledger, batch_columns, one_call

T = TypeVar("T")

INACTIVE = "ATM00002"
EURO_ATM = "ATM00003"
UNKNOWN_ATM = "ATM09999"
TOMBSTONED_RRN = "999999999999"
UNKNOWN_CARD = 10**9

_ANSWER = ("o_outcome", "o_replayed", "o_account_type", "o_currency", "o_ledger_balance",
           "o_available_balance", "o_suspense_amount", "o_account_side")

# Every row the operations can leave behind, without the ids sequences draw.
_STATE = {
    "cards": "SELECT id, pin_tries, usage_date, usage_amount, usage_count FROM cards",
    "accounts": """SELECT id, posted_debits, posted_credits, pending_debits, pending_credits
                     FROM accounts""",
    "authorizations": """
        SELECT key, kind, digest, card_id, terminal_id, rrn, account_id, to_account_id,
               counter_account_id, account_type, currency, amount, fee, suspense_amount,
               outcome, account_side, approval_code IS NOT NULL AS approved_code,
               ledger_balance, available_balance, journal_id IS NOT NULL AS journaled,
               original_auth_id IS NOT NULL AS has_original, business_date,
               reversal_id IS NOT NULL AS reversed, reversed_amount
          FROM authorizations""",
    "postings": """
        SELECT j.kind, a.key, p.line, p.account_id, p.amount, p.currency
          FROM postings p JOIN journals j ON j.id = p.journal_id
          LEFT JOIN authorizations a ON a.id = j.auth_id""",
    "hot_pending": """
        SELECT a.key, h.line, h.account_id, h.amount
          FROM hot_pending h JOIN journals j ON j.id = h.journal_id
          LEFT JOIN authorizations a ON a.id = j.auth_id""",
    "holds": "SELECT account_id, amount, remaining, state FROM holds",
    "reversals": "SELECT * FROM reversals",
    "tombstones": "SELECT terminal_id, rrn FROM rrn_tombstones",
}
_VOLATILE = {"id", "auth_id", "journal_id", "original_auth_id", "created_at", "closed_at"}


class Bank:
    """The cards, terminals and stored keys the batches are drawn from."""

    loop: asyncio.AbstractEventLoop
    ledger: Ledger
    conn: asyncpg.Connection
    cards: list[int]
    stored: list[IdempotencyKey]
    stored_ops: list[Operation]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def provision(self) -> None:
        ledger = self.ledger
        await provision_terminal(ledger)
        for terminal, status, currency in ((INACTIVE, "inactive", CURRENCY),
                                           (EURO_ATM, "active", "978")):
            await ledger.upsert_terminal(TerminalSpec(
                terminal_id=terminal, acquirer_id=ACQUIRER, currency=currency,
                status=status, cash_opening=1_000_000, sign_on_required=False))
        cards = [
            await provision_card(ledger, 1, balance=100_000, savings=50_000),
            await provision_card(ledger, 2, balance=1_500),
            await provision_card(ledger, 3, balance=0, overdraft=10_000),
            await provision_card(ledger, 4, limits=CardLimits(5_000, 8_000, 2)),
            await provision_card(ledger, 5, expiry="2001"),
            await provision_card(ledger, 6),   # PIN tries 2 below
            await provision_card(ledger, 7),   # PIN tries exhausted below
            await provision_card(ledger, 8),   # account frozen below
        ]
        for n, status in ((9, CardStatus.BLOCKED), (10, CardStatus.LOST)):
            cards.append(await ledger.upsert_card(CardSpec(
                pan=pan_for(n), expiry="3012", pvv="1234", pvki="1", status=status,
                accounts=[AccountSpec("20", f"acct-{n}-20", CURRENCY, 10_000, 0, True)])))
        for n in (11, 12):   # one joint account behind two cards
            cards.append(await ledger.upsert_card(CardSpec(
                pan=pan_for(n), expiry="3012", pvv="1234", pvki="1",
                accounts=[AccountSpec("20", "joint", CURRENCY, 20_000, 0, True)])))
        await self.conn.execute("UPDATE cards SET pin_tries = 2 WHERE id = $1", cards[5])
        await self.conn.execute("UPDATE cards SET pin_tries = 3 WHERE id = $1", cards[6])
        await self.conn.execute(
            """UPDATE accounts SET status = 'frozen' WHERE id =
                 (SELECT account_id FROM card_accounts WHERE card_id = $1)""", cards[7])
        await self.conn.execute("INSERT INTO rrn_tombstones (terminal_id, rrn) VALUES ($1, $2)",
                                TERMINAL, TOMBSTONED_RRN)
        self.cards = cards
        # Stored history: keys a batch may repeat, usage counted today, an open hold.
        self.stored_ops = [withdrawal(cards[0], 2_000), withdrawal(cards[1], 90_000),
                           withdrawal(cards[3], 3_000),
                           withdrawal(cards[0], 1_000, kind=OpKind.HOLD)]
        for op in self.stored_ops:
            await ledger.authorize(op)
        self.stored = [op.key for op in self.stored_ops]


@st.composite
def batches(draw: st.DrawFn, bank: Bank) -> list[Operation | ReversalOp]:
    ops: list[Operation | ReversalOp] = []
    for _ in range(draw(st.integers(2, 12))):
        shape = draw(st.sampled_from(
            ["plain"] * 8 + ["repeat"] * 2
            + ["wrong_pin"] * 2 + ["fee", "deposit", "hold", "reversal", "tombstoned"]))
        terminal = draw(st.sampled_from([TERMINAL] * 5 + [INACTIVE, EURO_ATM, UNKNOWN_ATM]))
        # The joint account's two cards come often, so runs hold both.
        card = draw(st.sampled_from([*bank.cards, UNKNOWN_CARD, *bank.cards[-2:] * 3]))
        amount = draw(st.sampled_from([1, 500, 2_000, 4_000, 6_000, 20_000, 150_000]))
        account = draw(st.sampled_from(["00", "00", "10", "20", "30"]))
        if shape == "repeat":
            earlier = [op for op in ops if isinstance(op, Operation)] + bank.stored_ops
            prior = draw(st.sampled_from(earlier))
            # The very same request (a replay) or another one under its key (refused).
            ops.append(prior if draw(st.booleans()) else replace(prior, amount=amount + 7))
            continue
        if shape == "reversal":
            keys = [op.key for op in ops] + bank.stored
            original = draw(st.sampled_from(keys))
            ops.append(reversal(original, terminal=original.terminal_id,
                                dispensed=draw(st.sampled_from([None, 500])),
                                advice=draw(st.booleans())))
            continue
        kind = {"plain": draw(st.sampled_from([OpKind.WITHDRAWAL] * 3
                                              + [OpKind.BALANCE_INQUIRY])),
                "deposit": OpKind.DEPOSIT, "hold": OpKind.HOLD}.get(shape, OpKind.WITHDRAWAL)
        if kind is OpKind.BALANCE_INQUIRY:
            amount = 0
        ops.append(withdrawal(
            card, amount, kind=kind, account=account, terminal=terminal,
            pin="wrong" if shape == "wrong_pin" else draw(st.sampled_from(["ok", "ok", "none"])),
            # Verified under the terminal's key, an older one, or a key not given.
            pin_key=draw(st.sampled_from([TERMINAL_TPK, TERMINAL_TPK, "TPK-OLD", None])),
            fee=100 if shape == "fee" else 0,
            rrn=TOMBSTONED_RRN if shape == "tombstoned" else None))
    return ops


async def _in_rollback(conn: asyncpg.Connection, calls: Any) -> tuple[list[Any], dict[str, Any]]:
    transaction = conn.transaction(isolation="serializable")
    await transaction.start()
    try:
        answers = await calls()
        state = {name: sorted(_stable(row) for row in await conn.fetch(sql))
                 for name, sql in _STATE.items()}
        return answers, state
    finally:
        await transaction.rollback()


def _stable(row: asyncpg.Record) -> tuple[Any, ...]:
    return tuple((name, repr(value)) for name, value in row.items() if name not in _VOLATILE)


def _answer(row: asyncpg.Record) -> tuple[Any, ...]:
    code, auth_id = row["o_approval_code"], row["o_auth_id"]
    if code is not None and not row["o_replayed"]:
        assert code == f"{auth_id % 1_000_000:06d}", "the approval code is the id's last digits"
    return (*(row[name] for name in _ANSWER), code is not None, auth_id is not None)


def _with_bank(fresh_dsn: str, check: Any) -> None:
    bank = Bank()
    bank.loop = asyncio.new_event_loop()
    try:
        bank.ledger = bank.run(Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=2))
        bank.conn = bank.run(asyncpg.connect(fresh_dsn))
        try:
            bank.run(bank.provision())
            check(bank)
        finally:
            bank.run(bank.conn.close())
            bank.run(bank.ledger.close())
    finally:
        bank.loop.close()


def _same_both_ways(bank: Bank, ops: list[Operation | ReversalOp]) -> list[bool]:
    """The batch set-wise and one call per operation: same answers, same rows.
    Returns which operations the batch decided set-wise."""
    conn = bank.conn
    rows = [bank.ledger.operation_args(op) for op in ops]
    flags: list[bool] = []

    async def set_wise() -> list[Any]:
        answers = await conn.fetch(_AUTHORIZE_MANY_SQL, *batch_columns(rows))
        assert [answer["n"] for answer in answers] == list(range(1, len(rows) + 1))
        flags.extend(answer["o_set_wise"] for answer in answers)
        return [_answer(answer) for answer in answers]

    async def one_by_one() -> list[Any]:
        return [_answer(await conn.fetchrow(*_call(row))) for row in rows]

    got, got_state = bank.run(_in_rollback(conn, set_wise))
    want, want_state = bank.run(_in_rollback(conn, one_by_one))
    assert got == want
    for name in _STATE:
        assert got_state[name] == want_state[name], name
    assert all(_plain(row) for row, flag in zip(rows, flags, strict=True) if flag)
    return flags


def test_rows_that_share_a_card_account_or_key_keep_their_order(fresh_dsn: str) -> None:
    def check(bank: Bank) -> None:
        joint, other, card, poor = bank.cards[-1], bank.cards[-2], bank.cards[0], bank.cards[1]
        first = withdrawal(joint, 15_000)
        again = withdrawal(card, 100)
        flags = _same_both_ways(bank, [
            # Five plain operations on five cards: one statement (overdraft, a balance
            # inquiry, an expired card, PIN tries exhausted, a frozen account).
            withdrawal(bank.cards[2], 5_000),
            withdrawal(bank.cards[3], 0, kind=OpKind.BALANCE_INQUIRY),
            withdrawal(bank.cards[4], 100), withdrawal(bank.cards[6], 100),
            withdrawal(bank.cards[7], 100),
            # One account behind two cards: the second sees the first's debit (51).
            first, withdrawal(other, 6_000),
            withdrawal(bank.cards[5], 50, pin="wrong"),
            # One key on two cards: the second is refused as a different request.
            again, replace(again, card_id=poor),
            withdrawal(card, 100, fee=25),
            # One card twice: daily usage and balance carry over.
            withdrawal(card, 200), withdrawal(card, 300, account="10"),
            withdrawal(poor, 100, kind=OpKind.DEPOSIT),
            # Stored keys (a replay, a mismatch), a late original, an unknown card.
            bank.stored_ops[0], replace(bank.stored_ops[1], amount=5),
            withdrawal(card, 100, rrn=TOMBSTONED_RRN), withdrawal(UNKNOWN_CARD, 10),
            withdrawal(joint, 1_000), withdrawal(other, 0, kind=OpKind.BALANCE_INQUIRY),
            reversal(first.key), withdrawal(joint, 500)])
        # Set-wise: the first five, the wrong PIN (plain since 0016) and the withdrawal
        # after it, the late original and the unknown card. A plain card or key seen
        # again ends a run; a shared account, a stored key and a card a call of the run
        # touches are deferred; what is not plain goes one call each.
        assert [n for n, flag in enumerate(flags, 1) if flag] == [1, 2, 3, 4, 5, 8, 9, 17, 18]

    _with_bank(fresh_dsn, check)


def test_a_plain_operation_touching_what_a_call_of_its_run_touches_is_deferred(
        fresh_dsn: str) -> None:
    def check(bank: Bank) -> None:
        rich, poor, limited = bank.cards[0], bank.cards[1], bank.cards[3]
        joint, other = bank.cards[-1], bank.cards[-2]
        flags = _same_both_ways(bank, [
            withdrawal(bank.cards[2], 100),
            # The reversal gives the stored withdrawal's 2,000 back to the rich card's
            # account, which then has exactly 99,000 available: the withdrawal after
            # it is approved only if it sees the reversal (its card: deferred).
            reversal(bank.stored_ops[0].key),
            withdrawal(rich, 99_000),
            withdrawal(limited, 100),
            # A wrong PIN on one card of the joint account answers with its balance:
            # the other card's withdrawal after it must not have been taken first.
            withdrawal(joint, 100, pin="wrong"),
            withdrawal(other, 500),
            # The original of a reversal in the same run: both go in arrival order.
            (late := withdrawal(poor, 100)),
            reversal(late.key),
            withdrawal(bank.cards[4], 100),
            # A reversal by terminal and RRN alone that finds nothing leaves an RRN
            # tombstone: the withdrawal with that RRN after it is a late original.
            reversal(None, rrn="000000424242"),
            withdrawal(bank.cards[5], 100, rrn="000000424242"),
            withdrawal(bank.cards[6], 100)])
        assert [n for n, flag in enumerate(flags, 1) if flag] == [1, 4, 9, 12]

    _with_bank(fresh_dsn, check)


def test_a_plain_operation_on_the_card_a_reversal_gives_its_day_back_is_deferred(
        fresh_dsn: str) -> None:
    """A reversal carries no card of its own and gives back to its original's account
    only, but also to its original's card: the day's amount used. A withdrawal from the
    card's other account after it in the run is decided by that alone (the card rule)."""
    def check(bank: Bank) -> None:
        card = bank.run(provision_card(bank.ledger, 13, balance=50_000, savings=50_000,
                                       limits=CardLimits(10_000, 10_000, 5)))
        first = withdrawal(card, 10_000, account="20")
        assert bank.run(bank.ledger.authorize(first)).outcome.approved   # the day's limit used up
        flags = _same_both_ways(bank, [
            withdrawal(bank.cards[2], 100),
            reversal(first.key),
            withdrawal(card, 10_000, account="10"),   # over the day's limit unless reversed
            withdrawal(bank.cards[4], 100)])
        assert flags == [True, False, False, True]

    _with_bank(fresh_dsn, check)


def test_wrong_pins_are_decided_in_the_run_s_statement(fresh_dsn: str) -> None:
    def check(bank: Bank) -> None:
        counted, stale = bank.cards[0], bank.cards[1]
        last_try, exhausted = bank.cards[5], bank.cards[6]   # PIN tries 2 and 3 of 3
        ops = [withdrawal(bank.cards[2], 100),
               withdrawal(counted, 100, pin="wrong", pin_key=TERMINAL_TPK),
               # Verified under a key the terminal no longer has: nothing written.
               withdrawal(stale, 0, kind=OpKind.BALANCE_INQUIRY, pin="wrong",
                          pin_key="TPK-OLD"),
               withdrawal(last_try, 100, pin="wrong", pin_key=TERMINAL_TPK),
               withdrawal(exhausted, 100, pin="wrong"),
               withdrawal(bank.cards[4], 100, pin="wrong")]   # expired: decided before
        assert _same_both_ways(bank, ops) == [True] * len(ops)
        # Again, committed this time, to look at what it wrote.
        rows = bank.run(bank.conn.fetch(_AUTHORIZE_MANY_SQL, *batch_columns(
            [bank.ledger.operation_args(op) for op in ops])))
        assert [row["o_outcome"] for row in rows] == [0, 110, 105, 100, 100, 70]
        assert rows[2]["o_auth_id"] is None and rows[2]["o_ledger_balance"] is None
        assert rows[1]["o_ledger_balance"] is not None, "a counted try answers balances"
        tries = dict(bank.run(bank.conn.fetch(
            "SELECT id, pin_tries FROM cards WHERE id = ANY ($1)",
            [counted, stale, last_try, exhausted])))
        assert tries == {counted: 1, stale: 0, last_try: 3, exhausted: 3}
        stored = bank.run(bank.conn.fetchval(
            "SELECT count(*) FROM authorizations WHERE key = $1",
            bank.ledger.operation_args(ops[2])[1]))
        assert stored == 0, "a stale key's answer is not stored"

    _with_bank(fresh_dsn, check)


def test_set_wise_batches_answer_and_write_as_one_call_per_operation(fresh_dsn: str) -> None:
    _with_bank(fresh_dsn, _check_batches)


def _check_batches(bank: Bank) -> None:
    seen_set_wise = 0

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def check(data: st.DataObject) -> None:
        nonlocal seen_set_wise
        ops = data.draw(batches(bank))
        _same_both_ways(bank, ops)
        rows = [bank.ledger.operation_args(op) for op in ops]
        seen_set_wise += any(_plain(a) and _plain(b) for a, b in itertools.pairwise(rows))

    check()
    assert seen_set_wise > 50, "most batches hold a run of plain operations"


def _plain(row: tuple[Any, ...]) -> bool:
    kind, amount, fee = row[0], row[7], row[9]
    return (kind == OpKind.BALANCE_INQUIRY or (kind == OpKind.WITHDRAWAL and amount > 0)) \
        and fee == 0


def _call(row: tuple[Any, ...]) -> tuple[str, ...]:
    sql, args = one_call(row)
    return (sql, *args)


def test_the_function_s_frozen_kinds_are_the_store_s() -> None:
    module = revision_module("0012_set_based_batch.py")
    assert module.REVERSAL_ADVICE_KIND == REVERSAL_ADVICE_KIND
    assert (module.WITHDRAWAL, module.BALANCE_INQUIRY) == (OpKind.WITHDRAWAL,
                                                           OpKind.BALANCE_INQUIRY)
