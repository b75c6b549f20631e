"""A real ATM exchange, stored as hex frames, decoded and checked field by field.

The fixture files were written byte by byte from the field layouts of
docs/INTERFACE_SPEC.md, not produced by this codec, so they check it against
the specification rather than against itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from messages.codec import IsoMessage, decode, encode
from messages.codes import ResponseCode
from messages.fields import (
    AccountType,
    AdditionalAmount,
    AmountType,
    OriginalData,
    Pan,
    ProcessingCode,
    ReplacementAmounts,
    TxnType,
)
from messages.framing import Framer
from messages.profiles import ASCII, BINARY, Profile
from messages.views import (
    NetworkRequest,
    ReversalRequest,
    TransactionRequest,
    TransactionResponse,
    respond,
)

FIXTURES = Path(__file__).parent / "fixtures"
PAN = "4761739001010010"


def frame_bytes(name: str) -> bytes:
    lines = (FIXTURES / name).read_text(encoding="ascii").splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


def message(name: str, profile: Profile = ASCII) -> tuple[IsoMessage, bytes]:
    framer = Framer()
    framer.feed(frame_bytes(name))
    frame = framer.next_frame()
    assert frame is not None and framer.next_frame() is None
    framer.eof()
    return decode(frame.payload, profile), frame.payload


def test_sign_on() -> None:
    msg, payload = message("0800_sign_on.hex")
    assert msg == IsoMessage(
        "0800", {7: "1124031500", 11: "000001", 32: "123456", 41: "ATM00001", 70: "001"}
    )
    view = NetworkRequest.from_iso(msg)
    assert (view.info_code, view.stan, view.terminal_id, view.acquirer_id) == (
        "001",
        "000001",
        "ATM00001",
        "123456",
    )
    assert encode(msg, ASCII) == payload
    reply = respond(msg, ResponseCode.APPROVED)
    assert reply == IsoMessage(
        "0810",
        {7: "1124031500", 11: "000001", 32: "123456", 39: "00", 41: "ATM00001", 70: "001"},
    )


@pytest.mark.parametrize(
    ("name", "profile"),
    [("0200_withdrawal.hex", ASCII), ("0200_withdrawal_binary.hex", BINARY)],
)
def test_withdrawal(name: str, profile: Profile) -> None:
    msg, payload = message(name, profile)
    expected = {
        2: PAN,
        3: "011000",
        4: "000000020000",
        7: "1124031502",
        11: "000002",
        12: "031502",
        13: "1124",
        18: "6011",
        22: "021",
        25: "02",
        32: "123456",
        35: PAN + "=27122011234500000",
        37: "432803000002",
        41: "ATM00001",
        42: "BANKATM00000001",
        43: "MAIN ST BRANCH          SPRINGFIELD   US",
        49: "840",
        52: "8C2A4D7E91F03B56",
    }
    assert msg.mti == "0200"
    for number, value in expected.items():
        assert msg.get(number) == value, number
    assert set(msg.fields) == set(expected)
    assert encode(msg, profile) == payload

    view = TransactionRequest.from_iso(msg)
    assert view.pan == Pan(PAN)
    assert view.processing == ProcessingCode(TxnType.WITHDRAWAL, AccountType.SAVINGS, "00")
    assert (view.amount, view.currency) == (20000, "840")
    assert (view.stan, view.terminal_id, view.acquirer_id, view.rrn) == (
        "000002",
        "ATM00001",
        "123456",
        "432803000002",
    )
    assert view.expiry == "2712" and view.track2 is not None
    assert view.track2.service_code == "201"
    assert view.pin_block is not None and view.pin_block.hex == "8C2A4D7E91F03B56"
    assert not view.mti.is_repeat and view.mti.is_request


def test_approval_matches_the_response_the_host_builds() -> None:
    request, _ = message("0200_withdrawal.hex")
    msg, payload = message("0210_withdrawal_approved.hex")
    balances = (
        AdditionalAmount(AccountType.SAVINGS, AmountType.LEDGER, "840", 980000),
        AdditionalAmount(AccountType.SAVINGS, AmountType.AVAILABLE, "840", 960000),
    )
    built = respond(request, "00", approval_code="A1B2C3", additional_amounts=balances)
    assert built == msg
    assert encode(built, ASCII) == payload
    view = TransactionResponse.from_iso(msg)
    assert view.approved and view.approval_code == "A1B2C3"
    assert view.additional_amounts == balances
    assert (view.stan, view.rrn, view.terminal_id, view.amount) == (
        "000002",
        "432803000002",
        "ATM00001",
        20000,
    )


def test_partial_reversal_advice() -> None:
    msg, payload = message("0420_partial_reversal.hex")
    assert msg.mti == "0420"
    assert msg.get(90) == "0200" "000002" "1124031502" "00000123456" "00000000000"
    assert msg.get(95) == "000000010000" "000000010000" "C00000000" "C00000000"
    assert (msg.get(11), msg.get(39), msg.get(4)) == ("000003", "22", "000000020000")
    view = ReversalRequest.from_iso(msg)
    assert view.mti.is_advice
    assert view.original == OriginalData("0200", "000002", "1124031502", "123456", "0")
    assert view.replacement == ReplacementAmounts(10000, 10000, 0, 0)
    assert view.dispensed_amount == 10000 and view.amount == 20000
    assert view.response_code == "22"
    assert encode(msg, ASCII) == payload
    ack = respond(msg, ResponseCode.APPROVED)
    assert ack.mti == "0430" and ack.get(39) == "00"
    assert ack.get(90) == msg.get(90) and ack.get(95) == msg.get(95)
