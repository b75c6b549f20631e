"""The benchmark's data and workload, pure: no sockets, no database, no clock.

- `Dataset`: N cards and M ATMs with seeded, reproducible PANs, PINs and TPKs,
  and the provisioning JSON the switch loads through `atm-switch provision`.
- `Mix`: the operation mix (default 70% withdrawal, 15% balance inquiry, 5%
  wrong PIN, 5% insufficient funds, 5% reversal of an earlier withdrawal).
- `CardState` / `OpChooser`: which operation and which card comes next on one
  ATM connection, with the few rules that keep every expected answer
  deterministic (see `OpChooser.next`).

Cards are partitioned by ATM connection (card i belongs to connection
i mod C), as a real card is at one ATM at a time: two requests never race on
one card unless the open loop runs out of idle cards (counted, see loadgen).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from messages.fields import luhn_complete

BENCH_BIN = "499999"          # card number prefix used only by the benchmark
BENCH_ACQUIRER = "654321"
BENCH_CURRENCY = "840"
CARD_EXPIRY = "3412"
# Balances large enough that a run never drains a card by withdrawals alone
# (max 128 ATMs x a few thousand withdrawals x 200.00 is far below 100M.00),
# and an "insufficient funds" request that is always above the balance.
CARD_BALANCE = 10_000_000_000          # minor units: 100,000,000.00
INSUFFICIENT_AMOUNT = 900_000_000_000  # 12 digits fit field 4
ATM_CASH = 10_000_000_000_000
WITHDRAWAL_AMOUNTS = tuple(range(2_000, 20_001, 1_000))  # 20.00 .. 200.00
REVERSALS_REMEMBERED_MAX = 64  # per connection: withdrawals that may be reversed later


class Op(enum.StrEnum):
    WITHDRAWAL = "withdrawal"
    BALANCE = "balance"
    WRONG_PIN = "wrong_pin"
    INSUFFICIENT = "insufficient"
    REVERSAL = "reversal"


# The field 39 each operation must get back; anything else is counted as an error.
EXPECTED_CODE: Mapping[Op, str] = {
    Op.WITHDRAWAL: "00",
    Op.BALANCE: "00",
    Op.WRONG_PIN: "55",
    Op.INSUFFICIENT: "51",
    Op.REVERSAL: "00",   # 0430: an advice is always acknowledged
}


@dataclass(frozen=True)
class Mix:
    """Relative weights of the operations; they need not sum to 100."""

    withdrawal: float = 70.0
    balance: float = 15.0
    wrong_pin: float = 5.0
    insufficient: float = 5.0
    reversal: float = 5.0

    def __post_init__(self) -> None:
        weights = self.weights()
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("mix weights must be >= 0 and not all zero")

    def weights(self) -> dict[Op, float]:
        return {Op.WITHDRAWAL: self.withdrawal, Op.BALANCE: self.balance,
                Op.WRONG_PIN: self.wrong_pin, Op.INSUFFICIENT: self.insufficient,
                Op.REVERSAL: self.reversal}

    @classmethod
    def parse(cls, text: str) -> Mix:
        """`withdrawal=70,balance=15,wrong_pin=5,insufficient=5,reversal=5`, or any
        subset: an operation not named is not sent (weight 0), so `withdrawal=1` is a
        mix of withdrawals only, not one that keeps the default's others.

        Raises ValueError naming the bad item.
        """
        values: dict[str, float] = dict.fromkeys((op.value for op in Op), 0.0)
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, number = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in values:
                raise ValueError(f"mix item {item!r}: expected NAME=WEIGHT with NAME in "
                                 f"{list(values)}")
            try:
                values[name] = float(number)
            except ValueError:
                raise ValueError(f"mix item {item!r}: weight is not a number") from None
        return cls(**values)

    def as_dict(self) -> dict[str, float]:
        return {op.value: w for op, w in self.weights().items()}


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest starred (the only way a PAN is ever printed)."""
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:] if len(pan) >= 13 else "*" * len(pan)


def _odd_parity(byte: int) -> int:
    # DES keys carry odd parity in the low bit of each byte; the HSM checks it.
    return byte if bin(byte).count("1") % 2 == 1 else byte ^ 1


def tdes_key_hex(rng: random.Random, length_bytes: int = 16) -> str:
    raw = bytes(_odd_parity(rng.randrange(256)) for _ in range(length_bytes))
    if raw[:8] == raw[8:16]:  # a double-length key with equal halves is single DES
        return tdes_key_hex(rng, length_bytes)
    return raw.hex().upper()


@dataclass(frozen=True)
class Card:
    pan: str
    pin: str
    expiry: str = CARD_EXPIRY

    @property
    def wrong_pin(self) -> str:
        return f"{(int(self.pin) + 1) % 10_000:04d}"

    def __repr__(self) -> str:  # never show the PAN in clear or the PIN
        return f"Card(pan={mask_pan(self.pan)})"


@dataclass(frozen=True)
class Atm:
    terminal_id: str
    tpk_hex: str
    acquirer_id: str = BENCH_ACQUIRER

    def __repr__(self) -> str:
        return f"Atm({self.terminal_id})"


