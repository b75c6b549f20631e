"""Structured fields and the masked wrapper types."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msg_strategies import pans

from messages.errors import EncodeError, FieldError
from messages.fields import (
    AccountType,
    AdditionalAmount,
    AmountType,
    KeyData,
    OriginalData,
    Pan,
    PinBlock,
    ProcessingCode,
    ReplacementAmounts,
    Track2,
    TxnType,
    encode_additional_amounts,
    luhn_ok,
    parse_additional_amounts,
)

PAN = "4761739001010010"
PIN = "A1B2C3D4E5F60718"


# --------------------------------------------------------------------------- PAN


@settings(max_examples=100, deadline=None)
@given(digits=pans)
def test_generated_pans_pass_luhn_and_mask(digits: str) -> None:
    pan = Pan(digits)
    assert pan.digits == digits
    assert digits not in repr(pan) and digits not in str(pan)
    if len(digits) >= 13:
        assert pan.masked == digits[:6] + "*" * (len(digits) - 10) + digits[-4:]
    else:  # too short to show 10 digits of it
        assert pan.masked == "*" * (len(digits) - 4) + digits[-4:]


@pytest.mark.parametrize("digits", ["4761739001010010", "5413330089020011", "378282246310005"])
def test_known_pans(digits: str) -> None:
    assert luhn_ok(digits) and Pan(digits).digits == digits


def _luhn_by_the_book(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value // 10 + value % 10
    return total % 10 == 0


@settings(max_examples=300, deadline=None)
@given(digits=st.text(alphabet="0123456789", min_size=1, max_size=19))
def test_luhn_matches_the_textbook_rule(digits: str) -> None:
    assert luhn_ok(digits) == _luhn_by_the_book(digits)


@pytest.mark.parametrize("text", ["", "4761 7390", "47617390010100A0", "\u0664\u0667"])
def test_luhn_is_false_for_anything_but_digits(text: str) -> None:
    assert not luhn_ok(text)


@pytest.mark.parametrize(
    ("digits", "reason"),
    [
        ("4761739001010011", "Luhn"),
        ("47617390010", "12 to 19"),
        ("4" * 20, "12 to 19"),
        ("47617390010100A0", "digits"),
        ("", "digits"),
    ],
)
def test_bad_pans_raise_field_error_without_the_value(digits: str, reason: str) -> None:
    with pytest.raises(FieldError, match=reason) as info:
        Pan(digits)
    assert info.value.field == 2
    assert not digits or digits not in str(info.value)


def test_pan_repr_and_str() -> None:
    pan = Pan(PAN)
    assert repr(pan) == "Pan('476173******0010')"
    assert str(pan) == f"{pan}" == "476173******0010"
    assert Pan(PAN) == pan and hash(Pan(PAN)) == hash(pan)


# --------------------------------------------------------------------------- track 2


@pytest.mark.parametrize(
    "text",
    [
        PAN + "=27121010000012300000",
        PAN + "D27121010000012300000",
        PAN.lower() + "d27121010000012300000",
        ";" + PAN + "=27121010000012300000?",
        PAN + "=2712101000001230000F",
    ],
)
def test_track2_variants(text: str) -> None:
    track = Track2.parse(text)
    assert track.pan == Pan(PAN)
    assert (track.expiry, track.service_code) == ("2712", "101")
    assert track.discretionary.startswith("000001230000")
    assert track.to_iso().startswith(PAN + "=2712101")
    assert Track2.parse(track.to_iso()) == track
    for shown in (repr(track), str(track)):
        assert PAN not in shown and "000001230000" not in shown and "476173" in shown


def test_track2_without_discretionary_data() -> None:
    assert Track2.parse(PAN + "=2712101").to_iso() == PAN + "=2712101"


@pytest.mark.parametrize(
    "text",
    [PAN + "2712101", PAN + "=27121", PAN + "=2712X01", "4761739001010011=2712101", "=2712101"],
)
def test_bad_track2(text: str) -> None:
    with pytest.raises(FieldError) as info:
        Track2.parse(text)
    assert info.value.field == 35
    assert PAN not in str(info.value)


# --------------------------------------------------------------------------- secrets


def test_pin_block_shows_nothing() -> None:
    block = PinBlock(PIN.lower())
    assert block.hex == PIN
    for shown in (repr(block), str(block), f"{block}", repr([block])):
        assert PIN not in shown and PIN.lower() not in shown and "A1B2" not in shown


@pytest.mark.parametrize("value", ["", PIN[:-1], PIN + "0", "G" * 16])
def test_bad_pin_block(value: str) -> None:
    with pytest.raises(FieldError) as info:
        PinBlock(value)
    assert info.value.field == 52


def test_key_data_shows_nothing() -> None:
    key = KeyData("0123456789ABCDEFFEDCBA9876543210")
    assert "0123" not in repr(key) and "0123" not in str(key)
    assert key.value.startswith("0123")


# --------------------------------------------------------------------------- field 3


def test_processing_code() -> None:
    code = ProcessingCode.parse("011000")
    assert (code.txn_type, code.from_account, code.to_account) == ("01", "10", "00")
    assert code.txn_type == TxnType.WITHDRAWAL and code.from_account == AccountType.SAVINGS
    assert code.to_iso() == "011000"
    assert ProcessingCode.parse("302000").is_balance_inquiry
    assert ProcessingCode.parse("310000").is_balance_inquiry
    assert not code.is_balance_inquiry
    assert (TxnType.DEPOSIT, TxnType.TRANSFER, TxnType.MINI_STATEMENT) == ("21", "40", "38")
    assert (AccountType.DEFAULT, AccountType.CHECKING, AccountType.CREDIT) == ("00", "20", "30")


@pytest.mark.parametrize("text", ["01100", "0110000", "01A000", ""])
def test_bad_processing_code(text: str) -> None:
    with pytest.raises(FieldError) as info:
        ProcessingCode.parse(text)
    assert info.value.field == 3


# --------------------------------------------------------------------------- field 54

amounts = st.builds(
    AdditionalAmount,
    st.sampled_from(["00", "10", "20", "30"]),
    st.sampled_from([AmountType.LEDGER, AmountType.AVAILABLE]),
    st.sampled_from(["840", "978", "826"]),
    st.integers(min_value=-(10**12) + 1, max_value=10**12 - 1),
)


@settings(max_examples=100, deadline=None)
@given(blocks=st.lists(amounts, min_size=1, max_size=6))
def test_additional_amounts_round_trip(blocks: list[AdditionalAmount]) -> None:
    text = encode_additional_amounts(blocks)
    assert len(text) == 20 * len(blocks)
    assert parse_additional_amounts(text) == tuple(blocks)


def test_additional_amounts_layout() -> None:
    blocks = [
        AdditionalAmount("10", AmountType.LEDGER, "840", 123456),
        AdditionalAmount("10", AmountType.AVAILABLE, "840", -5),
    ]
    assert encode_additional_amounts(blocks) == (
        "1001840C000000123456" + "1002840D000000000005"
    )


def test_additional_amounts_limits() -> None:
    block = AdditionalAmount("10", "02", "840", 1)
    with pytest.raises(EncodeError):
        encode_additional_amounts([block] * 7)
    with pytest.raises(EncodeError):
        encode_additional_amounts([])
    with pytest.raises(EncodeError):
        encode_additional_amounts([AdditionalAmount("10", "02", "840", 10**12)])
    with pytest.raises(EncodeError):
        encode_additional_amounts([AdditionalAmount("1", "02", "840", 1)])


@pytest.mark.parametrize(
    "text", ["", "1001840C00000012345", "1001840X000000123456", "1001840C000000123456" * 7]
)
def test_bad_additional_amounts(text: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_additional_amounts(text)
    assert info.value.field == 54


# --------------------------------------------------------------------------- field 90


def test_original_data() -> None:
    text = "0200" + "000123" + "1124031500" + "00000012345" + "00000000000"
    data = OriginalData.parse(text)
    assert (data.mti, data.stan, data.transmission_dt) == ("0200", "000123", "1124031500")
    assert (data.acquirer_id, data.forwarding_id) == ("12345", "0")
    assert data.to_iso() == text
    assert not data.is_zero_filled
    assert OriginalData("0200", "000000", "1124031500").is_zero_filled
    assert OriginalData("0200", "000001", "0000000000").is_zero_filled
    assert OriginalData("0200", "000001", "1124031500", "000123") == data.__class__(
        "0200", "000001", "1124031500", "123"
    )


@pytest.mark.parametrize("text", ["0" * 41, "0" * 43, "0200" + "A" * 38])
def test_bad_original_data(text: str) -> None:
    with pytest.raises(FieldError) as info:
        OriginalData.parse(text)
    assert info.value.field == 90


# --------------------------------------------------------------------------- field 95


def test_replacement_amounts() -> None:
    text = "000000004000" + "000000004000" + "C00000150" + "D00000025"
    data = ReplacementAmounts.parse(text)
    assert data == ReplacementAmounts(4000, 4000, 150, -25)
    assert data.to_iso() == text and data.is_partial
    zero = ReplacementAmounts.parse("0" * 42)
    assert zero == ReplacementAmounts(0) and not zero.is_partial
    assert ReplacementAmounts.parse("0" * 24 + " " * 18) == ReplacementAmounts(0)
    assert zero.to_iso() == "0" * 24 + "C00000000" * 2


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 10**12 - 1),
    st.integers(0, 10**12 - 1),
    st.integers(-(10**8) + 1, 10**8 - 1),
    st.integers(-(10**8) + 1, 10**8 - 1),
)
def test_replacement_amounts_round_trip(a: int, b: int, c: int, d: int) -> None:
    data = ReplacementAmounts(a, b, c, d)
    assert ReplacementAmounts.parse(data.to_iso()) == data


@pytest.mark.parametrize(
    "text", ["0" * 41, "00000000400A" + "0" * 30, "0" * 24 + "X00000150" + "C00000000"]
)
def test_bad_replacement_amounts(text: str) -> None:
    with pytest.raises(FieldError) as info:
        ReplacementAmounts.parse(text)
    assert info.value.field == 95


def test_replacement_amounts_that_do_not_fit() -> None:
    with pytest.raises(EncodeError):
        ReplacementAmounts(-1).to_iso()
    with pytest.raises(EncodeError):
        ReplacementAmounts(1, 0, 10**8).to_iso()
