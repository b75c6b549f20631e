"""A hypothesis state machine against the real database and an in-memory model.

Random withdrawals, holds, completions, reversals (full, partial, excessive,
repeated, orphan), late originals, duplicates and balance inquiries; after
every step the balances in PostgreSQL must equal the model's, and at the end
of every example the verifier must be clean.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from ledger_helpers import DATA_KEY, next_key, pan_for, provision_card, provision_terminal
from ledger_helpers import reversal as make_reversal
from ledger_helpers import withdrawal as make_op

from ledger.model import IdempotencyKey, OpKind, OriginalRef, Outcome, Result, ReversalOp
from ledger.store import Ledger

T = TypeVar("T")
OPENING = 20_000
_card_numbers = itertools.count(10_000)


@dataclass
class Account:
    ledger: int = OPENING
    pending: int = 0

    @property
    def available(self) -> int:
        return self.ledger - self.pending


@dataclass
class Done:
    """One operation as the model remembers it."""

    key: IdempotencyKey
    card: int
    kind: OpKind
    amount: int
    outcome: Outcome
    approval_code: str | None
    reversed: bool = False
    hold_remaining: int = 0
    hold_open: bool = False
    suspense: int = 0


class LedgerMachine(RuleBasedStateMachine):
    loop: ClassVar[asyncio.AbstractEventLoop]
    ledger: ClassVar[Ledger]
    conn: ClassVar[asyncpg.Connection]

    def __init__(self) -> None:
        super().__init__()
        numbers = [next(_card_numbers) for _ in range(2)]
        self.cards = [self.run(provision_card(self.ledger, n, balance=OPENING))
                      for n in numbers]
        self.accounts = {card: Account() for card in self.cards}
        self.done: list[Done] = []
        self.reversals: list[tuple[ReversalOp, Result]] = []
        self.tombstones: list[IdempotencyKey] = []

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def record(self, card: int, kind: OpKind, amount: int, key: IdempotencyKey,
               result: Result) -> Done:
        done = Done(key, card, kind, amount, result.outcome, result.approval_code)
        self.done.append(done)
        return done

    # -- rules ------------------------------------------------------------------

    @rule(which=st.integers(0, 1), amount=st.integers(1, 9_000))
    def withdraw(self, which: int, amount: int) -> None:
        card, account = self.cards[which], self.accounts[self.cards[which]]
        key = next_key()
        result = self.run(self.ledger.authorize(make_op(card, amount, key=key)))
        expected = Outcome.APPROVED if amount <= account.available else Outcome.INSUFFICIENT_FUNDS
        assert result.outcome is expected
        if expected is Outcome.APPROVED:
            account.ledger -= amount
        assert (result.ledger_balance, result.available_balance) == (
            account.ledger, account.available)
        self.record(card, OpKind.WITHDRAWAL, amount, key, result)

    @rule(which=st.integers(0, 1), amount=st.integers(1, 9_000))
    def hold(self, which: int, amount: int) -> None:
        card, account = self.cards[which], self.accounts[self.cards[which]]
        key = next_key()
        result = self.run(self.ledger.authorize(make_op(card, amount, key=key,
                                                        kind=OpKind.HOLD)))
        expected = Outcome.APPROVED if amount <= account.available else Outcome.INSUFFICIENT_FUNDS
        assert result.outcome is expected
        done = self.record(card, OpKind.HOLD, amount, key, result)
        if expected is Outcome.APPROVED:
            account.pending += amount
            done.hold_open, done.hold_remaining = True, amount
        assert result.available_balance == account.available

    @rule(pick=st.integers(0, 10**6), amount=st.integers(1, 9_000), orphan=st.booleans())
    def complete(self, pick: int, amount: int, orphan: bool) -> None:
        holds = [d for d in self.done if d.kind is OpKind.HOLD]
        target = None if orphan or not holds else holds[pick % len(holds)]
        original = target.key if target is not None else next_key()
        card = target.card if target is not None else self.cards[0]
        key = next_key()
        result = self.run(self.ledger.authorize(make_op(
            card, amount, key=key, kind=OpKind.COMPLETION, pin="none",
            original=OriginalRef(key=original))))
        assert result.outcome is Outcome.APPROVED   # an advice is always acknowledged
        card_part = 0
        if target is not None and target.hold_open:
            account = self.accounts[card]
            card_part = min(amount, target.hold_remaining)
            account.pending -= target.hold_remaining
            account.ledger -= card_part
            target.hold_open, target.hold_remaining = False, 0
            assert result.ledger_balance == account.ledger
        else:
            assert result.ledger_balance is None
        assert result.suspense_amount == amount - card_part
        done = self.record(card, OpKind.COMPLETION, amount, key, result)
        done.suspense = amount - card_part

    @precondition(lambda self: bool(self.done))
    @rule(pick=st.integers(0, 10**6), mode=st.sampled_from(["full", "partial", "excess"]),
          fraction=st.floats(0, 1), advice=st.booleans())
    def reverse(self, pick: int, mode: str, fraction: float, advice: bool) -> None:
        target = self.done[pick % len(self.done)]
        dispensed = {"full": None, "partial": int(target.amount * fraction),
                     "excess": target.amount + 1}[mode]
        op = make_reversal(target.key, dispensed=dispensed, advice=advice)
        result = self.run(self.ledger.reverse(op))
        self.reversals.append((op, result))
        assert result.outcome is self.expected_reversal(target, dispensed)

    def expected_reversal(self, target: Done, dispensed: int | None) -> Outcome:
        if target.outcome is not Outcome.APPROVED:
            return Outcome.ORIGINAL_DECLINED
        if target.reversed:
            return Outcome.ALREADY_REVERSED
        if dispensed is not None and dispensed > target.amount:
            return Outcome.REVERSAL_EXCEEDS_ORIGINAL
        if target.kind is OpKind.HOLD and not target.hold_open:
            return Outcome.ALREADY_REVERSED
        back = target.amount - (dispensed or 0)
        account = self.accounts[target.card]
        target.reversed = True
        if target.kind is OpKind.HOLD:
            release = min(back, target.hold_remaining)
            target.hold_remaining -= release
            target.hold_open = target.hold_remaining > 0
            account.pending -= release
        elif target.kind is OpKind.WITHDRAWAL:
            account.ledger += back
        elif target.kind is OpKind.COMPLETION:
            # Suspense gives back first: the card was charged only up to its hold.
            account.ledger += back - min(back, target.suspense)
        return Outcome.APPROVED

    @precondition(lambda self: bool(self.reversals))
    @rule(pick=st.integers(0, 10**6))
    def repeat_reversal(self, pick: int) -> None:
        op, first = self.reversals[pick % len(self.reversals)]
        again = self.run(self.ledger.reverse(op))
        assert again.replayed and again.outcome is first.outcome

    @rule(advice=st.booleans())
    def orphan_reversal(self, advice: bool) -> None:
        missing = next_key()
        result = self.run(self.ledger.reverse(make_reversal(missing, advice=advice)))
        assert result.outcome is Outcome.ORIGINAL_NOT_FOUND
        self.tombstones.append(missing)

    @precondition(lambda self: bool(self.tombstones))
    @rule(pick=st.integers(0, 10**6), amount=st.integers(1, 1_000))
    def late_original(self, pick: int, amount: int) -> None:
        key = self.tombstones[pick % len(self.tombstones)]
        result = self.run(self.ledger.authorize(make_op(self.cards[0], amount, key=key)))
        assert result.outcome is Outcome.LATE_ORIGINAL

    @precondition(lambda self: any(d.kind in (OpKind.WITHDRAWAL, OpKind.HOLD)
                                   for d in self.done))
    @rule(pick=st.integers(0, 10**6), same=st.booleans())
    def duplicate(self, pick: int, same: bool) -> None:
        candidates = [d for d in self.done if d.kind in (OpKind.WITHDRAWAL, OpKind.HOLD)]
        target = candidates[pick % len(candidates)]
        amount = target.amount if same else target.amount + 1
        result = self.run(self.ledger.authorize(make_op(target.card, amount, key=target.key,
                                                        kind=target.kind)))
        if same:
            assert result.replayed
            assert (result.outcome, result.approval_code) == (target.outcome,
                                                              target.approval_code)
        else:
            assert result.outcome is Outcome.DUPLICATE_MISMATCH and not result.replayed

    @rule(which=st.integers(0, 1))
    def inquiry(self, which: int) -> None:
        card, account = self.cards[which], self.accounts[self.cards[which]]
        key = next_key()
        result = self.run(self.ledger.authorize(make_op(card, 0, key=key,
                                                        kind=OpKind.BALANCE_INQUIRY)))
        assert result.outcome is Outcome.APPROVED
        assert (result.ledger_balance, result.available_balance) == (
            account.ledger, account.available)
        self.record(card, OpKind.BALANCE_INQUIRY, 0, key, result)

    @rule()
    def fold(self) -> None:
        self.run(self.ledger.fold_hot_accounts())

    # -- checks ------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        rows = self.run(self.conn.fetch(
            """SELECT ca.card_id, a.posted_credits - a.posted_debits AS ledger,
                      a.pending_debits AS pending
                 FROM card_accounts ca JOIN accounts a ON a.id = ca.account_id
                WHERE ca.card_id = ANY($1)""", self.cards))
        actual = {row["card_id"]: (row["ledger"], row["pending"]) for row in rows}
        expected = {card: (acc.ledger, acc.pending) for card, acc in self.accounts.items()}
        assert actual == expected

    def teardown(self) -> None:
        report = self.run(self.ledger.verify())
        assert report.ok, report.render()


def test_ledger_matches_its_model(fresh_dsn: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        ledger = loop.run_until_complete(Ledger.open(fresh_dsn, data_key=DATA_KEY,
                                                     pool_size_max=2))
        conn = loop.run_until_complete(asyncpg.connect(fresh_dsn))
        try:
            loop.run_until_complete(provision_terminal(ledger))
            LedgerMachine.loop, LedgerMachine.ledger, LedgerMachine.conn = loop, ledger, conn
            run_state_machine_as_test(LedgerMachine, settings=settings(
                max_examples=100, stateful_step_count=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow]))
            assert pan_for(1)   # the helpers module stays in use for PANs
        finally:
            loop.run_until_complete(conn.close())
            loop.run_until_complete(ledger.close())
    finally:
        loop.close()
