"""The ledger's data types: operations in, results out, records for the switch's caches.

All money is ``int`` minor units with an ISO 4217 numeric currency (3 digits).
Enum values are stored in the database: never renumber them. Outcome values
are spaced by 10 so a new outcome can be slotted in at its precedence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Literal


class Outcome(IntEnum):
    """The ledger's decision, ordered by precedence: when several checks fail,
    the lowest value is the one reported (the order networks expect: duplicate,
    card, terminal, PIN, account, limits, funds)."""

    APPROVED = 0
    DUPLICATE_MISMATCH = 10     # same key, different request: never posted twice
    LATE_ORIGINAL = 20          # the key carries a reversal tombstone
    CARD_UNKNOWN = 30
    CARD_BLOCKED = 40
    CARD_LOST = 50
    CARD_STOLEN = 60
    CARD_EXPIRED = 70
    CARD_CLOSED = 80
    TERMINAL_NOT_USABLE = 90    # unknown terminal, inactive, or no cash account
    PIN_TRIES_EXCEEDED = 100
    KEY_STALE = 105             # wrong PIN under a TPK the terminal no longer has: retry
    PIN_WRONG = 110
    NO_SUCH_ACCOUNT = 120       # Result.account_type / account_side say which one
    ACCOUNT_NOT_USABLE = 130
    CURRENCY_MISMATCH = 140
    EXCEEDS_TRANSACTION_LIMIT = 150
    EXCEEDS_DAILY_AMOUNT = 160
    EXCEEDS_DAILY_COUNT = 170
    INSUFFICIENT_FUNDS = 180
    ORIGINAL_NOT_FOUND = 190    # reversal: tombstone left for the key
    ORIGINAL_DECLINED = 200     # reversal of a declined original: nothing to undo
    ALREADY_REVERSED = 210
    REVERSAL_EXCEEDS_ORIGINAL = 220

    @property
    def approved(self) -> bool:
        return self is Outcome.APPROVED


class OpKind(IntEnum):
    """What an :class:`Operation` does. 0 is reserved for reversal tombstones."""

    WITHDRAWAL = 1
    BALANCE_INQUIRY = 2
    DEPOSIT = 3
    TRANSFER = 4
    HOLD = 5          # 0100: pending debit, no journal
    COMPLETION = 6    # 0220: posts the hold (advice: always acknowledged)


class CardStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    LOST = "lost"
    STOLEN = "stolen"
    EXPIRED = "expired"
    CLOSED = "closed"


PinCheck = Literal["ok", "wrong", "none"]
PinMethod = Literal["pvv", "ibm3624"]
AccountSide = Literal["from", "to"]

ACCOUNT_TYPES: frozenset[str] = frozenset({"10", "20", "30"})
DEFAULT_ACCOUNT_TYPE = "00"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """Acquirer (32) + terminal (41) + STAN (11) + transmission date/time (7, MMDDhhmmss).

    The ledger completes it with the year of the transmission date (the one
    nearest to now), which plays the business-date role: STAN wraps and
    MMDDhhmmss repeats every year.
    """

    acquirer_id: str
    terminal_id: str
    stan: str
    transmission_dt: str

    def __post_init__(self) -> None:
        assert len(self.transmission_dt) == 10 and self.transmission_dt.isdigit(), \
            "transmission_dt must be MMDDhhmmss"
        assert self.stan and self.terminal_id, "STAN and terminal id are required"


@dataclass(frozen=True, slots=True)
class OriginalRef:
    """Where to find an original: its key (field 90), else terminal + RRN (field 37)."""

    key: IdempotencyKey | None
    terminal_id: str | None = None
    rrn: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One authorization/financial request for :meth:`ledger.store.Ledger.authorize`.

    ``pin_check`` is the HSM's verdict on the PIN block (``"none"`` when the
    message carries no PIN, e.g. a completion). ``pin_key`` is the terminal PIN
    key (its stored wrapped-key text) the block was verified under: a wrong PIN
    counts against the card only if that is still the terminal's key, otherwise
    the result is ``KEY_STALE`` and nothing is recorded (verify again, resubmit).
    ``original`` is required for ``COMPLETION`` (the 0100 being completed).
    ``fee`` (terminal fee, debited from the cardholder to fee income) is in the
    same currency.
    For ``DEPOSIT`` the credited account is ``to_account_type`` (or
    ``from_account_type`` when ``to_account_type`` is 00).
    """

    kind: OpKind
    key: IdempotencyKey
    card_id: int
    request_digest: bytes
    from_account_type: str
    to_account_type: str
    amount: int
    currency: str
    rrn: str | None = None
    pin_check: PinCheck = "none"
    pin_tries_max: int = 3
    original: OriginalRef | None = None
    fee: int = 0
    pin_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ReversalOp:
    """A reversal (0400/0420 and repeats). ``amount_dispensed`` None or 0 = full
    reversal; otherwise partial: give back original amount − dispensed."""

    key: IdempotencyKey
    original: OriginalRef
    amount_dispensed: int | None
    is_advice: bool
    request_digest: bytes = b""


