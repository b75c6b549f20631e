"""ISO 9564-1 PIN blocks: published examples, psec cross-checks, strict decoding."""

from __future__ import annotations

import psec
import pytest
from hsm_testkeys import AES_KEY_HEX, PSEC, TDES_KEY_HEX
from hypothesis import given
from hypothesis import strategies as st

from hsm import pinblock
from hsm._crypto import BlockKey
from hsm.errors import HsmError, PinBlockError
from hsm.results import HsmResult

TDES = BlockKey(bytes.fromhex(TDES_KEY_HEX), is_aes=False)
AES = BlockKey(bytes.fromhex(AES_KEY_HEX), is_aes=True)

pins = st.text(alphabet="0123456789", min_size=4, max_size=12)
pans = st.text(alphabet="0123456789", min_size=12, max_size=19)
formats = st.sampled_from(pinblock.FORMATS)


def _key(fmt: int) -> BlockKey:
    return AES if fmt == 4 else TDES


def test_format0_published_example() -> None:
    # ID TECH knowledge base "PIN block format 0" (EFTlab BP-Tools output):
    # PAN 43219876543210987, PIN 1234 -> clear PIN block 0412AC89ABCDEF67.
    block = pinblock.plain_block(0, "1234", "43219876543210987")
    assert block.hex().upper() == "0412AC89ABCDEF67"
    assert pinblock.pin_from_plain(0, block, "43219876543210987") == "1234"


def test_format0_second_published_example() -> None:
    # Worked example "Format 01" (ANSI X9.8, i.e. ISO 9564 format 0) of an HSM
    # host-command manual: PIN 92389, PAN 4000 0012 3456 2 -> 0592 789F FFED CBA9.
    block = pinblock.plain_block(0, "92389", "4000001234562")
    assert block.hex().upper() == "0592789FFFEDCBA9"


def test_format3_and_1_layout() -> None:
    block = pinblock.plain_block(3, "1234", "43219876543210987", fill="ABCDEFABCD")
    # PIN field 341234ABCDEFABCD xor 0000987654321098
    assert block.hex().upper() == "3412ACDD99DDBB55"
    assert pinblock.plain_block(1, "1234", "", fill="0123456789").hex().upper() == (
        "1412340123456789"
    )


def test_format4_fields() -> None:
    # ISO 9564-1:2017 format 4 layout; the IBM "ISO Format 4" page gives
    # CLPPPPaaaaaaaaAA RRRRRRRRRRRRRRRR for the PIN field.
    field = pinblock.format4_pin_field("1234", random_half=bytes(range(8)))
    assert field.hex().upper() == "441234AAAAAAAAAA0001020304050607"
    assert pinblock.format4_pan_field("432198765432109870").hex().upper() == (
        "64321987654321098700000000000000"
    )
    assert pinblock.format4_pan_field("123456789012").hex().upper() == "0" + "123456789012" + (
        "0" * 19
    )


@pytest.mark.parametrize(
    ("pan", "expected"),
    [
        # ISO 9564-1 format 4: a PAN shorter than 12 digits has M = 0 and is left-padded
        # with zeros to 12 digits.
        ("123456789", "00001234567890000000000000000000"),
        ("1", "00000000000010000000000000000000"),
        ("12345678901", "00123456789010000000000000000000"),
    ],
)
def test_format4_pan_field_short_pan(pan: str, expected: str) -> None:
    assert pinblock.format4_pan_field(pan).hex().upper() == expected


@given(pin=pins, pan=st.text(alphabet="0123456789", min_size=1, max_size=11))
def test_format4_round_trip_short_pan(pin: str, pan: str) -> None:
    block = pinblock.encrypt(AES, 4, pin, pan)
    assert pinblock.decrypt(AES, 4, block, pan) == pin
    assert pinblock.decrypt(AES, 4, block, pan.rjust(12, "0")) == pin  # same PAN field


@pytest.mark.parametrize("pan", ["", "12345678901234567890", "1234A6789", "１２３"])
def test_format4_bad_pans_refused(pan: str) -> None:
    with pytest.raises(PinBlockError) as info:
        pinblock.encrypt(AES, 4, "1234", pan)
    assert info.value.result is HsmResult.INVALID_PAN


@given(fmt=formats, pin=pins, pan=pans)
def test_round_trip_every_format(fmt: int, pin: str, pan: str) -> None:
    key = _key(fmt)
    block = pinblock.encrypt(key, fmt, pin, pan)
    assert len(block) == pinblock.block_bytes(fmt)
    assert pinblock.decrypt(key, fmt, block, pan) == pin


@given(fmt=st.sampled_from((0, 3, 4)), pin=pins, pan=pans, other=pans)
def test_pan_binding(fmt: int, pin: str, pan: str, other: str) -> None:
    key = _key(fmt)
    block = pinblock.encrypt(key, fmt, pin, pan)
    bound = pan[:-1][-12:].rjust(12, "0") if fmt != 4 else pan
    other_bound = other[:-1][-12:].rjust(12, "0") if fmt != 4 else other
    if bound == other_bound:
        return
    try:
        assert pinblock.decrypt(key, fmt, block, other) != pin
    except PinBlockError:
        pass


