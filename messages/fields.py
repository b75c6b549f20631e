"""Parsers and builders for structured fields, and the masked wrapper types.

Every parser raises :class:`FieldError` naming the field; no error text
carries a value. ``repr``/``str`` of :class:`Pan`, :class:`Track2`,
:class:`PinBlock` and :class:`KeyData` never show the clear value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Final

from messages._mask import REDACTED, mask_digits
from messages.errors import CardNumberError, EncodeError, FieldError

__all__ = [
    "AccountType",
    "AdditionalAmount",
    "AmountType",
    "KeyData",
    "OriginalData",
    "Pan",
    "PinBlock",
    "ProcessingCode",
    "ReplacementAmounts",
    "Track2",
    "TxnType",
    "encode_additional_amounts",
    "luhn_ok",
    "parse_additional_amounts",
]

_HEX: Final = frozenset("0123456789ABCDEF")


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn (mod 10) check (False for non-digits)."""
    if not _is_digits(digits):
        return False
    # Every second digit from the right is doubled (digit sum of the double,
    # by table); the string work runs in C.
    raw = (digits[-1::-2] + digits[-2::-2].translate(_LUHN_DOUBLE)).encode("ascii")
    return (sum(raw) - 48 * len(raw)) % 10 == 0


# "0".."9" -> the digit sum of twice that digit.
_LUHN_DOUBLE: Final = str.maketrans("0123456789", "0246813579")


def luhn_complete(body: str) -> str:
    """``body`` (digits) followed by the Luhn check digit that makes it valid."""
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("one of ten check digits always completes a Luhn number")


# --------------------------------------------------------------------------- PAN, track 2


@dataclass(frozen=True, slots=True, repr=False, init=False)
class Pan:
    """A primary account number: 12 to 19 digits passing Luhn.

    ``digits`` is the clear value for code that must have it; ``repr``/``str``
    and ``masked`` show the first 6 and last 4 digits only.
    Raises CardNumberError(``field``, …) (field 2 unless told otherwise).
    """

    digits: str
    field: int = dc_field(default=2, compare=False)

    # The field types spell out their constructors (init=False) for the reason
    # given at messages.views.TransactionRequest: they are made for every request.
    def __init__(self, digits: str, field: int = 2) -> None:
        object.__setattr__(self, "digits", digits)
        object.__setattr__(self, "field", field)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not (isinstance(self.digits, str) and _is_digits(self.digits)):
            raise CardNumberError(self.field, "PAN must be digits")
        if not 12 <= len(self.digits) <= 19:
            raise CardNumberError(self.field,
                                  f"PAN has {len(self.digits)} digits, expecting 12 to 19")
        if not luhn_ok(self.digits):
            raise CardNumberError(self.field, "PAN fails the Luhn check")

    @property
    def masked(self) -> str:
        return mask_digits(self.digits)

    def __repr__(self) -> str:
        return f"Pan({self.masked!r})"

    def __str__(self) -> str:
        return self.masked


