"""Hypothesis strategies for messages tests (imported by the test modules)."""

from __future__ import annotations

from datetime import datetime

from hypothesis import strategies as st

from messages.codec import IsoMessage
from messages.fields import (
    AdditionalAmount,
    KeyData,
    OriginalData,
    Pan,
    PinBlock,
    ProcessingCode,
    ReplacementAmounts,
    Track2,
    luhn_complete,
)
from messages.mti import Mti
from messages.profiles import FIELD_DEFS, FieldDef, FieldKind
from messages.views import (
    NetworkRequest,
    NetworkResponse,
    ReversalRequest,
    TransactionRequest,
    TransactionResponse,
)

DIGITS = "0123456789"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
HEX = "0123456789ABCDEF"


def text(alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size)


def field_value(d: FieldDef) -> st.SearchStrategy[str]:
    """Any value the codec must accept for field ``d``."""
    low = d.length if d.prefix == 0 else 0
    if d.kind is FieldKind.BINARY:
        return st.binary(min_size=low, max_size=d.length).map(lambda b: b.hex().upper())
    alphabet = {
        FieldKind.NUMERIC: DIGITS,
        FieldKind.TEXT: PRINTABLE,
        FieldKind.TRACK: DIGITS + "=DF",
    }[d.kind]
    return text(alphabet, low, d.length)


@st.composite
def iso_messages(draw: st.DrawFn) -> IsoMessage:
    numbers = draw(st.sets(st.sampled_from(sorted(FIELD_DEFS)), max_size=12))
    mti = draw(text(DIGITS, 4, 4))
    return IsoMessage(mti, {n: draw(field_value(FIELD_DEFS[n])) for n in numbers})


pans = st.builds(
    luhn_complete, st.integers(min_value=11, max_value=18).flatmap(lambda n: text(DIGITS, n, n))
)


def digits(n: int) -> st.SearchStrategy[str]:
    return text(DIGITS, n, n)


def printable(n: int, low: int | None = None) -> st.SearchStrategy[str]:
    return text(PRINTABLE, n if low is None else low, n)


def hex_text(n_bytes: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=n_bytes, max_size=n_bytes).map(lambda b: b.hex().upper())


def optional(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


transmission_dts = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2024, 12, 31, 23, 59, 59),
).map(lambda d: d.strftime("%m%d%H%M%S"))  # 2024 is a leap year: 29 February included
institutions = st.integers(0, 10**11 - 1).map(str)
processing_codes = st.builds(ProcessingCode, digits(2), digits(2), digits(2))
amounts = st.integers(0, 10**12 - 1)
original_data = st.builds(
    OriginalData,
    st.sampled_from(["0100", "0200", "0220"]),
    digits(6),
    transmission_dts,
    institutions,
    institutions,
)
replacements = st.builds(
    ReplacementAmounts,
    amounts,
    amounts,
    st.integers(-(10**8) + 1, 10**8 - 1),
    st.integers(-(10**8) + 1, 10**8 - 1),
)
additional_amounts = st.lists(
    st.builds(AdditionalAmount, digits(2), digits(2), digits(3),
              st.integers(-(10**12) + 1, 10**12 - 1)),
    max_size=6,
).map(tuple)
response_codes = printable(2)
icc_data = st.binary(min_size=1, max_size=255).map(lambda b: b.hex().upper())


@st.composite
def track2_for(draw: st.DrawFn, pan: Pan) -> Track2:
    room = 37 - len(pan.digits) - 8
    return Track2(pan, draw(digits(4)), draw(digits(3)), draw(text(DIGITS, 0, room)))


@st.composite
def card_request_kwargs(draw: st.DrawFn, mtis: tuple[str, ...]) -> dict[str, object]:
    pan = Pan(draw(pans))
    return {
        "mti": Mti.parse(draw(st.sampled_from(mtis))),
        "pan": pan,
        "processing": draw(processing_codes),
        "amount": draw(amounts),
        "currency": draw(digits(3)),
        "transmission_dt": draw(transmission_dts),
        "stan": draw(digits(6)),
        "acquirer_id": draw(institutions),
        "terminal_id": draw(printable(8)),
        "rrn": draw(optional(printable(12))),
        "expiry": draw(optional(digits(4))),
        "track2": draw(optional(track2_for(pan))),
        "pin_block": draw(optional(hex_text(8).map(PinBlock))),
        "security_info": draw(optional(digits(16))),
        "mac": draw(optional(hex_text(8))),
        "local_time": draw(optional(digits(6))),
        "local_date": draw(optional(digits(4))),
        "settlement_date": draw(optional(digits(4))),
        "merchant_type": draw(optional(digits(4))),
        "entry_mode": draw(optional(digits(3))),
        "condition_code": draw(optional(digits(2))),
        "forwarding_id": draw(optional(institutions)),
        "card_acceptor_id": draw(optional(printable(15))),
        "card_acceptor_location": draw(optional(printable(40))),
        "additional_data": draw(optional(printable(999, 1))),
        "icc_data": draw(optional(icc_data)),
        "account_1": draw(optional(printable(28, 1))),
        "account_2": draw(optional(printable(28, 1))),
        "original": draw(optional(original_data)),
        "approval_code": draw(optional(printable(6))),
    }


