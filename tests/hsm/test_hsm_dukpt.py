"""DUKPT: ANSI X9.24-1 (TDES) and X9.24-3 (AES) published vectors, and the HSM calls."""

from __future__ import annotations

import pytest
from hsm_testkeys import TDES_KEY_HEX
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm import dukpt, pinblock
from hsm._crypto import BlockKey
from hsm.dukpt import AesKeyUsage
from hsm.errors import HsmError, PinBlockError
from hsm.keys import KeyAlgorithm, KeyUsage, WrappedKey
from hsm.results import HsmResult
from hsm.soft import PinVerification, SoftHsm
from hsm.terminal import dukpt_encrypt_pin_block

# ANSI X9.24-1-2009 annex A.4, "initial sequence" (as reproduced in moov-io/dukpt's
# test suite): BDK 0123456789ABCDEFFEDCBA9876543210, PIN 1234, PAN 4012345678909.
TDES_BDK = TDES_KEY_HEX
TDES_IPEK = "6AC292FAA1315B4D858AB3A3D7D5933A"
TDES_VECTORS = [
    ("FFFF9876543210E00001", "042666B49184CFA368DE9628D0397BC9", "1B9C1845EB993A7A"),
    ("FFFF9876543210E00002", "C46551CEF9FD24B0AA9AD834130D3BC7", "10A01C8D02C69107"),
    ("FFFF9876543210E00003", "0DF3D9422ACA56E547676D07AD6BADFA", "18DC07B94797B466"),
    ("FFFF9876543210E00004", "279C0F6AEED0BE652B2C733E1383AE91", "0BC79509D5645DF7"),
    ("FFFF9876543210E00005", "5F8DC6D2C845C125508DDC048093B83F", "5BC0AF22AD87B327"),
]
TDES_PAN = "4012345678909"

# ANSI X9.24-3-2017 test vector supplement (ASC X9, 2018-01-29).
AES_BDK128 = "FEDCBA9876543210F1F1F1F1F1F1F1F1"
AES_BDK256 = AES_BDK128 * 2
AES_IKID = "1234567890123456"


@pytest.mark.parametrize(("ksn", "current", "pin_block"), TDES_VECTORS)
def test_tdes_dukpt_x9_24_1(ksn: str, current: str, pin_block: str) -> None:
    bdk, ksn_bytes = bytes.fromhex(TDES_BDK), bytes.fromhex(ksn)
    ipek = dukpt.tdes_ipek(bdk, ksn_bytes)
    assert ipek.hex().upper() == TDES_IPEK
    assert dukpt.tdes_transaction_key(ipek, ksn_bytes).hex().upper() == current
    pin_key = BlockKey(dukpt.tdes_pin_key(bdk, ksn), is_aes=False)
    assert pinblock.encrypt(pin_key, 0, "1234", TDES_PAN).hex().upper() == pin_block


def test_aes_dukpt_initial_keys() -> None:
    ikid = bytes.fromhex(AES_IKID)
    ik128 = dukpt.aes_initial_key(bytes.fromhex(AES_BDK128), KeyAlgorithm.AES128, ikid)
    assert ik128.hex().upper() == "1273671EA26AC29AFA4D1084127652A1"
    ik256 = dukpt.aes_initial_key(bytes.fromhex(AES_BDK256), KeyAlgorithm.AES256, ikid)
    assert ik256.hex().upper() == (
        "CE9CE0C101D1138F97FB6CAD4DF045A7083D4EAE2D35A31789D01CCF0949550F"
    )


