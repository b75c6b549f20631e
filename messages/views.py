"""Typed, frozen views of the messages the host handles, and :func:`respond`.

``from_iso`` checks what the view needs and raises :class:`FieldError` naming
the first field that is missing or wrong (the switch answers 39=30);
``to_iso`` builds an :class:`IsoMessage` that the codec will encode.

Views hold PAN, track 2 and PIN block as masked wrapper types, and keep other
sensitive text (expiry and fields 48, 55, 102, 103) out of their ``repr``, so
a view can be logged as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from functools import partial
from typing import Any, Final, Self

from messages.codec import IsoMessage, check_field, mac_field_for
from messages.codes import ResponseCode
from messages.errors import EncodeError, FieldError
from messages.fields import (
    AdditionalAmount,
    KeyData,
    OriginalData,
    Pan,
    PinBlock,
    ProcessingCode,
    ReplacementAmounts,
    Track2,
    TxnType,
    encode_additional_amounts,
    parse_additional_amounts,
    valid_mmddhhmmss,
)
from messages.mti import MsgClass, Mti

__all__ = [
    "ECHO_FIELDS",
    "NetworkInfo",
    "NetworkRequest",
    "NetworkResponse",
    "ReversalRequest",
    "TransactionRequest",
    "TransactionResponse",
    "respond",
]

# Fields a response copies from its request when they are present (70 for 08xx).
ECHO_FIELDS: Final = (2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49, 90, 95)
_NETWORK_ECHO: Final = (70,)
_NO_AMOUNT_TXNS: Final = (*TxnType.BALANCE_INQUIRY, TxnType.MINI_STATEMENT)


class NetworkInfo:
    """Field 70 network management information codes."""

    SIGN_ON: Final = "001"
    SIGN_OFF: Final = "002"
    KEY_CHANGE: Final = "161"
    KEY_CHANGE_REQUEST: Final = "162"
    CUTOVER: Final = "201"
    ECHO: Final = "301"


# --------------------------------------------------------------------------- reading helpers


def _get(msg: IsoMessage, number: int) -> str | None:
    """Field ``number``, checked against the profile's format (views can be given
    hand-built messages, not only decoded ones). Raises FieldError."""
    value = msg.fields.get(number)
    if value is not None and not msg.checked and not check_field(number, value):
        raise FieldError(number, "field does not match its format")
    return value


def _need(msg: IsoMessage, number: int) -> str:
    value = _get(msg, number)
    if value is None or value == "":
        raise FieldError(number, "mandatory field is missing")
    return value


def _mti(msg: IsoMessage, allowed: Iterable[str], view: str) -> Mti:
    mti = Mti.parse(msg.mti)
    if str(mti) not in allowed:
        raise FieldError(0, f"MTI is not one a {view} carries")
    return mti


def _transmission_dt(msg: IsoMessage, required: bool = True) -> str | None:
    value = _need(msg, 7) if required else _get(msg, 7)
    if value is None:
        return None
    if not valid_mmddhhmmss(value):
        raise FieldError(7, "transmission date/time is not a valid MMDDhhmmss")
    return value


def _institution(msg: IsoMessage, number: int, required: bool) -> str | None:
    value = _need(msg, number) if required else _get(msg, number)
    # Numeric ids compare by value: acquirers differ in left zero padding.
    return None if value is None else (value.lstrip("0") or "0")


def _parsed(msg: IsoMessage, number: int, parse: Any) -> Any:
    value = _get(msg, number)
    return None if value is None else parse(value)


def _mac(msg: IsoMessage) -> str | None:
    return _get(msg, 128) or _get(msg, 64)


def _put(fields: dict[int, str], number: int, value: object) -> None:
    if value is None:
        return
    if isinstance(value, Pan):
        fields[number] = value.digits
    elif isinstance(value, PinBlock):
        fields[number] = value.hex
    elif isinstance(value, KeyData):
        fields[number] = value.value
    elif isinstance(value, (Track2, ProcessingCode, OriginalData, ReplacementAmounts)):
        fields[number] = value.to_iso()
    else:
        assert isinstance(value, str), number
        fields[number] = value


def _finish(mti: Mti, fields: dict[int, str], mac: str | None) -> IsoMessage:
    """Place the MAC in the last field of the last bitmap (64, or 128 with a secondary bitmap)."""
    if mac is not None:
        fields[mac_field_for(fields)] = mac
    return IsoMessage(str(mti), fields)


# --------------------------------------------------------------------------- card requests


@dataclass(frozen=True, slots=True, kw_only=True)
class _CardRequest:
    """What every cardholder request carries (0100, 0200, 0220, 0400, 0420 families)."""

    mti: Mti
    pan: Pan
    processing: ProcessingCode
    amount: int
    currency: str
    transmission_dt: str
    stan: str
    acquirer_id: str
    terminal_id: str
    rrn: str | None = None
    expiry: str | None = dc_field(default=None, repr=False)
    track2: Track2 | None = None
    pin_block: PinBlock | None = None
    security_info: str | None = None
    mac: str | None = None
    local_time: str | None = None
    local_date: str | None = None
    settlement_date: str | None = None
    merchant_type: str | None = None
    entry_mode: str | None = None
    condition_code: str | None = None
    forwarding_id: str | None = None
    card_acceptor_id: str | None = None
    card_acceptor_location: str | None = None
    additional_data: str | None = dc_field(default=None, repr=False)
    icc_data: str | None = dc_field(default=None, repr=False)
    account_1: str | None = dc_field(default=None, repr=False)
    account_2: str | None = dc_field(default=None, repr=False)
    original: OriginalData | None = None
    approval_code: str | None = None

    @classmethod
    def mtis(cls) -> tuple[str, ...]:
        """The MTIs this view reads and writes."""
        return ()

    def __post_init__(self) -> None:
        assert str(self.mti) in self.mtis(), self.mti
        assert self.amount >= 0

    @classmethod
    def _common(cls, msg: IsoMessage) -> dict[str, Any]:
        mti = _mti(msg, cls.mtis(), cls.__name__)
        # A decoded message's fields already match their formats: read them
        # directly (this runs for every request).
        get: Callable[[int], str | None] = (msg.fields.get if msg.checked
                                            else partial(_get, msg))
        track2: Track2 | None = _parsed(msg, 35, Track2.parse)
        pan_text = get(2)
        if pan_text is None and track2 is None:
            raise FieldError(2, "PAN is missing (neither field 2 nor track 2)")
        if pan_text is None or (track2 is not None and pan_text == track2.pan.digits):
            pan = track2.pan if track2 is not None else None
        else:
            pan = Pan(pan_text)
        if track2 is not None and pan != track2.pan:
            raise FieldError(35, "track 2 PAN differs from field 2")
        processing = ProcessingCode.parse(_need(msg, 3))
        amount_text = get(4)
        if amount_text is None and processing.txn_type not in _NO_AMOUNT_TXNS:
            raise FieldError(4, "mandatory field is missing")
        return {
            "mti": mti,
            "pan": pan,
            "processing": processing,
            "amount": int(amount_text or "0"),
            "currency": _need(msg, 49),
            "transmission_dt": _transmission_dt(msg),
            "stan": _need(msg, 11),
            "acquirer_id": _institution(msg, 32, required=True),
            "terminal_id": _need(msg, 41),
            "rrn": get(37),
            "expiry": get(14) or (track2.expiry if track2 else None),
            "track2": track2,
            "pin_block": _parsed(msg, 52, PinBlock),
            "security_info": get(53),
            "mac": _mac(msg),
            "local_time": get(12),
            "local_date": get(13),
            "settlement_date": get(15),
            "merchant_type": get(18),
            "entry_mode": get(22),
            "condition_code": get(25),
            "forwarding_id": _institution(msg, 33, required=False),
            "card_acceptor_id": get(42),
            "card_acceptor_location": get(43),
            "additional_data": get(48),
            "icc_data": get(55),
            "account_1": get(102),
            "account_2": get(103),
            "original": _parsed(msg, 90, OriginalData.parse),
            "approval_code": get(38),
        }

    def _fields(self) -> dict[int, str]:
        fields: dict[int, str] = {}
        for number, value in (
            (2, self.pan),
            (3, self.processing),
            (4, f"{self.amount:012d}"),
            (7, self.transmission_dt),
            (11, self.stan),
            (12, self.local_time),
            (13, self.local_date),
            (14, self.expiry),
            (15, self.settlement_date),
            (18, self.merchant_type),
            (22, self.entry_mode),
            (25, self.condition_code),
            (32, self.acquirer_id),
            (33, self.forwarding_id),
            (35, self.track2),
            (37, self.rrn),
            (38, self.approval_code),
            (41, self.terminal_id),
            (42, self.card_acceptor_id),
            (43, self.card_acceptor_location),
            (48, self.additional_data),
            (49, self.currency),
            (52, self.pin_block),
            (53, self.security_info),
            (55, self.icc_data),
            (90, self.original),
            (102, self.account_1),
            (103, self.account_2),
        ):
            _put(fields, number, value)
        return fields


# TransactionRequest spells out its constructor (init=False): the one dataclasses
# generates stays Python even when mypyc compiles the class, and sets each of the
# 31 fields through object.__setattr__ (frozen), about 0.4 µs a field; compiled,
# this one stores them directly. The parameters must be the fields, with the same
# defaults (tests/messages/test_messages_mypyc.py holds every such class to that).
# ReversalRequest keeps the generated one: mypyc did not compile a subclass's
# generated constructor over a base's written one, nor forward **kwargs to it.
@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class TransactionRequest(_CardRequest):
    """Authorization (0100/0101), financial (0200/0201) and completion advice
    (0220/0221) requests. ``original`` (field 90) and ``approval_code``
    (field 38) are what a completion uses to find its hold."""

    @classmethod
    def mtis(cls) -> tuple[str, ...]:
        """The MTIs this view reads and writes."""
        return ("0100", "0101", "0200", "0201", "0220", "0221")

    def __init__(
        self, *, mti: Mti, pan: Pan, processing: ProcessingCode, amount: int, currency: str,
        transmission_dt: str, stan: str, acquirer_id: str, terminal_id: str,
        rrn: str | None = None, expiry: str | None = None, track2: Track2 | None = None,
        pin_block: PinBlock | None = None, security_info: str | None = None,
        mac: str | None = None, local_time: str | None = None, local_date: str | None = None,
        settlement_date: str | None = None, merchant_type: str | None = None,
        entry_mode: str | None = None, condition_code: str | None = None,
        forwarding_id: str | None = None, card_acceptor_id: str | None = None,
        card_acceptor_location: str | None = None, additional_data: str | None = None,
        icc_data: str | None = None, account_1: str | None = None,
        account_2: str | None = None, original: OriginalData | None = None,
        approval_code: str | None = None,
    ) -> None:
        object.__setattr__(self, "mti", mti)
        object.__setattr__(self, "pan", pan)
        object.__setattr__(self, "processing", processing)
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "currency", currency)
        object.__setattr__(self, "transmission_dt", transmission_dt)
        object.__setattr__(self, "stan", stan)
        object.__setattr__(self, "acquirer_id", acquirer_id)
        object.__setattr__(self, "terminal_id", terminal_id)
        object.__setattr__(self, "rrn", rrn)
        object.__setattr__(self, "expiry", expiry)
        object.__setattr__(self, "track2", track2)
        object.__setattr__(self, "pin_block", pin_block)
        object.__setattr__(self, "security_info", security_info)
        object.__setattr__(self, "mac", mac)
        object.__setattr__(self, "local_time", local_time)
        object.__setattr__(self, "local_date", local_date)
        object.__setattr__(self, "settlement_date", settlement_date)
        object.__setattr__(self, "merchant_type", merchant_type)
        object.__setattr__(self, "entry_mode", entry_mode)
        object.__setattr__(self, "condition_code", condition_code)
        object.__setattr__(self, "forwarding_id", forwarding_id)
        object.__setattr__(self, "card_acceptor_id", card_acceptor_id)
        object.__setattr__(self, "card_acceptor_location", card_acceptor_location)
        object.__setattr__(self, "additional_data", additional_data)
        object.__setattr__(self, "icc_data", icc_data)
        object.__setattr__(self, "account_1", account_1)
        object.__setattr__(self, "account_2", account_2)
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "approval_code", approval_code)
        self.__post_init__()

    @classmethod
    def from_iso(cls, msg: IsoMessage) -> Self:
        """Raises FieldError naming the first missing or wrong field."""
        return cls(**cls._common(msg))

    def to_iso(self) -> IsoMessage:
        return _finish(self.mti, self._fields(), self.mac)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReversalRequest(_CardRequest):
    """Reversal request (0400/0401) and advice (0420/0421).

    ``amount`` (field 4) is the original amount; ``replacement`` (field 95),
    when present and non-zero, gives the amount actually dispensed;
    ``response_code`` (field 39) is the reason the acquirer gives.
    """

    @classmethod
    def mtis(cls) -> tuple[str, ...]:
        """The MTIs this view reads and writes."""
        return ("0400", "0401", "0420", "0421")

    replacement: ReplacementAmounts | None = None
    response_code: str | None = None

    @classmethod
    def from_iso(cls, msg: IsoMessage) -> Self:
        """Raises FieldError naming the first missing or wrong field."""
        common = cls._common(msg)
        replacement: ReplacementAmounts | None = _parsed(msg, 95, ReplacementAmounts.parse)
        return cls(**common, replacement=replacement, response_code=_get(msg, 39))

    def to_iso(self) -> IsoMessage:
        fields = self._fields()
        _put(fields, 95, self.replacement)
        _put(fields, 39, self.response_code)
        return _finish(self.mti, fields, self.mac)

    @property
    def dispensed_amount(self) -> int | None:
        """The amount actually dispensed for a partial reversal, else None."""
        if self.replacement is None or not self.replacement.is_partial:
            return None
        return self.replacement.actual_amount


# --------------------------------------------------------------------------- network management


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkRequest:
    """Network management request (0800, 0801; advices 0820, 0821). ``info_code``,
    field 70: sign-on 001, sign-off 002, key change 161/162, cutover 201, echo 301
    (see NetworkInfo).
    Fields 48 and 96 may carry key material and are held as KeyData."""

    mti: Mti
    transmission_dt: str
    stan: str
    info_code: str
    acquirer_id: str | None = None
    terminal_id: str | None = None
    security_info: str | None = None
    additional_data: KeyData | None = None
    security_code: KeyData | None = None
    mac: str | None = None

    # The request, its repeat, and the advice (acknowledged) with its repeat.
    @classmethod
    def mtis(cls) -> tuple[str, ...]:
        """The MTIs this view reads and writes."""
        return ("0800", "0801", "0820", "0821")

    def __post_init__(self) -> None:
        assert str(self.mti) in self.mtis(), self.mti

    @classmethod
    def from_iso(cls, msg: IsoMessage) -> Self:
        """Raises FieldError naming the first missing or wrong field."""
        return cls(
            mti=_mti(msg, cls.mtis(), cls.__name__),
            transmission_dt=_transmission_dt(msg) or "",
            stan=_need(msg, 11),
            info_code=_need(msg, 70),
            acquirer_id=_institution(msg, 32, required=False),
            terminal_id=_get(msg, 41),
            security_info=_get(msg, 53),
            additional_data=_parsed(msg, 48, KeyData),
            security_code=_parsed(msg, 96, KeyData),
            mac=_mac(msg),
        )

    def to_iso(self) -> IsoMessage:
        fields: dict[int, str] = {}
        for number, value in (
            (7, self.transmission_dt),
            (11, self.stan),
            (32, self.acquirer_id),
            (41, self.terminal_id),
            (48, self.additional_data),
            (53, self.security_info),
            (70, self.info_code),
            (96, self.security_code),
        ):
            _put(fields, number, value)
        return _finish(self.mti, fields, self.mac)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionResponse:
    """Response to a card request: 0110, 0210, 0230, 0410, 0430.

    Mandatory: 11 and 39. The rest is what the host echoes or adds.
    """

    mti: Mti
    response_code: str
    stan: str
    pan: Pan | None = None
    processing: ProcessingCode | None = None
    amount: int | None = None
    currency: str | None = None
    transmission_dt: str | None = None
    local_time: str | None = None
    local_date: str | None = None
    acquirer_id: str | None = None
    rrn: str | None = None
    approval_code: str | None = None
    terminal_id: str | None = None
    card_acceptor_id: str | None = None
    additional_amounts: tuple[AdditionalAmount, ...] = ()
    original: OriginalData | None = None
    replacement: ReplacementAmounts | None = None
    mac: str | None = None

    @classmethod
    def mtis(cls) -> tuple[str, ...]:
        """The MTIs this view reads and writes."""
        return ("0110", "0210", "0230", "0410", "0430")

    def __post_init__(self) -> None:
        assert str(self.mti) in self.mtis(), self.mti

    @property
    def code(self) -> ResponseCode | None:
        """Field 39 as a ResponseCode, or None for a code this host does not use."""
        try:
            return ResponseCode(self.response_code)
        except ValueError:
            return None

    @property
    def approved(self) -> bool:
        return self.response_code == ResponseCode.APPROVED

    @classmethod
    def from_iso(cls, msg: IsoMessage) -> Self:
        """Raises FieldError naming the first missing or wrong field."""
        amount = _get(msg, 4)
        amounts = _get(msg, 54)
        return cls(
            mti=_mti(msg, cls.mtis(), cls.__name__),
            response_code=_need(msg, 39),
            stan=_need(msg, 11),
            pan=_parsed(msg, 2, Pan),
            processing=_parsed(msg, 3, ProcessingCode.parse),
            amount=None if amount is None else int(amount),
            currency=_get(msg, 49),
            transmission_dt=_transmission_dt(msg, required=False),
            local_time=_get(msg, 12),
            local_date=_get(msg, 13),
            acquirer_id=_institution(msg, 32, required=False),
            rrn=_get(msg, 37),
            approval_code=_get(msg, 38),
            terminal_id=_get(msg, 41),
            card_acceptor_id=_get(msg, 42),
            additional_amounts=parse_additional_amounts(amounts) if amounts else (),
            original=_parsed(msg, 90, OriginalData.parse),
            replacement=_parsed(msg, 95, ReplacementAmounts.parse),
            mac=_mac(msg),
        )

    def to_iso(self) -> IsoMessage:
        fields: dict[int, str] = {}
        amounts = None
        if self.additional_amounts:
            amounts = encode_additional_amounts(self.additional_amounts)
        for number, value in (
            (2, self.pan),
            (3, self.processing),
            (4, None if self.amount is None else f"{self.amount:012d}"),
            (7, self.transmission_dt),
            (11, self.stan),
            (12, self.local_time),
            (13, self.local_date),
            (32, self.acquirer_id),
            (37, self.rrn),
            (38, self.approval_code),
            (39, self.response_code),
            (41, self.terminal_id),
            (42, self.card_acceptor_id),
            (49, self.currency),
            (54, amounts),
            (90, self.original),
            (95, self.replacement),
        ):
            _put(fields, number, value)
        return _finish(self.mti, fields, self.mac)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkResponse:
    """Response to network management (0810). Mandatory: 11, 39 and 70."""

    mti: Mti
    response_code: str
    stan: str
    info_code: str
    transmission_dt: str | None = None
    acquirer_id: str | None = None
    terminal_id: str | None = None
    security_info: str | None = None
    additional_data: KeyData | None = None
    security_code: KeyData | None = None
    mac: str | None = None

    @classmethod
    def mtis(cls) -> tuple[str, ...]:
        """The MTIs this view reads and writes."""
        return ("0810",)

    def __post_init__(self) -> None:
        assert str(self.mti) in self.mtis(), self.mti

    @property
    def approved(self) -> bool:
        return self.response_code == ResponseCode.APPROVED

    @classmethod
    def from_iso(cls, msg: IsoMessage) -> Self:
        """Raises FieldError naming the first missing or wrong field."""
        return cls(
            mti=_mti(msg, cls.mtis(), cls.__name__),
            response_code=_need(msg, 39),
            stan=_need(msg, 11),
            info_code=_need(msg, 70),
            transmission_dt=_transmission_dt(msg, required=False),
            acquirer_id=_institution(msg, 32, required=False),
            terminal_id=_get(msg, 41),
            security_info=_get(msg, 53),
            additional_data=_parsed(msg, 48, KeyData),
            security_code=_parsed(msg, 96, KeyData),
            mac=_mac(msg),
        )

    def to_iso(self) -> IsoMessage:
        fields: dict[int, str] = {}
        for number, value in (
            (7, self.transmission_dt),
            (11, self.stan),
            (32, self.acquirer_id),
            (39, self.response_code),
            (41, self.terminal_id),
            (48, self.additional_data),
            (53, self.security_info),
            (70, self.info_code),
            (96, self.security_code),
        ):
            _put(fields, number, value)
        return _finish(self.mti, fields, self.mac)


# --------------------------------------------------------------------------- respond


def respond(
    request: IsoMessage,
    response_code: str,
    *,
    approval_code: str | None = None,
    additional_amounts: Iterable[AdditionalAmount] = (),
    extra: Mapping[int, str | None] | None = None,
) -> IsoMessage:
    """The response to ``request``: response MTI, the echo fields the request
    has (ECHO_FIELDS, and 70 for network management), 38 when given, 39, and 54
    when amounts are given; then ``extra`` (a None value removes a field).

    An echo field whose content breaks its format is left out rather than
    copied, so a response to a malformed request (39=30) can always be sent.
    Raises FieldError(0, …) when the request MTI has no response, and
    EncodeError for a malformed response code, approval code or field 54.
    """
    mti = Mti.parse(request.mti).response()
    echo = ECHO_FIELDS + (_NETWORK_ECHO if mti.msg_class == MsgClass.NETWORK_MANAGEMENT else ())
    source = request.fields
    if request.checked:  # a decoded request: its fields already match their formats
        fields = {n: source[n] for n in echo if n in source}
    else:
        fields = {n: value for n in echo
                  if (value := source.get(n)) is not None and check_field(n, value)}
    code = str(response_code)
    if len(code) != 2 or not check_field(39, code):
        raise EncodeError(39, "response code must be 2 printable characters")
    fields[39] = code
    if approval_code is not None:
        if not check_field(38, approval_code):
            raise EncodeError(38, "approval code must be 6 printable characters")
        fields[38] = approval_code
    amounts = tuple(additional_amounts)
    if amounts:
        fields[54] = encode_additional_amounts(amounts)
    changes = dict(extra or {})
    for number, value in changes.items():
        if value is None:
            fields.pop(number, None)
        else:
            fields[number] = value
    # A field that breaks its format makes the message an ordinary (unchecked)
    # one: encoding it then fails with EncodeError naming that field.
    added = ((54, fields.get(54)), *((n, v) for n, v in changes.items() if v is not None))
    if all(value is None or check_field(number, value) for number, value in added):
        return IsoMessage.checked_message(str(mti), fields)
    return IsoMessage(str(mti), fields)
