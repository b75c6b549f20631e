"""PIN translation TPK -> ZPK and ZPK -> ZPK with format conversion, and the
never-raises guarantee of verify_pin under arbitrary input."""

from __future__ import annotations

import dataclasses

import pytest
from hsm_testkeys import AES_KEY_HEX, TDES_KEY_HEX
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm import pinblock
from hsm._crypto import BlockKey
from hsm.errors import HsmError, PinBlockError
from hsm.keys import KeyAlgorithm, KeyUsage, WrappedKey
from hsm.results import HsmResult
from hsm.soft import PinVerification, SoftHsm
from hsm.terminal import encrypt_pin_block

ZPK_TDES_HEX = "FEDCBA98765432100123456789ABCDEF"  # the test key, halves swapped
ZPK_AES_HEX = "000102030405060708090A0B0C0D0E0F"

pins = st.text(alphabet="0123456789", min_size=4, max_size=12)
pans = st.text(alphabet="0123456789", min_size=13, max_size=19)
formats = st.sampled_from(pinblock.FORMATS)


@pytest.fixture(scope="module")
def zpk_tdes(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.ZPK, KeyAlgorithm.TDES2, ZPK_TDES_HEX)


@pytest.fixture(scope="module")
def zpk_aes(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.ZPK, KeyAlgorithm.AES128, ZPK_AES_HEX)


def _clear_key(fmt: int, tdes_hex: str, aes_hex: str) -> tuple[str, BlockKey]:
    hex_key = aes_hex if fmt == 4 else tdes_hex
    return hex_key, BlockKey(bytes.fromhex(hex_key), is_aes=fmt == 4)


@settings(max_examples=60)
@given(pin=pins, pan=pans, source=formats, dest=formats)
def test_tpk_to_zpk_round_trip(hsm: SoftHsm, tpk: WrappedKey, tpk_aes: WrappedKey,
                               zpk_tdes: WrappedKey, zpk_aes: WrappedKey, pin: str, pan: str,
                               source: int, dest: int) -> None:
    src_hex, _ = _clear_key(source, TDES_KEY_HEX, AES_KEY_HEX)
    block = encrypt_pin_block(src_hex, pin, pan, source)
    src_key = tpk_aes if source == 4 else tpk
    dest_key = zpk_aes if dest == 4 else zpk_tdes
    if source != 1 and dest == 1:  # PAN-bound to format 1: see the test below
        with pytest.raises(PinBlockError):
            hsm.translate_pin(src_key, source, block, pan, dest_key, dest)
        return
    out = hsm.translate_pin(src_key, source, block, pan, dest_key, dest)
    _, dest_clear = _clear_key(dest, ZPK_TDES_HEX, ZPK_AES_HEX)
    assert pinblock.decrypt(dest_clear, dest, bytes.fromhex(out), pan) == pin
    if source == 1 and dest != 1:
        return  # the way back would be PAN-bound to format 1
    # And on to a second zone: ZPK -> ZPK, back to the source format.
    back = hsm.translate_pin(dest_key, dest, out, pan, zpk_tdes if source != 4 else zpk_aes,
                             source)
    _, again = _clear_key(source, ZPK_TDES_HEX, ZPK_AES_HEX)
    assert pinblock.decrypt(again, source, bytes.fromhex(back), pan) == pin


@pytest.mark.parametrize("source", [0, 3, 4])
def test_pan_bound_block_never_translates_to_format_1(
    hsm: SoftHsm, tpk: WrappedKey, tpk_aes: WrappedKey, zpk_tdes: WrappedKey, source: int
) -> None:
    # PCI PIN Security requirement 3-3 (IBM CCA enforces the same): a PIN in a PAN-bound
    # format must not be translated to format 1, which is not bound to the PAN.
    pan = "4000001234562"
    src_hex, _ = _clear_key(source, TDES_KEY_HEX, AES_KEY_HEX)
    src_key = tpk_aes if source == 4 else tpk
    good = encrypt_pin_block(src_hex, "1234", pan, source)
    garbage = "00" * pinblock.block_bytes(source)
    outcomes = []
    for block in (good, garbage):  # refused before the block is looked at
        with pytest.raises(PinBlockError) as info:
            hsm.translate_pin(src_key, source, block, pan, zpk_tdes, 1)
        assert info.value.result is HsmResult.PIN_BLOCK_FORMAT
        assert "1234" not in str(info.value)
        outcomes.append(str(info.value))
    assert outcomes[0] == outcomes[1]
    # Format 1 to format 1, and format 1 into a PAN-bound format, still translate.
    block1 = encrypt_pin_block(TDES_KEY_HEX, "1234", pan, 1)
    for dest in (1, 0, 3):
        out = hsm.translate_pin(tpk, 1, block1, pan, zpk_tdes, dest)
        clear = BlockKey(bytes.fromhex(ZPK_TDES_HEX), is_aes=False)
        assert pinblock.decrypt(clear, dest, bytes.fromhex(out), pan) == "1234"


def test_translation_output_is_encrypted(hsm: SoftHsm, tpk: WrappedKey,
                                         zpk_tdes: WrappedKey) -> None:
    pan = "4000001234562"
    block = encrypt_pin_block(TDES_KEY_HEX, "1234", pan)
    out = hsm.translate_pin(tpk, 0, block, pan, zpk_tdes, 0)
    assert out != pinblock.plain_block(0, "1234", pan).hex().upper()
    assert out != block