@dataclass(frozen=True, slots=True, repr=False, init=False)
class Track2:
    """Track 2 equivalent data: PAN, separator, expiry YYMM, service code, discretionary data.

    :meth:`parse` accepts ``=`` or ``D`` as separator, start/end sentinels and a
    trailing ``F`` pad; :meth:`to_iso` always writes ``=`` without pad.
    ``repr``/``str`` show the masked PAN only.
    """

    pan: Pan
    expiry: str
    service_code: str
    discretionary: str = ""
    separator: str = dc_field(default="=", compare=False)

    def __init__(self, pan: Pan, expiry: str, service_code: str, discretionary: str = "",
                 separator: str = "=") -> None:
        object.__setattr__(self, "pan", pan)
        object.__setattr__(self, "expiry", expiry)
        object.__setattr__(self, "service_code", service_code)
        object.__setattr__(self, "discretionary", discretionary)
        object.__setattr__(self, "separator", separator)
        self.__post_init__()

    @classmethod
    def parse(cls, text: str) -> Track2:
        """Parse field 35. Raises FieldError(35, …)."""
        body = text.upper()
        if body.startswith(";"):
            body = body[1:]
        if body.endswith("?"):
            body = body[:-1]
        body = body.rstrip("F")  # nibble padding of an odd-length track
        for separator in ("=", "D"):
            if separator in body:
                break
        else:
            raise FieldError(35, "track 2 has no separator")
        pan_text, _, rest = body.partition(separator)
        if not _is_digits(rest) or len(rest) < 7:
            raise FieldError(35, "track 2 needs expiry and service code digits after the separator")
        return cls(
            Pan(pan_text, field=35), rest[:4], rest[4:7], rest[7:], separator=separator
        )

    def __post_init__(self) -> None:
        if not (_is_digits(self.expiry) and len(self.expiry) == 4):
            raise FieldError(35, "track 2 expiry must be 4 digits")
        if not (_is_digits(self.service_code) and len(self.service_code) == 3):
            raise FieldError(35, "track 2 service code must be 3 digits")
        if self.discretionary and not _is_digits(self.discretionary):
            raise FieldError(35, "track 2 discretionary data must be digits")
        if len(self.to_iso()) > 37:
            raise FieldError(35, "track 2 is longer than 37 characters")

    def to_iso(self) -> str:
        return f"{self.pan.digits}={self.expiry}{self.service_code}{self.discretionary}"

    def __repr__(self) -> str:
        return f"Track2(pan={self.pan!r}, <redacted>)"

    def __str__(self) -> str:
        return f"{self.pan.masked}=<redacted>"


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True, slots=True, repr=False, init=False)
class PinBlock:
    """An encrypted PIN block: 16 hex characters (normalised to upper case).

    Nothing of the value is shown by ``repr``/``str``; ``hex`` gives it.
    """

    hex: str

    def __init__(self, hex: str) -> None:
        object.__setattr__(self, "hex", hex)
        self.__post_init__()

    def __post_init__(self) -> None:
        value = self.hex.upper() if isinstance(self.hex, str) else ""
        if len(value) != 16 or not set(value) <= _HEX:
            raise FieldError(52, "PIN block must be 16 hex characters")
        object.__setattr__(self, "hex", value)

    def __repr__(self) -> str:
        return f"PinBlock({REDACTED})"

    def __str__(self) -> str:
        return self.__repr__()


@dataclass(frozen=True, slots=True, repr=False)
class KeyData:
    """Key material or other secret text carried in a field (48, 96 in key exchange).

    Nothing of the value is shown by ``repr``/``str``; ``value`` gives it.
    """

    value: str

    def __repr__(self) -> str:
        return f"KeyData({REDACTED})"

    def __str__(self) -> str:
        return self.__repr__()


# --------------------------------------------------------------------------- processing code


class TxnType:
    """Transaction types (first two digits of field 3)."""

    WITHDRAWAL: Final = "01"
    BALANCE_INQUIRY: Final = ("30", "31")  # networks differ; both mean balance inquiry
    DEPOSIT: Final = "21"
    TRANSFER: Final = "40"
    MINI_STATEMENT: Final = "38"


class AccountType:
    """Account types (digits 3-4 and 5-6 of field 3; also field 54 blocks)."""

    DEFAULT: Final = "00"
    SAVINGS: Final = "10"
    CHECKING: Final = "20"
    CREDIT: Final = "30"


@dataclass(frozen=True, slots=True, init=False)
class ProcessingCode:
    """Field 3: transaction type, from-account type, to-account type (2 digits each)."""

    txn_type: str
    from_account: str = AccountType.DEFAULT
    to_account: str = AccountType.DEFAULT

    def __init__(self, txn_type: str, from_account: str = AccountType.DEFAULT,
                 to_account: str = AccountType.DEFAULT) -> None:
        object.__setattr__(self, "txn_type", txn_type)
        object.__setattr__(self, "from_account", from_account)
        object.__setattr__(self, "to_account", to_account)
        self.__post_init__()

    def __post_init__(self) -> None:
        for part in (self.txn_type, self.from_account, self.to_account):
            if not (isinstance(part, str) and len(part) == 2 and _is_digits(part)):
                raise FieldError(3, "processing code parts must be 2 digits each")

    @classmethod
    def parse(cls, text: str) -> ProcessingCode:
        """Parse 6 digits. Raises FieldError(3, …)."""
        if not (len(text) == 6 and _is_digits(text)):
            raise FieldError(3, "processing code must be 6 digits")
        return cls(text[0:2], text[2:4], text[4:6])

    def to_iso(self) -> str:
        return f"{self.txn_type}{self.from_account}{self.to_account}"

    @property
    def is_balance_inquiry(self) -> bool:
        return self.txn_type in TxnType.BALANCE_INQUIRY