@pytest.mark.parametrize(
    ("bdk", "bdk_alg", "counter", "derivation"),
    [
        (AES_BDK128, KeyAlgorithm.AES128, 1, "4F21B565BAD9835E112B6465635EAE44"),
        (AES_BDK128, KeyAlgorithm.AES128, 2, "2F34D68DE10F68D38091A73B9E7C437C"),
        (AES_BDK128, KeyAlgorithm.AES128, 8, "718EE6CF0B27E53D5F7AF99C4D8146A2"),
        # Counter FFFFFFFF (the DUKPT update key): 32 steps of the ladder.
        (AES_BDK128, KeyAlgorithm.AES128, 0xFFFFFFFF, "36C6EBBCC0536FC91C1D50660D4F82AE"),
        (AES_BDK256, KeyAlgorithm.AES256, 1,
         "54AC2B32B145EA4A554CB8BC44B17467063A799856B1CCC2A138D36E8DBF78B3"),
        (AES_BDK256, KeyAlgorithm.AES256, 0xFFFFFFFF,
         "39064FDC8373D710AFAA823E757E59190C92DD8FBF86B87B673632F4E04C97D2"),
    ],
)
def test_aes_dukpt_derivation_keys(bdk: str, bdk_alg: KeyAlgorithm, counter: int,
                                   derivation: str) -> None:
    ksn = bytes.fromhex(AES_IKID) + counter.to_bytes(4, "big")
    initial = dukpt.aes_initial_key(bytes.fromhex(bdk), bdk_alg, ksn[:8])
    assert dukpt.aes_derivation_key(initial, bdk_alg, ksn).hex().upper() == derivation


@pytest.mark.parametrize(
    ("bdk", "bdk_alg", "counter", "usage", "working", "expected"),
    [
        (AES_BDK128, KeyAlgorithm.AES128, 1, AesKeyUsage.PIN_ENCRYPTION, KeyAlgorithm.AES128,
         "AF8CB133A78F8DC2D1359F18527593FB"),
        (AES_BDK128, KeyAlgorithm.AES128, 1, AesKeyUsage.MAC_GENERATION, KeyAlgorithm.AES128,
         "A2DC23DE6FDE0824A2BC321E08E4B8B7"),
        (AES_BDK128, KeyAlgorithm.AES128, 1, AesKeyUsage.DATA_ENCRYPT, KeyAlgorithm.AES128,
         "A35C412EFD41FDB98B69797C02DCD08F"),
        (AES_BDK128, KeyAlgorithm.AES128, 1, AesKeyUsage.KEY_ENCRYPTION, KeyAlgorithm.AES128,
         "36A724B7BEFA5A25F5E7B5782A4554A2"),
        (AES_BDK128, KeyAlgorithm.AES128, 2, AesKeyUsage.PIN_ENCRYPTION, KeyAlgorithm.AES128,
         "D30BDC73EC9714B000BEC66BDB7B6D09"),
        (AES_BDK128, KeyAlgorithm.AES128, 8, AesKeyUsage.PIN_ENCRYPTION, KeyAlgorithm.AES128,
         "4D9DF3FBEE3448FC3E676D04320A90F5"),
        (AES_BDK128, KeyAlgorithm.AES128, 1, AesKeyUsage.PIN_ENCRYPTION, KeyAlgorithm.TDES2,
         "630C706D9546E47D4449313F61C4D4AB"),
        (AES_BDK128, KeyAlgorithm.AES128, 1, AesKeyUsage.PIN_ENCRYPTION, KeyAlgorithm.TDES3,
         "EA8B3F37EB9B15831167EF2977FD8762D9B5913F35766F6A"),
        (AES_BDK256, KeyAlgorithm.AES256, 1, AesKeyUsage.PIN_ENCRYPTION, KeyAlgorithm.AES256,
         "8C1AB7BEE973829E30242E0BBBDD4946D540C98FC1B5BDCF94790001A23FD502"),
    ],
)
def test_aes_dukpt_working_keys(bdk: str, bdk_alg: KeyAlgorithm, counter: int,
                                usage: AesKeyUsage, working: KeyAlgorithm, expected: str) -> None:
    ksn = bytes.fromhex(AES_IKID) + counter.to_bytes(4, "big")
    key = dukpt.aes_working_key(bytes.fromhex(bdk), bdk_alg, ksn, usage, working)
    assert key.hex().upper() == expected


@pytest.fixture(scope="module")
def bdk_tdes(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.BDK, KeyAlgorithm.TDES2, TDES_BDK)