@dataclass(frozen=True, slots=True)
class Result:
    """The ledger's answer (also what a repeat replays).

    Balances are those of the from-account after the operation, in minor
    units: ``ledger_balance`` = posted; ``available_balance`` = posted −
    pending debits + overdraft limit. ``account_type`` is the resolved type
    (never 00) when known. For ``NO_SUCH_ACCOUNT``, ``account_type`` is the
    requested type and ``account_side`` says which side of a transfer it is.
    ``suspense_amount`` is what a completion posted to suspense for review.
    """

    outcome: Outcome
    replayed: bool
    approval_code: str | None
    account_type: str | None
    currency: str | None
    ledger_balance: int | None
    available_balance: int | None
    authorization_id: int | None
    suspense_amount: int = 0
    account_side: AccountSide | None = None


@dataclass(frozen=True, slots=True)
class CardLimits:
    """Per-card limits (None = no limit). Daily ones count per business day."""

    txn_amount_max: int | None = None
    daily_amount_max: int | None = None
    daily_count_max: int | None = None


@dataclass(frozen=True, slots=True)
class CardRecord:
    """What the switch caches about a card (the PAN itself is never returned)."""

    card_id: int
    expiry: str                 # YYMM
    status: CardStatus
    pin_method: PinMethod
    pvv: str | None
    pvki: str | None
    pin_offset: str | None
    pin_tries: int
    account_types: tuple[str, ...]   # linked ISO account types, e.g. ("10", "20")
    default_account_type: str | None = None
    limits: CardLimits = field(default_factory=CardLimits)

    def packed(self) -> PackedCard:
        """The record as a tuple of plain values, for a long-lived cache.

        The cyclic garbage collector stops tracking a tuple that holds only strings,
        numbers and None, so tens of thousands of cached cards add nothing to the
        time a full collection (which pauses the event loop) takes; as objects
        they made every full collection scan three objects per card.
        """
        lim = self.limits
        return (self.card_id, self.expiry, self.status.value, self.pin_method, self.pvv,
                self.pvki, self.pin_offset, self.pin_tries, self.account_types,
                self.default_account_type, lim.txn_amount_max, lim.daily_amount_max,
                lim.daily_count_max)

    @classmethod
    def unpacked(cls, row: PackedCard) -> CardRecord:
        """The inverse of :meth:`packed`."""
        (card_id, expiry, status, pin_method, pvv, pvki, pin_offset, pin_tries, types,
         default_type, txn_max, daily_amount_max, daily_count_max) = row
        return cls(card_id, expiry, CardStatus(status), pin_method, pvv, pvki, pin_offset,
                   pin_tries, types, default_type,
                   CardLimits(txn_max, daily_amount_max, daily_count_max))


PackedCard = tuple[int, str, str, PinMethod, str | None, str | None, str | None, int,
                   tuple[str, ...], str | None, int | None, int | None, int | None]


@dataclass(frozen=True, slots=True)
class TerminalRecord:
    """What the switch caches about a terminal. Keys are wrapped-key texts."""

    terminal_id: str
    acquirer_id: str
    status: str
    tpk: str | None
    tmk: str | None
    tak: str | None
    pin_block_format: int
    sign_on_required: bool
    mac_required: bool
    profile: str
    currency: str = ""
    location: str = ""


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """A cardholder account linked to a card. ``account_ref`` names the account
    (two cards may share one). The opening balance is posted once, when the
    account is created, as a funding journal from settlement."""

    account_type: str           # "10" savings, "20" checking, "30" credit
    account_ref: str
    currency: str
    opening_balance: int = 0
    overdraft_limit: int = 0
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class CardSpec:
    """Provisioning of one card. PIN verification data comes already computed by the HSM."""

    pan: str
    expiry: str                 # YYMM
    accounts: Sequence[AccountSpec]
    pin_method: PinMethod = "pvv"
    pvv: str | None = None
    pvki: str | None = None
    pin_offset: str | None = None
    status: CardStatus = CardStatus.ACTIVE
    limits: CardLimits = field(default_factory=CardLimits)


@dataclass(frozen=True, slots=True)
class TerminalSpec:
    """Provisioning of one ATM. ``cash_opening`` loads its cash account once, on creation."""

    terminal_id: str
    acquirer_id: str
    currency: str
    location: str = ""
    status: str = "active"
    tpk: str | None = None
    tmk: str | None = None
    tak: str | None = None
    pin_block_format: int = 0
    sign_on_required: bool = True
    mac_required: bool = False
    profile: str = "binary"
    cash_opening: int = 0