# --------------------------------------------------------------------------- field 54


class AmountType:
    """Amount types in field 54 blocks."""

    LEDGER: Final = "01"
    AVAILABLE: Final = "02"


_BLOCK: Final = 20
_BLOCKS_MAX: Final = 6
_AMOUNT_MAX: Final = 10**12 - 1


@dataclass(frozen=True, slots=True, init=False)
class AdditionalAmount:
    """One 20-character block of field 54. ``amount`` is signed minor units
    (``C`` on the wire for >= 0, ``D`` for < 0)."""

    account_type: str
    amount_type: str
    currency: str
    amount: int

    def __init__(self, account_type: str, amount_type: str, currency: str,
                 amount: int) -> None:
        object.__setattr__(self, "account_type", account_type)
        object.__setattr__(self, "amount_type", amount_type)
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "amount", amount)

    def to_iso(self) -> str:
        """The 20-character block. Raises EncodeError(54, …)."""
        for part, width in ((self.account_type, 2), (self.amount_type, 2), (self.currency, 3)):
            if not (len(part) == width and _is_digits(part)):
                raise EncodeError(54, "account type, amount type and currency must be digits")
        if abs(self.amount) > _AMOUNT_MAX:
            raise EncodeError(54, "amount does not fit 12 digits")
        sign = "C" if self.amount >= 0 else "D"
        return f"{self.account_type}{self.amount_type}{self.currency}{sign}{abs(self.amount):012d}"


def encode_additional_amounts(amounts: Iterable[AdditionalAmount]) -> str:
    """Field 54 from at most 6 blocks. Raises EncodeError(54, …)."""
    blocks = [amount.to_iso() for amount in amounts]
    if not blocks or len(blocks) > _BLOCKS_MAX:
        raise EncodeError(54, f"field 54 takes 1 to {_BLOCKS_MAX} blocks, got {len(blocks)}")
    return "".join(blocks)


def parse_additional_amounts(text: str) -> tuple[AdditionalAmount, ...]:
    """Parse field 54 (1 to 6 blocks of 20 characters). Raises FieldError(54, …)."""
    if not text or len(text) % _BLOCK or len(text) > _BLOCK * _BLOCKS_MAX:
        raise FieldError(54, f"field 54 must be 1 to {_BLOCKS_MAX} blocks of {_BLOCK} characters")
    amounts = []
    for start in range(0, len(text), _BLOCK):
        block = text[start : start + _BLOCK]
        head, sign, digits = block[:7], block[7], block[8:]
        if not (_is_digits(head) and _is_digits(digits) and sign in "CD"):
            raise FieldError(54, f"block at character {start} is malformed")
        value = int(digits)
        amounts.append(
            AdditionalAmount(head[0:2], head[2:4], head[4:7], -value if sign == "D" else value)
        )
    return tuple(amounts)


# --------------------------------------------------------------------------- field 90


_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def valid_mmddhhmmss(text: str) -> bool:
    """True when `text` is 10 digits naming a real date and time of some year
    (29 February allowed: the year is not carried)."""
    if not (len(text) == 10 and _is_digits(text)):
        return False
    month, day, hour, minute, second = (int(text[i : i + 2]) for i in range(0, 10, 2))
    return (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]
            and hour < 24 and minute < 60 and second < 60)