@st.composite
def transaction_requests(draw: st.DrawFn) -> TransactionRequest:
    kwargs = draw(card_request_kwargs(TransactionRequest.mtis()))
    expiry = kwargs["expiry"]
    track2 = kwargs["track2"]
    if expiry is None and isinstance(track2, Track2):
        kwargs["expiry"] = track2.expiry  # a view read from the wire takes 14 from track 2
    return TransactionRequest(**kwargs)  # type: ignore[arg-type]


@st.composite
def reversal_requests(draw: st.DrawFn) -> ReversalRequest:
    kwargs = draw(card_request_kwargs(ReversalRequest.mtis()))
    if kwargs["expiry"] is None and isinstance(kwargs["track2"], Track2):
        kwargs["expiry"] = kwargs["track2"].expiry
    return ReversalRequest(
        **kwargs,  # type: ignore[arg-type]
        replacement=draw(optional(replacements)),  # type: ignore[arg-type]
        response_code=draw(optional(response_codes)),  # type: ignore[arg-type]
    )


network_requests = st.builds(
    NetworkRequest,
    mti=st.just(Mti.parse("0800")),
    transmission_dt=transmission_dts,
    stan=digits(6),
    info_code=st.sampled_from(["001", "002", "161", "162", "201", "301"]),
    acquirer_id=optional(institutions),
    terminal_id=optional(printable(8)),
    security_info=optional(digits(16)),
    additional_data=optional(printable(999, 1).map(KeyData)),
    security_code=optional(hex_text(8).map(KeyData)),
    mac=optional(hex_text(8)),
)

transaction_responses = st.builds(
    TransactionResponse,
    mti=st.sampled_from(TransactionResponse.mtis()).map(Mti.parse),
    response_code=response_codes,
    stan=digits(6),
    pan=optional(pans.map(Pan)),
    processing=optional(processing_codes),
    amount=optional(amounts),
    currency=optional(digits(3)),
    transmission_dt=optional(transmission_dts),
    local_time=optional(digits(6)),
    local_date=optional(digits(4)),
    acquirer_id=optional(institutions),
    rrn=optional(printable(12)),
    approval_code=optional(printable(6)),
    terminal_id=optional(printable(8)),
    card_acceptor_id=optional(printable(15)),
    additional_amounts=additional_amounts,
    original=optional(original_data),
    replacement=optional(replacements),
    mac=optional(hex_text(8)),
)

network_responses = st.builds(
    NetworkResponse,
    mti=st.just(Mti.parse("0810")),
    response_code=response_codes,
    stan=digits(6),
    info_code=st.sampled_from(["001", "002", "161", "162", "201", "301"]),
    transmission_dt=optional(transmission_dts),
    acquirer_id=optional(institutions),
    terminal_id=optional(printable(8)),
    security_info=optional(digits(16)),
    additional_data=optional(printable(999, 1).map(KeyData)),
    security_code=optional(hex_text(8).map(KeyData)),
    mac=optional(hex_text(8)),
)


# The arguments of mutate() other than the bytes, for ``@given(..., **MUTATIONS)``.
MUTATIONS: dict[str, st.SearchStrategy[object]] = {
    "position": st.integers(min_value=0),
    "byte": st.integers(min_value=0, max_value=255),
    "action": st.sampled_from(["replace", "insert", "delete", "truncate"]),
}


def mutate(raw: bytes, position: int, byte: int, action: str) -> bytes:
    """``raw`` with one byte replaced, inserted or deleted at ``position`` (modulo its
    length), or truncated there (any other action)."""
    out = bytearray(raw)
    position %= len(out)
    if action == "replace":
        out[position] = byte
    elif action == "insert":
        out.insert(position, byte)
    elif action == "delete":
        del out[position]
    else:
        del out[position:]
    return bytes(out)
