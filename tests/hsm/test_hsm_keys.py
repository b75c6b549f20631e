"""Key model: master key loading, wrapping, usage binding, KCVs, import and generation."""

from __future__ import annotations

import os
from pathlib import Path

import psec
import pytest
from hsm_testkeys import AES_KEY_HEX, PSEC, TDES_KEY_HEX

from hsm._crypto import BlockKey
from hsm.errors import (
    HsmError,
    KcvMismatch,
    KeyMaterialError,
    KeyParityError,
    KeyUsageError,
    MasterKeyUnavailable,
)
from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey, WrappedKey, compute_kcv
from hsm.results import HsmResult
from hsm.soft import SoftHsm
from hsm.terminal import encrypt_pin_block

GOOD_MASTER_HEX = "A5" * 32
# Three distinct odd-parity components (the test key's halves and 89AB...4567).
TDES3_KEY_HEX = "0123456789ABCDEFFEDCBA987654321089ABCDEF01234567"


def test_master_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATM_SWITCH_MASTER_KEY", GOOD_MASTER_HEX)
    key = MasterKey.from_env()
    assert not key.is_demo
    assert GOOD_MASTER_HEX not in repr(key)
    monkeypatch.delenv("ATM_SWITCH_MASTER_KEY")
    with pytest.raises(MasterKeyUnavailable):
        MasterKey.from_env()


