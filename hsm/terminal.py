"""The ATM side: what a terminal, a simulator or a test does with its clear keys.

A real ATM holds its keys in a tamper-resistant module; our clients and load
generator hold them in clear, so these helpers take clear hex keys. They reuse the
HSM's PIN block and MAC code so both sides of the wire agree by construction (the
tests check that code against published vectors and an independent library).
"""

from __future__ import annotations

from hsm import mac as _mac
from hsm import pinblock
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
