"""The ATM side helpers agree with the HSM and with published vectors."""

from __future__ import annotations

import psec
import pytest
from hsm_testkeys import AES_KEY_HEX, PSEC, TDES_KEY_HEX
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm.errors import HsmError, KeyParityError, PinBlockError
from hsm.terminal import encrypt_pin_block, retail_mac


@PSEC
def test_encrypt_pin_block_format0_known_value() -> None:
    # Clear block 0412AC89ABCDEF67 (ID TECH / EFTlab example), encrypted by psec.
    block = encrypt_pin_block(TDES_KEY_HEX, "1234", "43219876543210987")
    expected = psec.des.encrypt_tdes_ecb(
        bytes.fromhex(TDES_KEY_HEX), bytes.fromhex("0412AC89ABCDEF67")
    )
    assert block == expected.hex().upper()


@PSEC
@settings(max_examples=30)
@given(pin=st.text(alphabet="0123456789", min_size=4, max_size=12),
       pan=st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_encrypt_pin_block_decrypts_with_psec(pin: str, pan: str) -> None:
    key = bytes.fromhex(TDES_KEY_HEX)
    clear = psec.des.decrypt_tdes_ecb(key, bytes.fromhex(encrypt_pin_block(TDES_KEY_HEX, pin, pan)))
    assert psec.pinblock.decode_pinblock_iso_0(clear, pan) == pin
    block4 = bytes.fromhex(encrypt_pin_block(AES_KEY_HEX, pin, pan, fmt=4))
    assert psec.pinblock.decipher_pinblock_iso_4(bytes.fromhex(AES_KEY_HEX), block4, pan) == pin


def test_encrypt_pin_block_refuses_bad_input() -> None:
    with pytest.raises(PinBlockError):
        encrypt_pin_block(TDES_KEY_HEX, "12", "4000001234562")
    with pytest.raises(PinBlockError):
        encrypt_pin_block(TDES_KEY_HEX, "1234", "4000001234562", fmt=2)
    with pytest.raises(KeyParityError):
        encrypt_pin_block("00" + TDES_KEY_HEX[2:], "1234", "4000001234562")
    for key in ("0123", "00" * 16, TDES_KEY_HEX + "00"):
        with pytest.raises(HsmError):
            encrypt_pin_block(key, "1234", "4000001234562", fmt=4)


@PSEC
@settings(max_examples=30)
@given(data=st.binary(max_size=200))
def test_retail_mac_agrees_with_psec(data: bytes) -> None:
    key = bytes.fromhex(TDES_KEY_HEX)
    theirs = psec.mac.generate_retail_mac(key[:8], key[8:], data, padding=1)
    assert retail_mac(TDES_KEY_HEX, data) == theirs.hex().upper()
