"""MACs: ISO 9797-1 algorithms 1 and 3, CMAC; published vectors, psec, usage rules."""

from __future__ import annotations

import psec
import pytest
from hsm_testkeys import AES_KEY_HEX, PSEC, TDES_KEY_HEX
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm import mac
from hsm._crypto import BlockKey
from hsm.errors import HsmError
from hsm.keys import KeyAlgorithm, KeyUsage, WrappedKey
from hsm.mac import MacAlgorithm
from hsm.results import HsmResult
from hsm.soft import SoftHsm

NIST_M = bytes.fromhex(
    "6BC1BEE22E409F96E93D7E117393172AAE2D8A571E03AC9C9EB76FAC45AF8E51"
    "30C81C46A35CE411E5FBC1191A0A52EFF69F2445DF4F9B17AD2B417BE66C3710"
)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, "BB1D6929E95937287FA37D129B756746"),
        (16, "070A16B46B4D4144F79BDD9DD04A287C"),
        (40, "DFA66747DE9AE63030CA32611497C827"),
        (64, "51F0BEBF7E3B9D92FC49741779363CFE"),
    ],
)
def test_aes_cmac_nist_sp800_38b(length: int, expected: str) -> None:
    # NIST SP 800-38B Appendix D.1 (AES-128), also RFC 4493 section 4.
    key = bytes.fromhex(AES_KEY_HEX)
    assert mac.compute(MacAlgorithm.CMAC, key, True, NIST_M[:length]).hex().upper() == expected


@pytest.mark.parametrize(
    ("key_hex", "length", "expected"),
    [
        # NIST SP 800-38B Appendix D.4: three-key TDEA.
        ("8AA83BF8CBDA10620BC1BF19FBB6CD58BC313D4A371CA8B5", 0, "B7A688E122FFAF95"),
        ("8AA83BF8CBDA10620BC1BF19FBB6CD58BC313D4A371CA8B5", 8, "8E8F293136283797"),
        ("8AA83BF8CBDA10620BC1BF19FBB6CD58BC313D4A371CA8B5", 20, "743DDBE0CE2DC2ED"),
        ("8AA83BF8CBDA10620BC1BF19FBB6CD58BC313D4A371CA8B5", 32, "33E6B1092400EAE5"),
        # NIST SP 800-38B Appendix D.4: two-key TDEA (K3 = K1).
        ("4CF15134A2850DD58A3D10BA80570D38", 0, "BD2EBF9A3BA00361"),
        ("4CF15134A2850DD58A3D10BA80570D38", 8, "4FF2AB813C53CE83"),
        ("4CF15134A2850DD58A3D10BA80570D38", 20, "62DD1B471902BD4E"),
        ("4CF15134A2850DD58A3D10BA80570D38", 32, "31B1E431DABC4EB8"),
    ],
)
def test_tdes_cmac_nist_sp800_38b(key_hex: str, length: int, expected: str) -> None:
    got = mac.compute(MacAlgorithm.CMAC, bytes.fromhex(key_hex), False, NIST_M[:length])
    assert got.hex().upper() == expected


@pytest.mark.parametrize(
    ("key_hex", "data", "expected"),
    [
        # ISO/IEC 9797-1:2011 annex B.4 (as quoted by RustCrypto retail-mac).
        (TDES_KEY_HEX, b"Now is the time for all ", "A1C72E74EA3FA9B6"),
        (TDES_KEY_HEX, b"Now is the time for it", "2E2B1428CC78254F"),
        # BouncyCastle ISO9797Alg3MacTest.
        ("7CA110454A1A6E570131D9619DC1376E", b"Hello World !!!!", "F09B856213BAB83B"),
    ],
)
def test_retail_mac_published(key_hex: str, data: bytes, expected: str) -> None:
    got = mac.compute(MacAlgorithm.ISO9797_1_ALG3_PAD1, bytes.fromhex(key_hex), False, data)
    assert got.hex().upper() == expected


def test_cbc_mac_published() -> None:
    # ISO/IEC 9797-1 annex B / FIPS 113 (ANSI X9.9): DES key 0123456789ABCDEF,
    # "Now is the time for all " -> 70A30640CC76DD8B (single DES as K K).
    key = bytes.fromhex("0123456789ABCDEF" * 2)
    got = mac.compute(MacAlgorithm.ISO9797_1_ALG1_PAD1, key, False, b"Now is the time for all ")
    assert got.hex().upper() == "70A30640CC76DD8B"


def test_padding_methods() -> None:
    assert mac.pad(b"", 1, 8) == bytes(8)
    assert mac.pad(b"\x01", 1, 8) == b"\x01" + bytes(7)
    assert mac.pad(bytes(8), 1, 8) == bytes(8)
    assert mac.pad(b"", 2, 8) == b"\x80" + bytes(7)
    assert mac.pad(bytes(8), 2, 8) == bytes(8) + b"\x80" + bytes(7)