@dataclass(frozen=True)
class Dataset:
    cards: tuple[Card, ...]
    atms: tuple[Atm, ...]

    @classmethod
    def generate(cls, cards: int, atms: int, *, seed: int = 8583) -> Dataset:
        assert cards >= 1 and atms >= 1, (cards, atms)
        assert cards < 10**9 and atms < 10**4, "PAN serial / terminal id space"
        rng = random.Random(seed)
        card_list = tuple(
            Card(pan=luhn_complete(f"{BENCH_BIN}{i:09d}"), pin=f"{rng.randrange(10_000):04d}")
            for i in range(cards))
        atm_list = tuple(Atm(terminal_id=f"BNCH{i:04d}", tpk_hex=tdes_key_hex(rng))
                         for i in range(atms))
        return cls(card_list, atm_list)

    def provisioning(self) -> dict[str, Any]:
        """The `atm-switch provision` JSON (clear PINs and keys: write it 0600, delete it)."""
        return {
            "terminals": [{"id": a.terminal_id, "tpk": a.tpk_hex, "acquirer": a.acquirer_id,
                           "currency": BENCH_CURRENCY, "location": "benchmark",
                           "cash": ATM_CASH} for a in self.atms],
            # No daily limits: a benchmark must not turn into 61/65 declines mid-run.
            "cards": [{"pan": c.pan, "expiry": c.expiry, "pin": c.pin, "balance": CARD_BALANCE,
                       "currency": BENCH_CURRENCY} for c in self.cards],
        }

    def partition(self, connections: int) -> list[list[int]]:
        """Card indexes per connection: card i goes to connection i mod C (wrapping
        when there are fewer cards than connections)."""
        assert connections >= 1
        parts: list[list[int]] = [[] for _ in range(connections)]
        for i in range(max(len(self.cards), connections)):
            parts[i % connections].append(i % len(self.cards))
        return parts


@dataclass
class CardState:
    index: int
    wrong_streak: int = 0   # consecutive wrong PINs sent and not yet cleared by a good one
    busy: bool = False      # a request for this card is in flight


@dataclass
class Withdrawn:
    """An approved withdrawal that a later reversal may undo (fully or partly)."""

    card_index: int
    request: Any  # messages.codec.IsoMessage (kept untyped: this module stays import-light)
    amount: int


@dataclass
class OpChooser:
    """The next operation on one ATM connection.

    Rules that keep every expected field 39 deterministic:
    - a wrong PIN goes only to a card whose previous PIN was right (so the try
      counter never reaches the limit and no 75 appears);
    - a reversal takes the oldest remembered approved withdrawal of this
      connection; with none remembered it becomes a withdrawal (counted);
    - a card already in flight is skipped (open loop with pipelining).
    """

    mix: Mix
    cards: Sequence[int]
    rng: random.Random
    states: dict[int, CardState] = field(init=False)
    withdrawn: deque[Withdrawn] = field(
        default_factory=lambda: deque(maxlen=REVERSALS_REMEMBERED_MAX))
    substituted: int = 0
    collisions: int = 0
    _ops: list[Op] = field(init=False)
    _cum: list[float] = field(init=False)

    def __post_init__(self) -> None:
        assert self.cards, "a connection needs at least one card"
        self.states = {i: CardState(i) for i in self.cards}
        weights = self.mix.weights()
        self._ops = list(weights)
        total = 0.0
        self._cum = []
        for op in self._ops:
            total += weights[op]
            self._cum.append(total)

    def _draw_op(self) -> Op:
        x = self.rng.random() * self._cum[-1]
        for op, bound in zip(self._ops, self._cum, strict=True):
            if x < bound:
                return op
        return self._ops[-1]

    def _idle_card(self, *, need_clean_pin: bool = False) -> CardState | None:
        for _ in range(8):  # bounded: a few random probes, then give up
            state = self.states[self.cards[self.rng.randrange(len(self.cards))]]
            if not state.busy and (not need_clean_pin or state.wrong_streak == 0):
                return state
        return None

    def next(self) -> tuple[Op, CardState, Withdrawn | None]:
        """Choose (operation, card, withdrawal to reverse or None); marks the card busy."""
        op = self._draw_op()
        if op is Op.REVERSAL:
            original = self._take_reversible()
            if original is not None:
                state = self.states[original.card_index]
                state.busy = True
                return op, state, original
            op = Op.WITHDRAWAL
            self.substituted += 1
        state = self._idle_card(need_clean_pin=op is Op.WRONG_PIN)
        if state is None and op is Op.WRONG_PIN:
            op = Op.BALANCE
            self.substituted += 1
            state = self._idle_card()
        if state is None:
            # Everything probed is in flight: go on with a busy card rather than
            # delay the arrival (open loop must not wait); counted.
            self.collisions += 1
            state = self.states[self.cards[self.rng.randrange(len(self.cards))]]
        state.busy = True
        return op, state, None

    def _take_reversible(self) -> Withdrawn | None:
        for _ in range(len(self.withdrawn)):
            item = self.withdrawn.popleft()
            if not self.states[item.card_index].busy:
                return item
            self.withdrawn.append(item)
        return None

    def done(self, op: Op, state: CardState, code: str | None,
             withdrawn: Withdrawn | None = None) -> None:
        """Record the outcome: frees the card, tracks PIN streaks and reversible withdrawals."""
        state.busy = False
        if op is Op.WRONG_PIN:
            # Counted even without a 55 (a timeout, a 96): the host may still have
            # counted the try, and a third one must never be sent (it would be a 75).
            state.wrong_streak += 1
        elif op is not Op.REVERSAL and code == "00":
            # An approval proves the PIN was verified, which resets the host's
            # try counter (a 51 may or may not have: do not count on it).
            state.wrong_streak = 0
        if op is Op.WITHDRAWAL and code == "00" and withdrawn is not None:
            self.withdrawn.append(withdrawn)