@dataclass(frozen=True, slots=True)
class OriginalData:
    """Field 90, original data elements (n42): MTI (4), STAN (6), transmission
    date/time (10), acquirer id (11) and forwarding institution id (11).

    The institution ids are kept without their left zero padding, so they
    compare equal to field 32/33 whichever way the acquirer padded those.
    """

    mti: str
    stan: str
    transmission_dt: str
    acquirer_id: str = "0"
    forwarding_id: str = "0"


    def __post_init__(self) -> None:
        widths = ((self.mti, 4), (self.stan, 6), (self.transmission_dt, 10))
        for part, width in widths:
            if not (len(part) == width and _is_digits(part)):
                raise FieldError(90, "original MTI, STAN and date/time must be fixed-width digits")
        if set(self.transmission_dt) != {"0"} and not valid_mmddhhmmss(self.transmission_dt):
            raise FieldError(90, "original transmission date/time is not a real MMDDhhmmss")
        ids = (("acquirer_id", self.acquirer_id), ("forwarding_id", self.forwarding_id))
        for name, part in ids:
            if not (1 <= len(part) <= 11 and _is_digits(part)):
                raise FieldError(90, "original institution ids must be 1 to 11 digits")
            object.__setattr__(self, name, part.lstrip("0") or "0")

    @classmethod
    def parse(cls, text: str) -> OriginalData:
        """Parse 42 digits. Raises FieldError(90, …)."""
        if not (len(text) == 42 and _is_digits(text)):
            raise FieldError(90, "field 90 must be 42 digits")
        return cls(text[0:4], text[4:10], text[10:20], text[20:31], text[31:42])

    def to_iso(self) -> str:
        return (
            f"{self.mti}{self.stan}{self.transmission_dt}"
            f"{self.acquirer_id:0>11}{self.forwarding_id:0>11}"
        )

    @property
    def is_zero_filled(self) -> bool:
        """True when STAN or transmission date/time are zeros, so the original
        cannot be found by key: fall back to terminal + RRN."""
        return set(self.stan) == {"0"} or set(self.transmission_dt) == {"0"}


# --------------------------------------------------------------------------- field 95


def _parse_fee(text: str, start: int) -> int:
    sign, digits = text[0], text[1:]
    if text.strip(" ") == "" or set(text) == {"0"}:
        return 0  # zero- or space-filled fee: sent by acquirers with no fee to report
    if sign not in "CD" or not _is_digits(digits):
        raise FieldError(95, f"fee at character {start} must be C/D and 8 digits")
    return -int(digits) if sign == "D" else int(digits)


def _fee_text(value: int) -> str:
    if abs(value) > 10**8 - 1:
        raise EncodeError(95, "fee does not fit 8 digits")
    return f"{'C' if value >= 0 else 'D'}{abs(value):08d}"


@dataclass(frozen=True, slots=True)
class ReplacementAmounts:
    """Field 95 (an42): actual transaction amount (12), actual settlement amount
    (12), transaction fee (C/D + 8), settlement fee (C/D + 8). Minor units;
    fees are signed (C >= 0, D < 0)."""

    actual_amount: int
    settlement_amount: int = 0
    transaction_fee: int = 0
    settlement_fee: int = 0


    @classmethod
    def parse(cls, text: str) -> ReplacementAmounts:
        """Parse 42 characters. Raises FieldError(95, …)."""
        if len(text) != 42:
            raise FieldError(95, "field 95 must be 42 characters")
        if not (_is_digits(text[0:12]) and _is_digits(text[12:24])):
            raise FieldError(95, "field 95 amounts must be 12 digits each")
        return cls(
            int(text[0:12]),
            int(text[12:24]),
            _parse_fee(text[24:33], 24),
            _parse_fee(text[33:42], 33),
        )

    def to_iso(self) -> str:
        """The 42 characters. Raises EncodeError(95, …)."""
        for amount in (self.actual_amount, self.settlement_amount):
            if not 0 <= amount <= _AMOUNT_MAX:
                raise EncodeError(95, "amounts must be 0 to 12 digits")
        return (
            f"{self.actual_amount:012d}{self.settlement_amount:012d}"
            f"{_fee_text(self.transaction_fee)}{_fee_text(self.settlement_fee)}"
        )

    @property
    def is_partial(self) -> bool:
        """A non-zero actual amount: only that much was dispensed."""
        return self.actual_amount != 0