@pytest.fixture(scope="module")
def bdk_aes(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.BDK, KeyAlgorithm.AES128, AES_BDK128)


@pytest.fixture(scope="module")
def zpk(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.ZPK, KeyAlgorithm.TDES2, TDES_KEY_HEX)


def test_x9_24_3_format4_block_translates(hsm: SoftHsm, bdk_aes: WrappedKey,
                                          zpk: WrappedKey) -> None:
    # X9.24-3-2017 supplement, format 4 example: PIN 1234, PAN 4111111111111111, random
    # 2F69ADDE2E9E7ACE, under the counter-1 PIN key -> A912150391AB65A67E52883D81CE2D15;
    # under the counter-2 key -> 52A00503BD34BA1383F6A7EE9FE2547F.
    pan = "4111111111111111"
    for counter, block in ((1, "A912150391AB65A67E52883D81CE2D15"),
                           (2, "52A00503BD34BA1383F6A7EE9FE2547F")):
        ksn = AES_IKID + f"{counter:08X}"
        out = hsm.translate_pin(bdk_aes, 4, block, pan, zpk, 0, ksn=ksn)
        clear = BlockKey(bytes.fromhex(TDES_KEY_HEX), is_aes=False).decrypt(bytes.fromhex(out))
        assert pinblock.pin_from_plain(0, clear, pan) == "1234"
    field = pinblock.format4_pin_field("1234", random_half=bytes.fromhex("2F69ADDE2E9E7ACE"))
    key = BlockKey(bytes.fromhex("AF8CB133A78F8DC2D1359F18527593FB"), is_aes=True)
    inner = key.encrypt(field)
    block = key.encrypt(pinblock.xor(inner, pinblock.format4_pan_field(pan)))
    assert block.hex().upper() == "A912150391AB65A67E52883D81CE2D15"


@pytest.mark.parametrize(("ksn", "current", "pin_block"), TDES_VECTORS)
def test_tdes_dukpt_translate_and_verify(hsm: SoftHsm, bdk_tdes: WrappedKey, zpk: WrappedKey,
                                         pvk: WrappedKey, ksn: str, current: str,
                                         pin_block: str) -> None:
    out = hsm.translate_pin(bdk_tdes, 0, pin_block, TDES_PAN, zpk, 3, ksn=ksn)
    clear = BlockKey(bytes.fromhex(TDES_KEY_HEX), is_aes=False).decrypt(bytes.fromhex(out))
    assert pinblock.pin_from_plain(3, clear, TDES_PAN) == "1234"
    pvv = hsm.generate_pvv(pvk, TDES_PAN, "1", "1234")
    req = PinVerification(pin_block, TDES_PAN, 0, bdk_tdes, "pvv", pvk, pvki="1", pvv=pvv,
                          ksn=ksn)
    assert hsm.verify_pin(req) is HsmResult.OK
    other_ksn = ksn[:-1] + ("9" if ksn[-1] != "9" else "8")
    assert hsm.verify_pin(_with(req, ksn=other_ksn)) is not HsmResult.OK


def _with(req: PinVerification, **changes: object) -> PinVerification:
    import dataclasses

    return dataclasses.replace(req, **changes)  # type: ignore[arg-type]


def test_dukpt_bad_ksn(hsm: SoftHsm, bdk_tdes: WrappedKey, bdk_aes: WrappedKey,
                       zpk: WrappedKey) -> None:
    block = TDES_VECTORS[0][2]
    bad_tdes = ["", "FFFF9876543210E0000", "FFFF9876543210E00000", "FFFF9876543210FFFFFF"[:20],
                "ZZZZ9876543210E00001"]
    for ksn in bad_tdes:
        with pytest.raises(HsmError) as info:
            hsm.translate_pin(bdk_tdes, 0, block, TDES_PAN, zpk, 0, ksn=ksn)
        assert info.value.result is HsmResult.INVALID_INPUT, ksn
    # 17 one-bits in an AES counter: never used by a terminal.
    with pytest.raises(HsmError) as info:
        hsm.translate_pin(bdk_aes, 4, "00" * 16, TDES_PAN, zpk, 0, ksn=AES_IKID + "0001FFFF")
    assert info.value.result is HsmResult.INVALID_INPUT