@PSEC
@settings(max_examples=40)
@given(data=st.binary(max_size=100), padding=st.sampled_from((1, 2)))
def test_alg1_and_alg3_agree_with_psec(data: bytes, padding: int) -> None:
    key = bytes.fromhex(TDES_KEY_HEX)
    alg1 = MacAlgorithm.ISO9797_1_ALG1_PAD1 if padding == 1 else MacAlgorithm.ISO9797_1_ALG1_PAD2
    alg3 = MacAlgorithm.ISO9797_1_ALG3_PAD1 if padding == 1 else MacAlgorithm.ISO9797_1_ALG3_PAD2
    assert mac.compute(alg1, key, False, data) == psec.mac.generate_cbc_mac(key, data, padding)
    assert mac.compute(alg3, key, False, data) == psec.mac.generate_retail_mac(
        key[:8], key[8:], data, padding
    )


def test_alg3_needs_double_length_tdes() -> None:
    with pytest.raises(HsmError) as info:
        mac.compute(MacAlgorithm.ISO9797_1_ALG3_PAD1, bytes.fromhex(AES_KEY_HEX), True, b"x")
    assert info.value.result is HsmResult.KEY_LENGTH


@pytest.fixture(scope="module")
def tak(hsm: SoftHsm) -> WrappedKey:
    return hsm.import_clear_key(KeyUsage.TAK, KeyAlgorithm.TDES2, TDES_KEY_HEX)


@settings(max_examples=30)
@given(data=st.binary(max_size=300), algorithm=st.sampled_from(list(MacAlgorithm)))
def test_generate_then_verify(hsm: SoftHsm, tak: WrappedKey, data: bytes,
                              algorithm: MacAlgorithm) -> None:
    value = hsm.generate_mac(tak, data, algorithm)
    assert hsm.verify_mac(tak, data, value, algorithm) is HsmResult.OK
    assert hsm.verify_mac(tak, data, value[:4], algorithm) is HsmResult.OK
    flipped = bytes([value[0] ^ 1]) + value[1:]
    assert hsm.verify_mac(tak, data, flipped, algorithm) is HsmResult.VERIFICATION_FAILED
    assert hsm.verify_mac(tak, data + b"x", value, algorithm) is HsmResult.VERIFICATION_FAILED


def test_verify_mac_bad_inputs(hsm: SoftHsm, tak: WrappedKey) -> None:
    value = hsm.generate_mac(tak, b"data", mac.RETAIL_MAC)
    assert hsm.verify_mac(tak, b"data", value[:3], mac.RETAIL_MAC) is HsmResult.INVALID_INPUT
    assert hsm.verify_mac(tak, b"data", value + b"\x00", mac.RETAIL_MAC) is (
        HsmResult.INVALID_INPUT
    )
    assert hsm.verify_mac(tak, b"data", value, "NOPE") is HsmResult.INVALID_INPUT  # type: ignore[arg-type]


def test_aes_mac_key(hsm: SoftHsm) -> None:
    zak = hsm.import_clear_key(KeyUsage.ZAK, KeyAlgorithm.AES128, AES_KEY_HEX)
    value = hsm.generate_mac(zak, NIST_M[:16], MacAlgorithm.CMAC)
    assert value.hex().upper() == "070A16B46B4D4144F79BDD9DD04A287C"
    assert hsm.verify_mac(zak, NIST_M[:16], value[:8], MacAlgorithm.CMAC) is HsmResult.OK
    # Algorithm 3 is defined for DES only.
    assert hsm.verify_mac(zak, b"x", value[:8], mac.RETAIL_MAC) is HsmResult.KEY_LENGTH


@pytest.mark.parametrize("usage", sorted(set(KeyUsage) - {KeyUsage.TAK, KeyUsage.ZAK}))
def test_mac_key_usage_enforced(hsm: SoftHsm, usage: KeyUsage) -> None:
    wrong = hsm.import_clear_key(usage, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    with pytest.raises(HsmError) as info:
        hsm.generate_mac(wrong, b"data", mac.RETAIL_MAC)
    assert info.value.result is HsmResult.KEY_USAGE
    assert hsm.verify_mac(wrong, b"data", bytes(8), mac.RETAIL_MAC) is HsmResult.KEY_USAGE


def test_block_key_cbc_mac_matches_manual_chain() -> None:
    # CBC-MAC is the last block of CBC with a zero IV: check against chained ECB.
    key = BlockKey(bytes.fromhex(TDES_KEY_HEX), is_aes=False)
    data = bytes(range(24))
    chain = bytes(8)
    for i in range(0, 24, 8):
        chain = key.encrypt(bytes(a ^ b for a, b in zip(chain, data[i : i + 8], strict=True)))
    assert key.cbc_mac(data) == chain