@given(fmt=formats, data=st.binary(min_size=16, max_size=16), pan=pans)
def test_random_blocks_give_a_pin_or_a_typed_error(fmt: int, data: bytes, pan: str) -> None:
    block = data[: pinblock.block_bytes(fmt)]
    try:
        pin = pinblock.decrypt(_key(fmt), fmt, block, pan)
    except PinBlockError as exc:
        assert exc.result in {HsmResult.PIN_BLOCK_ERROR, HsmResult.PIN_LENGTH}
    else:
        assert 4 <= len(pin) <= 12 and pin.isdigit()


@pytest.mark.parametrize(
    ("clear", "result"),
    [
        ("141234FFFFFFFFFF", HsmResult.PIN_BLOCK_ERROR),  # control nibble 1 in format 0
        ("0312 3FFFFFFFFFFF".replace(" ", ""), HsmResult.PIN_LENGTH),  # 3 digits
        ("0D12345678901234", HsmResult.PIN_LENGTH),  # 13 digits
        ("04123AFFFFFFFFFF", HsmResult.PIN_BLOCK_ERROR),  # non-decimal PIN digit
        ("041234FFFFFFFFFE", HsmResult.PIN_BLOCK_ERROR),  # fill not F
        ("0412340FFFFFFFFF", HsmResult.PIN_BLOCK_ERROR),  # fill not F
    ],
)
def test_format0_strict_decoding(clear: str, result: HsmResult) -> None:
    pan = "4000001234562"
    block = pinblock.xor(bytes.fromhex(clear), pinblock._pan_field_0_3(pan))
    with pytest.raises(PinBlockError) as info:
        pinblock.decrypt(TDES, 0, TDES.encrypt(block), pan)
    assert info.value.result is result


def test_format3_fill_must_be_a_to_f() -> None:
    pan = "4000001234562"
    clear = bytes.fromhex("341234ABCDEF0BCD")
    block = TDES.encrypt(pinblock.xor(clear, pinblock._pan_field_0_3(pan)))
    with pytest.raises(PinBlockError, match="format 3 fill"):
        pinblock.decrypt(TDES, 3, block, pan)


def test_format4_fill_must_be_a() -> None:
    pan = "4000001234562"
    field = bytes.fromhex("441234AAAAAAAAAB" + "00" * 8)
    intermediate = AES.encrypt(field)
    block = AES.encrypt(pinblock.xor(intermediate, pinblock.format4_pan_field(pan)))
    with pytest.raises(PinBlockError, match="format 4 fill"):
        pinblock.decrypt(AES, 4, block, pan)


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "", "１２３４"])
def test_bad_pins_refused_on_encode(pin: str) -> None:
    with pytest.raises(PinBlockError):
        pinblock.encrypt(TDES, 0, pin, "4000001234562")


@pytest.mark.parametrize("fmt", [0, 3])
@pytest.mark.parametrize("pan", ["", "12345678901", "12345678901234567890", "40000012345A2"])
def test_bad_pans_refused(pan: str, fmt: int) -> None:
    # Formats 0 and 3 keep 12 to 19 digits; only format 4 defines shorter PANs.
    with pytest.raises(PinBlockError) as info:
        pinblock.encrypt(TDES, fmt, "1234", pan)
    assert info.value.result is HsmResult.INVALID_PAN


def test_format_and_key_must_agree() -> None:
    for fmt, key in ((4, TDES), (0, AES), (2, TDES)):
        with pytest.raises(PinBlockError) as info:
            pinblock.encrypt(key, fmt, "1234", "4000001234562")
        assert info.value.result is HsmResult.PIN_BLOCK_FORMAT


@pytest.mark.parametrize("text", ["", "00", "ZZ" * 8, "0" * 15 + " ", "00 " * 5 + "0", "0" * 32])
def test_block_hex_malformed(text: str) -> None:
    with pytest.raises(PinBlockError):
        pinblock.parse_block_hex(text, 0)


@PSEC
@given(pin=pins, pan=st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_formats_0_and_3_agree_with_psec(pin: str, pan: str) -> None:
    block0 = pinblock.plain_block(0, pin, pan)
    assert block0 == psec.pinblock.encode_pinblock_iso_0(pin, pan)
    assert pinblock.pin_from_plain(0, block0, pan) == pin
    block3 = psec.pinblock.encode_pinblock_iso_3(pin, pan)
    assert pinblock.pin_from_plain(3, block3, pan) == pin
    assert psec.pinblock.decode_pinblock_iso_3(pinblock.plain_block(3, pin, pan), pan) == pin


@PSEC
@given(pin=pins, pan=st.text(alphabet="0123456789", min_size=12, max_size=19))
def test_format4_agrees_with_psec(pin: str, pan: str) -> None:
    key = bytes.fromhex(AES_KEY_HEX)
    theirs = psec.pinblock.encipher_pinblock_iso_4(key, pin, pan)
    assert pinblock.decrypt(AES, 4, theirs, pan) == pin
    ours = pinblock.encrypt(AES, 4, pin, pan)
    assert psec.pinblock.decipher_pinblock_iso_4(key, ours, pan) == pin


def test_errors_never_contain_the_pin() -> None:
    pin = "98765"
    for call in (
        lambda: pinblock.encrypt(TDES, 4, pin, "4000001234562"),
        lambda: pinblock.plain_block(0, pin + "x", "4000001234562"),
    ):
        with pytest.raises(HsmError) as info:
            call()
        assert pin not in str(info.value)