@pytest.mark.parametrize("usage", sorted(set(KeyUsage) - {KeyUsage.ZPK}))
def test_destination_must_be_a_zpk(hsm: SoftHsm, tpk: WrappedKey, usage: KeyUsage) -> None:
    dest = hsm.import_clear_key(usage, KeyAlgorithm.TDES2, ZPK_TDES_HEX)
    block = encrypt_pin_block(TDES_KEY_HEX, "1234", "4000001234562")
    with pytest.raises(HsmError) as info:
        hsm.translate_pin(tpk, 0, block, "4000001234562", dest, 0)
    assert info.value.result is HsmResult.KEY_USAGE


@pytest.mark.parametrize("usage", sorted(set(KeyUsage) - {KeyUsage.TPK, KeyUsage.ZPK}))
def test_source_must_be_a_pin_key(hsm: SoftHsm, zpk_tdes: WrappedKey, usage: KeyUsage) -> None:
    source = hsm.import_clear_key(usage, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    block = encrypt_pin_block(TDES_KEY_HEX, "1234", "4000001234562")
    with pytest.raises(HsmError) as info:
        hsm.translate_pin(source, 0, block, "4000001234562", zpk_tdes, 0)
    assert info.value.result is HsmResult.KEY_USAGE


@given(usage=st.sampled_from(list(KeyUsage)), operation=st.sampled_from(
    ["verify_pin", "translate_src", "translate_dst", "pvv", "offset", "mac", "cvv", "kek"]))
def test_wrong_usage_always_refused(hsm: SoftHsm, usage: KeyUsage, operation: str) -> None:
    # One table of which usages each operation accepts; everything else gets 29.
    allowed = {
        "verify_pin": {KeyUsage.TPK, KeyUsage.ZPK},
        "translate_src": {KeyUsage.TPK, KeyUsage.ZPK},
        "translate_dst": {KeyUsage.ZPK},
        "pvv": {KeyUsage.PVK},
        "offset": {KeyUsage.PVK},
        "mac": {KeyUsage.TAK, KeyUsage.ZAK},
        "cvv": {KeyUsage.CVK},
        "kek": {KeyUsage.TMK, KeyUsage.ZMK},
    }[operation]
    key = hsm.import_clear_key(usage, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    good_pin_key = hsm.import_clear_key(KeyUsage.ZPK, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    pvk = hsm.import_clear_key(KeyUsage.PVK, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    pan = "4000001234562"
    block = encrypt_pin_block(TDES_KEY_HEX, "1234", pan)
    result: HsmResult
    try:
        if operation == "verify_pin":
            req = PinVerification(block, pan, 0, key, "pvv", pvk, pvki="1", pvv="0000")
            result = hsm.verify_pin(req)
        elif operation == "translate_src":
            hsm.translate_pin(key, 0, block, pan, good_pin_key, 0)
            result = HsmResult.OK
        elif operation == "translate_dst":
            hsm.translate_pin(good_pin_key, 0, block, pan, key, 0)
            result = HsmResult.OK
        elif operation == "pvv":
            hsm.generate_pvv(key, pan, "1", "1234")
            result = HsmResult.OK
        elif operation == "offset":
            hsm.generate_ibm3624_offset(key, pan, "1234")
            result = HsmResult.OK
        elif operation == "mac":
            hsm.generate_mac(key, b"x", "CMAC")  # type: ignore[arg-type]
            result = HsmResult.OK
        elif operation == "cvv":
            hsm.generate_cvv(key, pan, "2812", "101")
            result = HsmResult.OK
        else:
            hsm.generate_key(KeyUsage.TPK, KeyAlgorithm.TDES2, key)
            result = HsmResult.OK
    except HsmError as exc:
        result = exc.result
    if usage in allowed:
        assert result is not HsmResult.KEY_USAGE
    else:
        assert result is HsmResult.KEY_USAGE


text = st.text(max_size=40)


@settings(max_examples=150)
@given(block=text, pan=text, fmt=st.integers(-1, 5), method=st.sampled_from(["pvv", "ibm3624",
       "x"]), pvki=st.none() | text, pvv=st.none() | text, offset=st.none() | text,
       table=text, check=st.none() | st.integers(-2, 14), validation=st.none() | text,
       pad=text, ksn=st.none() | text)
def test_verify_pin_never_raises(hsm: SoftHsm, tpk: WrappedKey, pvk: WrappedKey, block: str,
                                 pan: str, fmt: int, method: str, pvki: str | None,
                                 pvv: str | None, offset: str | None, table: str,
                                 check: int | None, validation: str | None, pad: str,
                                 ksn: str | None) -> None:
    req = PinVerification(block, pan, fmt, tpk, method, pvk, pvki=pvki,  # type: ignore[arg-type]
                          pvv=pvv, offset=offset, decimalisation_table=table,
                          pin_check_length=check, validation_data=validation, pad_char=pad,
                          ksn=ksn)
    assert isinstance(hsm.verify_pin(req), HsmResult)
    good = encrypt_pin_block(TDES_KEY_HEX, "1234", "4000001234562")
    req2 = dataclasses.replace(req, pin_block_hex=good, pan="4000001234562", pin_block_format=0,
                               ksn=None)
    assert isinstance(hsm.verify_pin(req2), HsmResult)