def test_dukpt_needs_a_bdk(hsm: SoftHsm, tpk: WrappedKey, zpk: WrappedKey) -> None:
    with pytest.raises(HsmError) as info:
        hsm.translate_pin(tpk, 0, TDES_VECTORS[0][2], TDES_PAN, zpk, 0, ksn=TDES_VECTORS[0][0])
    assert info.value.result is HsmResult.KEY_USAGE
    tdes3_bdk = hsm.import_clear_key(
        KeyUsage.BDK, KeyAlgorithm.TDES3, TDES_KEY_HEX + "0123456789ABCDEF"
    )
    with pytest.raises(HsmError) as info:
        hsm.translate_pin(tdes3_bdk, 0, TDES_VECTORS[0][2], TDES_PAN, zpk, 0,
                          ksn=TDES_VECTORS[0][0])
    assert info.value.result is HsmResult.KEY_LENGTH


def _counter(bits: list[int]) -> int:
    return sum(1 << b for b in set(bits))


@settings(max_examples=40)
@given(pin=st.text(alphabet="0123456789", min_size=4, max_size=12),
       pan=st.text(alphabet="0123456789", min_size=13, max_size=19),
       bits=st.lists(st.integers(0, 20), min_size=1, max_size=10), fmt=st.sampled_from((0, 1, 3)),
       dest=st.sampled_from((0, 1, 3)))
def test_tdes_dukpt_round_trip(hsm: SoftHsm, bdk_tdes: WrappedKey, zpk: WrappedKey, pin: str,
                               pan: str, bits: list[int], fmt: int, dest: int) -> None:
    ksn = (0xFFFF9876543210E00000 | _counter(bits)).to_bytes(10, "big").hex().upper()
    block = dukpt_encrypt_pin_block(TDES_BDK, ksn, pin, pan, fmt)
    if fmt != 1 and dest == 1:  # PAN-bound to format 1 is refused (test_hsm_translate)
        with pytest.raises(PinBlockError):
            hsm.translate_pin(bdk_tdes, fmt, block, pan, zpk, dest, ksn=ksn)
        return
    out = hsm.translate_pin(bdk_tdes, fmt, block, pan, zpk, dest, ksn=ksn)
    clear = BlockKey(bytes.fromhex(TDES_KEY_HEX), is_aes=False)
    assert pinblock.decrypt(clear, dest, bytes.fromhex(out), pan) == pin


@settings(max_examples=30)
@given(pin=st.text(alphabet="0123456789", min_size=4, max_size=12),
       pan=st.text(alphabet="0123456789", min_size=12, max_size=19),
       bits=st.lists(st.integers(0, 31), min_size=1, max_size=16), fmt=st.sampled_from((0, 4)))
def test_aes_dukpt_round_trip(hsm: SoftHsm, bdk_aes: WrappedKey, zpk: WrappedKey, pin: str,
                              pan: str, bits: list[int], fmt: int) -> None:
    ksn = AES_IKID + f"{_counter(bits):08X}"
    block = dukpt_encrypt_pin_block(AES_BDK128, ksn, pin, pan, fmt)
    out = hsm.translate_pin(bdk_aes, fmt, block, pan, zpk, 0, ksn=ksn)
    clear = BlockKey(bytes.fromhex(TDES_KEY_HEX), is_aes=False)
    assert pinblock.decrypt(clear, 0, bytes.fromhex(out), pan) == pin


def test_terminal_dukpt_matches_published_block() -> None:
    # X9.24-1 annex A.4 first transaction, from the terminal helper.
    assert dukpt_encrypt_pin_block(TDES_BDK, TDES_VECTORS[0][0], "1234", TDES_PAN) == (
        TDES_VECTORS[0][2]
    )
