"""Builders shared by the ledger tests."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ledger.model import (
    AccountSpec,
    CardLimits,
    CardSpec,
    IdempotencyKey,
    Operation,
    OpKind,
    OriginalRef,
    ReversalOp,
    TerminalSpec,
)
from ledger.store import Ledger
from messages.fields import luhn_complete

DATA_KEY = bytes(range(32))
CURRENCY = "840"
TERMINAL = "ATM00001"
TERMINAL_TPK = "TPK-TEXT"   # the PIN key (wrapped-key text) provision_terminal stores
ACQUIRER = "123456"
NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
TRANSMISSION_DT = "1124120000"

_stans = itertools.count(1)


def next_key(terminal: str = TERMINAL, *, stan: int | None = None,
             transmission_dt: str = TRANSMISSION_DT) -> IdempotencyKey:
    number = next(_stans) if stan is None else stan
    return IdempotencyKey(ACQUIRER, terminal, f"{number % 1_000_000:06d}", transmission_dt)


def digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode()).digest()


def pan_for(n: int) -> str:
    """A Luhn-valid 16-digit PAN per n."""
    return luhn_complete(f"476173{n:09d}")


@dataclass
class Clock:
    now: datetime = field(default=NOW)

    def __call__(self) -> datetime:
        return self.now


def withdrawal(card_id: int, amount: int, *, key: IdempotencyKey | None = None,
               account: str = "00", pin: str = "ok", fee: int = 0,
               kind: OpKind = OpKind.WITHDRAWAL, rrn: str | None = None,
               terminal: str = TERMINAL, currency: str = CURRENCY,
               to_account: str = "00", original: OriginalRef | None = None,
               pin_tries_max: int = 3, pin_key: str | None = None) -> Operation:
    key = key or next_key(terminal)
    return Operation(
        kind=kind, key=key, card_id=card_id,
        request_digest=digest(card_id, kind, amount, account, to_account),
        from_account_type=account, to_account_type=to_account, amount=amount,
        currency=currency, rrn=rrn or key.stan.rjust(12, "0"), pin_check=pin,  # type: ignore[arg-type]
        pin_tries_max=pin_tries_max, original=original, fee=fee, pin_key=pin_key)


def reversal(original: IdempotencyKey | None, *, dispensed: int | None = None,
             advice: bool = False, key: IdempotencyKey | None = None,
             rrn: str | None = None, terminal: str = TERMINAL) -> ReversalOp:
    return ReversalOp(key=key or next_key(terminal),
                      original=OriginalRef(key=original, terminal_id=terminal, rrn=rrn),
                      amount_dispensed=dispensed, is_advice=advice,
                      request_digest=digest("rev", dispensed))


async def provision_terminal(ledger: Ledger, terminal: str = TERMINAL,
                             cash: int = 10_000_000) -> None:
    await ledger.upsert_terminal(TerminalSpec(
        terminal_id=terminal, acquirer_id=ACQUIRER, currency=CURRENCY, cash_opening=cash,
        tpk=TERMINAL_TPK, sign_on_required=False))


async def provision_card(ledger: Ledger, n: int, *, balance: int = 100_000,
                         savings: int | None = None, overdraft: int = 0,
                         limits: CardLimits | None = None, expiry: str = "3012") -> int:
    accounts = [AccountSpec("20", f"acct-{n}-20", CURRENCY, balance, overdraft, True)]
    if savings is not None:
        accounts.append(AccountSpec("10", f"acct-{n}-10", CURRENCY, savings))
    return await ledger.upsert_card(CardSpec(
        pan=pan_for(n), expiry=expiry, accounts=accounts, pvv="1234", pvki="1",
        limits=limits or CardLimits()))