@pytest.mark.parametrize("bad", ["A5" * 31, "zz" * 32, "00" * 32, ""])
def test_master_key_malformed_is_refused_without_echo(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATM_SWITCH_MASTER_KEY", bad)
    with pytest.raises(MasterKeyUnavailable) as info:
        MasterKey.from_env()
    if bad:
        assert bad not in str(info.value)


def test_master_key_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(GOOD_MASTER_HEX + "\n", encoding="ascii")
    os.chmod(path, 0o600)
    assert MasterKey.from_file(path).kcv == MasterKey.from_hex(GOOD_MASTER_HEX).kcv
    for mode in (0o640, 0o604, 0o660, 0o620):
        os.chmod(path, mode)
        with pytest.raises(MasterKeyUnavailable, match="group or others"):
            MasterKey.from_file(path)
    with pytest.raises(MasterKeyUnavailable):
        MasterKey.from_file(tmp_path / "missing.key")


def test_demo_master_key_is_labelled() -> None:
    key = MasterKey.demo()
    assert key.is_demo
    assert "demo" in repr(key)


@PSEC
def test_tdes_kcv_published_value() -> None:
    # KCV of 0123456789ABCDEF FEDCBA9876543210: 08D7B4 (psec doc examples, payShield
    # manuals and most key ceremony guides use this test key).
    assert compute_kcv(KeyAlgorithm.TDES2, bytes.fromhex(TDES_KEY_HEX)) == "08D7B4"
    assert psec.des.generate_kcv(bytes.fromhex(TDES_KEY_HEX), 3).hex().upper() == "08D7B4"


def test_aes_kcv_is_cmac_of_zero_block() -> None:
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.cmac import CMAC

    key = bytes.fromhex(AES_KEY_HEX)
    mac = CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    assert compute_kcv(KeyAlgorithm.AES128, key) == mac.finalize()[:3].hex().upper()


def test_wrap_round_trip_and_text(hsm: SoftHsm, master: MasterKey) -> None:
    wrapped = hsm.import_clear_key(KeyUsage.ZPK, None, TDES_KEY_HEX)
    assert wrapped.algorithm is KeyAlgorithm.TDES2
    assert wrapped.kcv == "08D7B4"
    text = wrapped.to_text()
    assert WrappedKey.from_text(text) == wrapped
    assert master.unwrap(WrappedKey.from_text(text)) == bytes.fromhex(TDES_KEY_HEX)
    assert TDES_KEY_HEX not in text.upper()
    assert TDES_KEY_HEX not in repr(wrapped).upper()
    assert wrapped.ciphertext.hex().upper() not in repr(wrapped).upper()


def test_relabelled_key_does_not_unwrap(hsm: SoftHsm, master: MasterKey) -> None:
    pvk = hsm.import_clear_key(KeyUsage.PVK, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    forged = WrappedKey.from_text(pvk.to_text().replace(":PVK:", ":TPK:"))
    with pytest.raises(KeyMaterialError) as info:
        master.unwrap(forged)
    assert info.value.result is HsmResult.MASTER_KEY_ERROR
    forged_kcv = WrappedKey(pvk.usage, pvk.algorithm, pvk.ciphertext, "000000")
    with pytest.raises(KeyMaterialError):
        master.unwrap(forged_kcv)


def test_wrapped_key_fields_validated() -> None:
    ciphertext = bytes(32)
    assert WrappedKey("TPK", "TDES2", ciphertext, "08D7B4").usage is KeyUsage.TPK  # type: ignore[arg-type]
    for usage, algorithm, kcv in (("XXX", "TDES2", "08D7B4"), ("TPK", "DES", "08D7B4"),
                                  ("TPK", "TDES2", "08d7b4"), ("TPK", "TDES2", "08D7")):
        with pytest.raises(KeyMaterialError):
            WrappedKey(usage, algorithm, ciphertext, kcv)  # type: ignore[arg-type]


def test_other_master_key_does_not_unwrap(hsm: SoftHsm) -> None:
    tmk = hsm.import_clear_key(KeyUsage.TMK, None, TDES_KEY_HEX)
    other = SoftHsm(MasterKey.from_hex(GOOD_MASTER_HEX))
    with pytest.raises(KeyMaterialError) as info:
        other.generate_key(KeyUsage.TPK, KeyAlgorithm.TDES2, tmk)
    assert info.value.result is HsmResult.MASTER_KEY_ERROR


@pytest.mark.parametrize(
    "text",
    ["", "K1:TPK:TDES2:08D7B4", "K2:TPK:TDES2:08D7B4:00", "K1:XXX:TDES2:08D7B4:" + "00" * 32,
     "K1:TPK:DES:08D7B4:" + "00" * 32, "K1:TPK:TDES2:08d7b4:" + "00" * 32,
     "K1:TPK:TDES2:08D7B4:" + "00" * 31, "K1:TPK:TDES2:08D7B4:zz"],
)
def test_wrapped_text_malformed(text: str) -> None:
    with pytest.raises(KeyMaterialError) as info:
        WrappedKey.from_text(text)
    assert info.value.result is HsmResult.INVALID_INPUT


def test_parity_and_zero_keys_refused(hsm: SoftHsm) -> None:
    with pytest.raises(KeyParityError) as info:
        hsm.import_clear_key(KeyUsage.TPK, KeyAlgorithm.TDES2, "0023456789ABCDEFFEDCBA9876543210")
    assert info.value.result is HsmResult.KEY_PARITY
    assert "0023456789" not in str(info.value)
    with pytest.raises(KeyParityError) as info:
        hsm.import_clear_key(KeyUsage.TPK, KeyAlgorithm.AES128, "00" * 16)
    assert info.value.result is HsmResult.DESTINATION_KEY_PARITY
    with pytest.raises(KeyMaterialError):
        hsm.import_clear_key(KeyUsage.TPK, KeyAlgorithm.AES256, TDES_KEY_HEX)
    with pytest.raises(KeyMaterialError):
        hsm.import_clear_key(KeyUsage.TPK, None, "0123")
    with pytest.raises(KeyMaterialError):
        hsm.import_clear_key(KeyUsage.TPK, None, "not hex at all")


@pytest.mark.parametrize(
    ("kek_hex", "algorithm"),
    [(TDES_KEY_HEX, KeyAlgorithm.TDES2), (TDES3_KEY_HEX, KeyAlgorithm.TDES2),
     (TDES3_KEY_HEX, KeyAlgorithm.TDES3)],
)
def test_generate_under_tmk_decrypts_to_the_key(hsm: SoftHsm, kek_hex: str,
                                                algorithm: KeyAlgorithm) -> None:
    # The ATM side decrypts the new key with its clear TMK (ECB under a TDES TMK,
    # done here straight with `cryptography`) and finds the same KCV.
    tmk = hsm.import_clear_key(KeyUsage.TMK, None, kek_hex)
    generated = hsm.generate_key(KeyUsage.TPK, algorithm, tmk)
    assert generated.under_kek_hex is not None
    assert generated.kcv == generated.wrapped.kcv
    assert generated.wrapped.usage is KeyUsage.TPK
    assert generated.wrapped.algorithm is algorithm
    clear = _tdes_ecb_decrypt(kek_hex, generated.under_kek_hex)
    assert compute_kcv(algorithm, clear) == generated.kcv
    assert generated.under_kek_hex not in repr(generated)


def _tdes_ecb_decrypt(key_hex: str, data_hex: str) -> bytes:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = bytes.fromhex(key_hex)
    key24 = key + key[:8] if len(key) == 16 else key
    ctx = Cipher(TripleDES(key24), modes.ECB()).decryptor()  # noqa: S305
    return ctx.update(bytes.fromhex(data_hex))


# Effective strength, weakest first (ANSI X9.24-1, ISO 11568, PCI PIN; NIST SP 800-57).
STRENGTH_ORDER = [KeyAlgorithm.TDES2, KeyAlgorithm.TDES3, KeyAlgorithm.AES128,
                  KeyAlgorithm.AES192, KeyAlgorithm.AES256]
KEK_PAIRS = [(kek, key) for kek in STRENGTH_ORDER for key in STRENGTH_ORDER]


def test_strength_order() -> None:
    bits = [algorithm.strength_bits for algorithm in STRENGTH_ORDER]
    assert bits == sorted(set(bits)) == [80, 112, 128, 192, 256]


@pytest.mark.parametrize(("kek_algorithm", "algorithm"), KEK_PAIRS)
def test_generate_refuses_a_key_stronger_than_its_kek(
    hsm: SoftHsm, kek_algorithm: KeyAlgorithm, algorithm: KeyAlgorithm
) -> None:
    kek = hsm.generate_key(KeyUsage.ZMK, kek_algorithm, None).wrapped
    weaker = STRENGTH_ORDER.index(kek_algorithm) < STRENGTH_ORDER.index(algorithm)
    fits = algorithm.key_bytes % kek_algorithm.block_bytes == 0
    if weaker:
        with pytest.raises(KeyMaterialError) as info:
            hsm.generate_key(KeyUsage.ZPK, algorithm, kek)
        assert info.value.result is HsmResult.KEY_LENGTH
    elif fits:
        generated = hsm.generate_key(KeyUsage.ZPK, algorithm, kek)
        assert generated.under_kek_hex is not None
    else:  # AES-192 under a 16-byte-block AES KEK: not whole blocks, as before
        with pytest.raises(KeyMaterialError):
            hsm.generate_key(KeyUsage.ZPK, algorithm, kek)


@pytest.mark.parametrize(("kek_algorithm", "algorithm"), KEK_PAIRS)
def test_import_refuses_a_key_stronger_than_its_kek(
    hsm: SoftHsm, kek_algorithm: KeyAlgorithm, algorithm: KeyAlgorithm
) -> None:
    kek = hsm.generate_key(KeyUsage.ZMK, kek_algorithm, None).wrapped
    if algorithm.key_bytes % kek_algorithm.block_bytes:
        return  # cannot be carried at all (length check, covered elsewhere)
    # The sender's side of the exchange, made here with the clear KEK.
    clear = hsm._random_key(algorithm)
    kek_clear = _unwrap_for_test(hsm, kek)
    encrypted = BlockKey(kek_clear, is_aes=kek_algorithm.is_aes).encrypt(clear).hex()
    kcv = compute_kcv(algorithm, clear)
    if STRENGTH_ORDER.index(kek_algorithm) < STRENGTH_ORDER.index(algorithm):
        with pytest.raises(KeyMaterialError) as info:
            hsm.import_key(KeyUsage.ZPK, encrypted, kek, kcv, algorithm=algorithm)
        assert info.value.result is HsmResult.KEY_LENGTH
        assert kcv not in str(info.value)
    else:
        imported = hsm.import_key(KeyUsage.ZPK, encrypted, kek, kcv, algorithm=algorithm)
        assert imported.kcv == kcv


def test_import_strength_uses_the_inferred_algorithm(hsm: SoftHsm) -> None:
    # Without an explicit algorithm, 24 bytes are TDES3: too strong for a TDES2 KEK.
    kek = hsm.import_clear_key(KeyUsage.ZMK, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    encrypted = BlockKey(bytes.fromhex(TDES_KEY_HEX), is_aes=False).encrypt(
        bytes.fromhex(TDES3_KEY_HEX)).hex()
    with pytest.raises(KeyMaterialError) as info:
        hsm.import_key(KeyUsage.ZPK, encrypted, kek, "000000")
    assert info.value.result is HsmResult.KEY_LENGTH


# FIPS 74: the 4 weak and 12 semi-weak DES keys.
DES_WEAK_KEYS = [
    "0101010101010101", "FEFEFEFEFEFEFEFE", "E0E0E0E0F1F1F1F1", "1F1F1F1F0E0E0E0E",
    "01FE01FE01FE01FE", "FE01FE01FE01FE01", "1FE01FE00EF10EF1", "E01FE01FF10EF10E",
    "01E001E001F101F1", "E001E001F101F101", "1FFE1FFE0EFE0EFE", "FE1FFE1FFE0EFE0E",
    "011F011F010E010E", "1F011F010E010E01", "E0FEE0FEF1FEF1FE", "FEE0FEE0FEF1FEF1",
]
K1, K2, K3 = TDES3_KEY_HEX[:16], TDES3_KEY_HEX[16:32], TDES3_KEY_HEX[32:]


def _refused_as_degenerate(hsm: SoftHsm, algorithm: KeyAlgorithm, key_hex: str) -> None:
    with pytest.raises(KeyParityError) as info:
        hsm.import_clear_key(KeyUsage.ZPK, algorithm, key_hex)
    assert info.value.result is HsmResult.DESTINATION_KEY_PARITY
    assert key_hex[:16] not in str(info.value).upper()


def test_des_weak_key_list_is_fips_74() -> None:
    # Weak keys are involutions; semi-weak keys come in pairs that undo each other.
    block = bytes.fromhex("0123456789ABCDEF")
    des = [BlockKey(bytes.fromhex(k), is_aes=False) for k in DES_WEAK_KEYS]
    for key in des[:4]:
        assert key.encrypt(key.encrypt(block)) == block
    for first, second in zip(des[4::2], des[5::2], strict=True):
        assert second.encrypt(first.encrypt(block)) == block
        assert first.encrypt(first.encrypt(block)) != block


@pytest.mark.parametrize("weak", DES_WEAK_KEYS)
def test_des_weak_and_semi_weak_components_refused(hsm: SoftHsm, weak: str) -> None:
    for position in range(2):
        parts = [K1, K2]
        parts[position] = weak
        _refused_as_degenerate(hsm, KeyAlgorithm.TDES2, "".join(parts))
    for position in range(3):
        parts = [K1, K2, K3]
        parts[position] = weak
        _refused_as_degenerate(hsm, KeyAlgorithm.TDES3, "".join(parts))


def test_generate_discards_degenerate_draws(hsm: SoftHsm,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    weak_first = iter(bytes.fromhex(k) for k in (K1 + K1, DES_WEAK_KEYS[0] + K2, K1 + K2))
    monkeypatch.setattr("hsm.soft.secrets.token_bytes", lambda n: next(weak_first))
    generated = hsm.generate_key(KeyUsage.ZPK, KeyAlgorithm.TDES2, None)
    assert generated.kcv == compute_kcv(KeyAlgorithm.TDES2, bytes.fromhex(K1 + K2))
    monkeypatch.setattr("hsm.soft.secrets.token_bytes", lambda n: bytes.fromhex(K1 + K1))
    with pytest.raises(KeyParityError):  # a broken generator is not looped on forever
        hsm.generate_key(KeyUsage.ZPK, KeyAlgorithm.TDES2, None)


def test_equal_tdes_components_refused(hsm: SoftHsm) -> None:
    _refused_as_degenerate(hsm, KeyAlgorithm.TDES2, K1 + K1)  # double length, K1 = K2
    _refused_as_degenerate(hsm, KeyAlgorithm.TDES3, K1 + K1 + K3)  # K1 = K2
    _refused_as_degenerate(hsm, KeyAlgorithm.TDES3, K1 + K2 + K2)  # K2 = K3
    _refused_as_degenerate(hsm, KeyAlgorithm.TDES3, K1 * 3)
    # K1 = K3 is the 24-byte form of a double-length key: accepted, same KCV.
    long_form = hsm.import_clear_key(KeyUsage.ZPK, KeyAlgorithm.TDES3, K1 + K2 + K1)
    assert long_form.kcv == hsm.import_clear_key(KeyUsage.ZPK, KeyAlgorithm.TDES2, K1 + K2).kcv
    assert hsm.import_clear_key(KeyUsage.ZPK, KeyAlgorithm.TDES3, TDES3_KEY_HEX).kcv
    # AES keys have no DES components: repeated halves are just a key.
    assert hsm.import_clear_key(KeyUsage.ZPK, KeyAlgorithm.AES256, AES_KEY_HEX * 2).kcv
    # The terminal helpers share the check.
    with pytest.raises(KeyParityError):
        encrypt_pin_block(K1 + K1, "1234", "4000001234562")


def test_generate_without_kek(hsm: SoftHsm) -> None:
    generated = hsm.generate_key(KeyUsage.ZPK, KeyAlgorithm.AES256, None)
    assert generated.under_kek_hex is None
    other = hsm.generate_key(KeyUsage.ZPK, KeyAlgorithm.AES256, None)
    assert other.wrapped != generated.wrapped


@pytest.mark.parametrize("kek_algorithm", [KeyAlgorithm.TDES2, KeyAlgorithm.TDES3,
                                           KeyAlgorithm.AES128, KeyAlgorithm.AES256])
def test_key_exchange_between_two_hsms(hsm: SoftHsm, kek_algorithm: KeyAlgorithm) -> None:
    # A ZMK shared by two networks, each HSM with its own master key: a ZPK generated
    # on one side imports on the other with the same KCV.
    shared_zmk = hsm.generate_key(KeyUsage.ZMK, kek_algorithm, None)
    zmk_clear_hex = _unwrap_for_test(hsm, shared_zmk.wrapped).hex()
    other = SoftHsm(MasterKey.from_hex(GOOD_MASTER_HEX))
    other_zmk = other.import_clear_key(KeyUsage.ZMK, kek_algorithm, zmk_clear_hex)
    generated = hsm.generate_key(KeyUsage.ZPK, KeyAlgorithm.TDES2, shared_zmk.wrapped)
    assert generated.under_kek_hex is not None
    imported = other.import_key(KeyUsage.ZPK, generated.under_kek_hex, other_zmk, generated.kcv)
    assert imported.kcv == generated.kcv
    assert imported.usage is KeyUsage.ZPK
    short = other.import_key(KeyUsage.ZPK, generated.under_kek_hex, other_zmk,
                             generated.kcv[:4].lower())
    assert short == imported
    wrong = "000000" if generated.kcv != "000000" else "111111"
    with pytest.raises(KcvMismatch) as info:
        other.import_key(KeyUsage.ZPK, generated.under_kek_hex, other_zmk, wrong)
    assert info.value.result is HsmResult.KCV_MISMATCH
    for malformed in ("", "12345", "ZZZZZZ", "１２３４"):
        with pytest.raises(KeyMaterialError) as info2:
            other.import_key(KeyUsage.ZPK, generated.under_kek_hex, other_zmk, malformed)
        assert info2.value.result is HsmResult.INVALID_INPUT


def _unwrap_for_test(hsm: SoftHsm, wrapped: WrappedKey) -> bytes:
    return hsm._master.unwrap(wrapped)


@pytest.mark.parametrize("usage", sorted(set(KeyUsage) - {KeyUsage.TMK, KeyUsage.ZMK}))
def test_kek_must_be_a_key_encrypting_key(hsm: SoftHsm, usage: KeyUsage) -> None:
    not_a_kek = hsm.import_clear_key(usage, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    with pytest.raises(KeyUsageError) as info:
        hsm.generate_key(KeyUsage.TPK, KeyAlgorithm.TDES2, not_a_kek)
    assert info.value.result is HsmResult.KEY_USAGE
    with pytest.raises(KeyUsageError):
        hsm.import_key(KeyUsage.TPK, "00" * 16, not_a_kek, "000000")


def test_import_key_malformed(hsm: SoftHsm) -> None:
    zmk = hsm.import_clear_key(KeyUsage.ZMK, KeyAlgorithm.TDES2, TDES_KEY_HEX)
    for bad in ("", "zz", "00" * 7, "00" * 17):
        with pytest.raises(HsmError):
            hsm.import_key(KeyUsage.TPK, bad, zmk, "000000")
