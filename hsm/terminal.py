"""The ATM side: what a terminal, a simulator or a test does with its clear keys.

A real ATM holds its keys in a tamper-resistant module; our clients and load
generator hold them in clear, so these helpers take clear hex keys. They reuse the
HSM's PIN block and MAC code so both sides of the wire agree by construction (the
tests check that code against published vectors and an independent library).
"""

from __future__ import annotations

from hsm import dukpt, pinblock
from hsm import mac as _mac
from hsm._crypto import BlockKey
from hsm.errors import KeyMaterialError
from hsm.keys import KeyAlgorithm, algorithm_for_length, check_clear_key, parse_hex

_AES_BY_LENGTH = {16: KeyAlgorithm.AES128, 24: KeyAlgorithm.AES192, 32: KeyAlgorithm.AES256}


def _clear_key(clear_hex: str, *, aes: bool) -> bytes:
    key = parse_hex(clear_hex, "clear key")
    if aes and len(key) not in _AES_BY_LENGTH:
        raise KeyMaterialError("AES key must be 16, 24 or 32 bytes")
    check_clear_key(_AES_BY_LENGTH[len(key)] if aes else algorithm_for_length(len(key)), key)
    return key


def encrypt_pin_block(clear_tpk_hex: str, pin: str, pan: str, fmt: int = 0) -> str:
    """The encrypted ISO 9564-1 PIN block, upper-case hex (16 digits, 32 for format 4).

    Formats 0, 1 and 3 need a TDES key; format 4 an AES key.
    Raises PinBlockError, KeyMaterialError, KeyParityError.
    """
    pinblock.check_format(fmt)
    key = _clear_key(clear_tpk_hex, aes=fmt == 4)
    block = pinblock.encrypt(BlockKey(key, is_aes=fmt == 4), fmt, pin, pan)
    return block.hex().upper()


def retail_mac(clear_key_hex: str, data: bytes) -> str:
    """ANSI X9.19 retail MAC (ISO 9797-1 algorithm 3, padding 1) of ``data``, 16 hex digits.

    ``clear_key_hex`` is a double-length TDES key. Raises MacError, KeyMaterialError,
    KeyParityError.
    """
    key = _clear_key(clear_key_hex, aes=False)
    return _mac.compute(_mac.RETAIL_MAC, key, False, data).hex().upper()


def dukpt_encrypt_pin_block(clear_bdk_hex: str, ksn_hex: str, pin: str, pan: str,
                            fmt: int = 0) -> str:
    """A PIN block as a DUKPT terminal would send it, for simulators and tests.

    A real terminal holds only its initial key; a simulator may derive from the BDK.
    A 20-hex-digit KSN selects TDES DUKPT (double-length BDK, formats 0/1/3); a
    24-digit KSN selects AES DUKPT (AES BDK; AES working key of the BDK's size for
    format 4, double-length TDES for formats 0/1/3, as the host assumes by default).
    Raises PinBlockError, KeyMaterialError, KeyParityError, HsmError (15, bad KSN).
    """
    pinblock.check_format(fmt)
    bdk = parse_hex(clear_bdk_hex, "clear BDK")
    if len(ksn_hex) == 2 * dukpt.TDES_KSN_BYTES:
        check_clear_key(KeyAlgorithm.TDES2, bdk)
        key = BlockKey(dukpt.tdes_pin_key(bdk, ksn_hex), is_aes=False)
    else:
        if len(bdk) not in _AES_BY_LENGTH:
            raise KeyMaterialError("AES BDK must be 16, 24 or 32 bytes")
        bdk_algorithm = _AES_BY_LENGTH[len(bdk)]
        check_clear_key(bdk_algorithm, bdk)
        working = bdk_algorithm if fmt == 4 else KeyAlgorithm.TDES2
        clear = dukpt.aes_pin_key(bdk, bdk_algorithm, ksn_hex, working)
        key = BlockKey(clear, is_aes=working.is_aes)
    return pinblock.encrypt(key, fmt, pin, pan).hex().upper()
