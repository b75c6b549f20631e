"""Reversals (full, partial, repeated, orphan), holds, completions and hold expiry."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ledger_helpers import (
    DATA_KEY,
    Clock,
    next_key,
    provision_card,
    provision_terminal,
    reversal,
    withdrawal,
)

from ledger.model import OpKind, OriginalRef, Outcome
from ledger.store import Ledger


async def _balance(ledger: Ledger, card: int) -> tuple[int | None, int | None]:
    result = await ledger.authorize(withdrawal(card, 0, kind=OpKind.BALANCE_INQUIRY))
    return result.ledger_balance, result.available_balance


async def test_full_reversal_restores_and_applies_once(ledger: Ledger) -> None:
    card = await provision_card(ledger, 1, balance=10_000)
    key = next_key()
    assert (await ledger.authorize(withdrawal(card, 4_000, key=key, fee=100))).outcome \
        is Outcome.APPROVED
    rev = reversal(key)
    first = await ledger.reverse(rev)
    assert (first.outcome, first.ledger_balance) == (Outcome.APPROVED, 10_000)
    repeat = await ledger.reverse(rev)
    assert repeat.replayed and repeat.outcome is Outcome.APPROVED
    other = await ledger.reverse(reversal(key))
    assert other.outcome is Outcome.ALREADY_REVERSED
    assert await _balance(ledger, card) == (10_000, 10_000)
    report = await ledger.verify()
    assert report.ok, report.render()


async def test_partial_reversal_gives_back_what_was_not_dispensed(ledger: Ledger) -> None:
    card = await provision_card(ledger, 2, balance=10_000)
    key = next_key()
    await ledger.authorize(withdrawal(card, 6_000, key=key, fee=100))
    too_much = await ledger.reverse(reversal(key, dispensed=6_001))
    assert too_much.outcome is Outcome.REVERSAL_EXCEEDS_ORIGINAL
    partial = await ledger.reverse(reversal(key, dispensed=2_000))
    # 4 000 comes back; the fee stays (cash was partly dispensed).
    assert (partial.outcome, partial.ledger_balance) == (Outcome.APPROVED, 7_900)
    assert (await ledger.reverse(reversal(key))).outcome is Outcome.ALREADY_REVERSED
    assert (await ledger.verify()).ok


async def test_orphan_reversal_leaves_a_tombstone(ledger: Ledger) -> None:
    card = await provision_card(ledger, 3, balance=10_000)
    key = next_key()
    orphan = await ledger.reverse(reversal(key, advice=True))
    assert orphan.outcome is Outcome.ORIGINAL_NOT_FOUND
    late = await ledger.authorize(withdrawal(card, 1_000, key=key))
    assert late.outcome is Outcome.LATE_ORIGINAL
    assert await _balance(ledger, card) == (10_000, 10_000)
    assert await ledger.find_result(key) is None
    assert (await ledger.verify()).ok


async def test_reversals_share_a_batch_with_authorizations_in_arrival_order(
        fresh_dsn: str, clock: Clock) -> None:
    """Reversals ride the group commit: in one statement with authorizations, each
    row sees the rows before it, as if they had been called one by one."""
    sizes: list[int] = []
    ledger = await Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=8, clock=clock,
                               batch_lanes=1, on_batch=sizes.append)
    try:
        await provision_terminal(ledger)
        card = await provision_card(ledger, 11, balance=10_000)
        other = await provision_card(ledger, 12, balance=10_000)
        first, late = next_key(), next_key()
        assert (await ledger.authorize(withdrawal(card, 4_000, key=first, fee=100))).outcome \
            is Outcome.APPROVED
        rev = reversal(first)
        sizes.clear()
        results = await asyncio.gather(
            ledger.authorize(withdrawal(other, 1_000)),            # takes the lane alone
            ledger.reverse(rev),                                   # the batch starts here
            ledger.reverse(reversal(late, advice=True)),           # orphan: leaves a tombstone
            ledger.authorize(withdrawal(card, 500, key=late)),     # ...that this one meets
            ledger.reverse(rev),                                   # a repeat: replayed
            ledger.authorize(withdrawal(card, 0, kind=OpKind.BALANCE_INQUIRY)),
        )
        # The inquiry waits for the card's lock, held by the late original in the batch.
        assert sizes == [1, 4, 1]
        blocker, reversed_, orphan, late_original, repeat, balance = results
        assert blocker.outcome is Outcome.APPROVED
        assert (reversed_.outcome, reversed_.ledger_balance) == (Outcome.APPROVED, 10_000)
        assert orphan.outcome is Outcome.ORIGINAL_NOT_FOUND
        assert late_original.outcome is Outcome.LATE_ORIGINAL
        assert repeat.replayed and repeat.outcome is Outcome.APPROVED
        assert (balance.ledger_balance, balance.available_balance) == (10_000, 10_000)
        report = await ledger.verify()
        assert report.ok, report.render()
    finally:
        await ledger.close()


async def test_reversal_found_by_terminal_and_rrn(ledger: Ledger) -> None:
    card = await provision_card(ledger, 4, balance=10_000)
    await ledger.authorize(withdrawal(card, 3_000, rrn="000000777777"))
    # Field 90 zero-filled: the key is unknown, terminal + RRN find the original.
    found = await ledger.reverse(reversal(None, rrn="000000777777"))
    assert (found.outcome, found.ledger_balance) == (Outcome.APPROVED, 10_000)
    assert (await ledger.reverse(reversal(None, rrn="000000000001"))).outcome \
        is Outcome.ORIGINAL_NOT_FOUND


async def test_reversal_of_a_decline_changes_nothing(ledger: Ledger) -> None:
    card = await provision_card(ledger, 5, balance=1_000)
    key = next_key()
    assert (await ledger.authorize(withdrawal(card, 5_000, key=key))).outcome \
        is Outcome.INSUFFICIENT_FUNDS
    assert (await ledger.reverse(reversal(key))).outcome is Outcome.ORIGINAL_DECLINED
    assert await _balance(ledger, card) == (1_000, 1_000)
    assert (await ledger.verify()).ok


async def test_reversal_gives_back_daily_usage(ledger: Ledger) -> None:
    from ledger.model import CardLimits

    card = await provision_card(ledger, 6, balance=100_000,
                                limits=CardLimits(daily_amount_max=10_000, daily_count_max=1))
    key = next_key()
    assert (await ledger.authorize(withdrawal(card, 10_000, key=key))).outcome \
        is Outcome.APPROVED
    assert (await ledger.authorize(withdrawal(card, 1))).outcome is Outcome.EXCEEDS_DAILY_AMOUNT
    await ledger.reverse(reversal(key))
    assert (await ledger.authorize(withdrawal(card, 10_000))).outcome is Outcome.APPROVED


async def test_hold_then_completion_within_the_hold(ledger: Ledger) -> None:
    card = await provision_card(ledger, 7, balance=10_000)
    hold_key = next_key()
    hold = await ledger.authorize(withdrawal(card, 5_000, key=hold_key, kind=OpKind.HOLD))
    assert (hold.outcome, hold.ledger_balance, hold.available_balance) == (
        Outcome.APPROVED, 10_000, 5_000)
    assert (await ledger.authorize(withdrawal(card, 5_001))).outcome \
        is Outcome.INSUFFICIENT_FUNDS
    completion = await ledger.authorize(withdrawal(
        card, 4_000, kind=OpKind.COMPLETION, pin="none", original=OriginalRef(key=hold_key)))
    assert (completion.outcome, completion.ledger_balance, completion.available_balance,
            completion.suspense_amount) == (Outcome.APPROVED, 6_000, 6_000, 0)
    report = await ledger.verify()
    assert report.ok, report.render()


async def test_completion_above_the_hold_sends_the_excess_to_suspense(ledger: Ledger) -> None:
    card = await provision_card(ledger, 8, balance=10_000)
    hold_key = next_key()
    await ledger.authorize(withdrawal(card, 3_000, key=hold_key, kind=OpKind.HOLD))
    completion = await ledger.authorize(withdrawal(
        card, 3_500, kind=OpKind.COMPLETION, pin="none", original=OriginalRef(key=hold_key)))
    assert (completion.outcome, completion.ledger_balance, completion.suspense_amount) == (
        Outcome.APPROVED, 7_000, 500)
    # No hold at all (unknown original): acknowledged, all of it to suspense.
    orphan = await ledger.authorize(withdrawal(
        card, 1_000, kind=OpKind.COMPLETION, pin="none", original=OriginalRef(key=next_key())))
    assert (orphan.outcome, orphan.suspense_amount, orphan.ledger_balance) == (
        Outcome.APPROVED, 1_000, None)
    report = await ledger.verify()
    assert report.ok, report.render()


async def test_reversal_of_a_completion_gives_back_suspense_first(ledger: Ledger) -> None:
    card = await provision_card(ledger, 9, balance=10_000)
    hold_key = next_key()
    await ledger.authorize(withdrawal(card, 3_000, key=hold_key, kind=OpKind.HOLD))
    completion_key = next_key()
    await ledger.authorize(withdrawal(
        card, 3_500, key=completion_key, kind=OpKind.COMPLETION, pin="none",
        original=OriginalRef(key=hold_key)))
    partial = await ledger.reverse(reversal(completion_key, dispensed=2_000))
    assert (partial.outcome, partial.ledger_balance) == (Outcome.APPROVED, 8_000)
    report = await ledger.verify()
    assert report.ok, report.render()


async def test_reversal_voids_a_hold_fully_or_partly(ledger: Ledger) -> None:
    card = await provision_card(ledger, 10, balance=10_000)
    hold_key = next_key()
    await ledger.authorize(withdrawal(card, 4_000, key=hold_key, kind=OpKind.HOLD))
    partial = await ledger.reverse(reversal(hold_key, dispensed=1_000))
    assert (partial.outcome, partial.available_balance) == (Outcome.APPROVED, 9_000)
    second = next_key()
    await ledger.authorize(withdrawal(card, 2_000, key=second, kind=OpKind.HOLD))
    void = await ledger.reverse(reversal(second))
    assert (void.outcome, void.available_balance) == (Outcome.APPROVED, 9_000)
    # A voided hold cannot be completed any more: the completion goes to suspense.
    late = await ledger.authorize(withdrawal(
        card, 2_000, kind=OpKind.COMPLETION, pin="none", original=OriginalRef(key=second)))
    assert (late.outcome, late.suspense_amount) == (Outcome.APPROVED, 2_000)
    report = await ledger.verify()
    assert report.ok, report.render()


async def test_expired_holds_are_released(ledger: Ledger, clock: Clock) -> None:
    card = await provision_card(ledger, 11, balance=10_000)
    hold_key = next_key()
    await ledger.authorize(withdrawal(card, 4_000, key=hold_key, kind=OpKind.HOLD))
    assert await ledger.expire_holds() == 0
    assert await ledger.expire_holds(clock.now + timedelta(days=8)) == 1
    assert await _balance(ledger, card) == (10_000, 10_000)
    assert (await ledger.reverse(reversal(hold_key))).outcome is Outcome.ALREADY_REVERSED
    report = await ledger.verify()
    assert report.ok, report.render()


async def test_reversing_a_spent_deposit_is_a_forced_debit_the_verifier_accepts(
        ledger: Ledger) -> None:
    # The deposit is credited, the cardholder withdraws it, then the deposit turns
    # out never to have happened (0420 advice): the debit must be taken anyway.
    card = await provision_card(ledger, 21, balance=1_000)
    deposit_key = next_key()
    deposit = await ledger.authorize(withdrawal(card, 5_000, key=deposit_key,
                                                kind=OpKind.DEPOSIT))
    assert (deposit.outcome, deposit.ledger_balance) == (Outcome.APPROVED, 6_000)
    spent = await ledger.authorize(withdrawal(card, 6_000))
    assert spent.outcome is Outcome.APPROVED
    back = await ledger.reverse(reversal(deposit_key, advice=True))
    assert (back.outcome, back.ledger_balance) == (Outcome.APPROVED, -5_000)
    report = await ledger.verify()
    assert report.ok, report.render()
    # The shortfall is allowed only up to what was forced: a further debit is declined.
    assert (await ledger.authorize(withdrawal(card, 1))).outcome is Outcome.INSUFFICIENT_FUNDS


async def test_a_reversed_deposit_that_forced_nothing_allows_no_overdraft(
        ledger: Ledger) -> None:
    # The allowance is what the reversal actually forced, not the deposit's amount:
    # an account taken below its rule by anything else is still reported.
    card = await provision_card(ledger, 22, balance=1_000)
    deposit_key = next_key()
    await ledger.authorize(withdrawal(card, 500, key=deposit_key, kind=OpKind.DEPOSIT))
    back = await ledger.reverse(reversal(deposit_key, advice=True))
    assert (back.outcome, back.ledger_balance) == (Outcome.APPROVED, 1_000)
    assert (await ledger.verify()).ok
    # Simulate a faulty posting past the rule (the hot path never makes one).
    pool = ledger._pool
    conn = await pool.acquire(timeout_s=5)
    try:
        await conn.execute(
            """UPDATE accounts SET posted_debits = posted_debits + 1400
                WHERE id = (SELECT account_id FROM authorizations WHERE card_id = $1
                             AND kind = 3 LIMIT 1)""", card)
    finally:
        pool.release(conn)
    report = await ledger.verify()
    failed = {check.name for check in report.checks if not check.ok}
    assert "available" in failed, report.render()
