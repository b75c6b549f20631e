"""DUKPT key derivation: TDES (ANSI X9.24-1-2009) and AES (ANSI X9.24-3-2017). Internal.

The host side only: from the base derivation key (BDK) and the key serial number
(KSN) sent with the transaction, derive the key the terminal used. No state is kept.

TDES KSN: 10 bytes, the rightmost 21 bits are the transaction counter (at most 10
one-bits in a counter the terminal may use). AES KSN: 12 bytes, an 8-byte initial key
ID then a 32-bit counter (at most 16 one-bits).
"""

from __future__ import annotations

from enum import IntEnum

from hsm._crypto import BlockKey, xor
from hsm.errors import HsmError
from hsm.keys import KeyAlgorithm
from hsm.results import HsmResult

TDES_KSN_BYTES = 10
AES_KSN_BYTES = 12
TDES_COUNTER_BITS = 21
TDES_COUNTER_ONES_MAX = 10
AES_COUNTER_ONES_MAX = 16

_TDES_BDK_VARIANT = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
_TDES_PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")


def _ksn_error(reason: str) -> HsmError:
    return HsmError(reason, HsmResult.INVALID_INPUT)


def parse_ksn(text: str, size: int) -> bytes:
    """KSN bytes from hex of exactly ``size`` bytes. Raises HsmError (result 15)."""
    if not isinstance(text, str) or len(text) != 2 * size:
        raise _ksn_error("KSN length does not fit the DUKPT variant")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _ksn_error("KSN is not hex") from None


# ------------------------------------------------------------------- TDES


def tdes_counter(ksn: bytes) -> int:
    return int.from_bytes(ksn[-3:], "big") & ((1 << TDES_COUNTER_BITS) - 1)


def tdes_ipek(bdk: bytes, ksn: bytes) -> bytes:
    """Initial PIN encryption key: the 8 leftmost KSN bytes, counter cleared, encrypted
    under the BDK (left half) and under the BDK xor C0C0C0C000000000 (right half)."""
    assert len(bdk) == 16 and len(ksn) == TDES_KSN_BYTES
    base = (int.from_bytes(ksn, "big") & ~((1 << TDES_COUNTER_BITS) - 1)).to_bytes(10, "big")
    left = BlockKey(bdk, is_aes=False).encrypt(base[:8])
    right = BlockKey(xor(bdk, _TDES_BDK_VARIANT), is_aes=False).encrypt(base[:8])
    return left + right


def _non_reversible(key: bytes, data: bytes) -> bytes:
    """The X9.24-1 non-reversible key generation process (one step of the ladder)."""

    def half(k: bytes) -> bytes:
        k_left, k_right = k[:8], k[8:]
        return xor(BlockKey(k_left, is_aes=False).encrypt(xor(data, k_right)), k_right)

    right = half(key)
    left = half(xor(key, _TDES_BDK_VARIANT))
    return left + right


def tdes_transaction_key(ipek: bytes, ksn: bytes) -> bytes:
    """The terminal's current key for this KSN: one ladder step per counter one-bit."""
    counter = tdes_counter(ksn)
    register = int.from_bytes(ksn[2:], "big") & ~((1 << TDES_COUNTER_BITS) - 1)
    key = ipek
    bit = 1 << (TDES_COUNTER_BITS - 1)
    while bit:
        if counter & bit:
            register |= bit
            key = _non_reversible(key, register.to_bytes(8, "big"))
        bit >>= 1
    return key


def tdes_pin_key(bdk: bytes, ksn_hex: str) -> bytes:
    """PIN encryption key (PIN variant of the transaction key). Raises HsmError (15)."""
    ksn = parse_ksn(ksn_hex, TDES_KSN_BYTES)
    counter = tdes_counter(ksn)
    if counter == 0 or counter.bit_count() > TDES_COUNTER_ONES_MAX:
        raise _ksn_error("KSN transaction counter is not one a terminal may use")
    return xor(tdes_transaction_key(tdes_ipek(bdk, ksn), ksn), _TDES_PIN_VARIANT)


# -------------------------------------------------------------------- AES


class AesKeyUsage(IntEnum):
    """Key usage indicators of the X9.24-3 derivation data."""

    KEY_ENCRYPTION = 0x0002
    PIN_ENCRYPTION = 0x1000
    MAC_GENERATION = 0x2000
    MAC_VERIFICATION = 0x2001
    MAC_BOTH = 0x2002
    DATA_ENCRYPT = 0x3000
    DATA_DECRYPT = 0x3001
    DATA_BOTH = 0x3002
    KEY_DERIVATION = 0x8000
    KEY_DERIVATION_INITIAL = 0x8001


_AES_ALGORITHM_CODE = {
    KeyAlgorithm.TDES2: 0x0000,
    KeyAlgorithm.TDES3: 0x0001,
    KeyAlgorithm.AES128: 0x0002,
    KeyAlgorithm.AES192: 0x0003,
    KeyAlgorithm.AES256: 0x0004,
}


def _derivation_data(
    usage: AesKeyUsage, algorithm: KeyAlgorithm, initial_key_id: bytes, counter: int
) -> bytearray:
    data = bytearray(16)
    data[0] = 0x01  # version
    data[1] = 0x01  # key block counter, set per block by _derive
    data[2:4] = int(usage).to_bytes(2, "big")
    data[4:6] = _AES_ALGORITHM_CODE[algorithm].to_bytes(2, "big")
    data[6:8] = (8 * algorithm.key_bytes).to_bytes(2, "big")
    if usage is AesKeyUsage.KEY_DERIVATION_INITIAL:
        data[8:16] = initial_key_id
    else:
        data[8:12] = initial_key_id[4:]
        data[12:16] = counter.to_bytes(4, "big")
    return data


def _derive(key: bytes, algorithm: KeyAlgorithm, data: bytearray) -> bytes:
    cipher = BlockKey(key, is_aes=True)
    blocks = -(-algorithm.key_bytes // 16)
    out = b""
    for index in range(1, blocks + 1):
        data[1] = index
        out += cipher.encrypt(bytes(data))
    return out[: algorithm.key_bytes]


def aes_initial_key(bdk: bytes, bdk_algorithm: KeyAlgorithm, initial_key_id: bytes) -> bytes:
    data = _derivation_data(
        AesKeyUsage.KEY_DERIVATION_INITIAL, bdk_algorithm, initial_key_id, 0
    )
    return _derive(bdk, bdk_algorithm, data)


def aes_derivation_key(initial_key: bytes, key_algorithm: KeyAlgorithm, ksn: bytes) -> bytes:
    """The intermediate derivation key for the KSN's counter (one step per one-bit)."""
    initial_key_id, counter = ksn[:8], int.from_bytes(ksn[8:], "big")
    key, working = initial_key, 0
    bit = 1 << 31
    while bit:
        if counter & bit:
            working |= bit
            data = _derivation_data(AesKeyUsage.KEY_DERIVATION, key_algorithm, initial_key_id,
                                    working)
            key = _derive(key, key_algorithm, data)
        bit >>= 1
    return key


def aes_working_key(
    bdk: bytes,
    bdk_algorithm: KeyAlgorithm,
    ksn: bytes,
    usage: AesKeyUsage,
    working_algorithm: KeyAlgorithm,
) -> bytes:
    """A working key of ``working_algorithm`` for ``usage`` at this KSN."""
    assert len(ksn) == AES_KSN_BYTES
    initial = aes_initial_key(bdk, bdk_algorithm, ksn[:8])
    derivation = aes_derivation_key(initial, bdk_algorithm, ksn)
    data = _derivation_data(usage, working_algorithm, ksn[:8], int.from_bytes(ksn[8:], "big"))
    return _derive(derivation, working_algorithm, data)


def aes_pin_key(
    bdk: bytes, bdk_algorithm: KeyAlgorithm, ksn_hex: str, working_algorithm: KeyAlgorithm
) -> bytes:
    """PIN encryption key for the KSN. Raises HsmError (15) for a malformed KSN or key
    size, or a counter a terminal may not use."""
    ksn = parse_ksn(ksn_hex, AES_KSN_BYTES)
    counter = int.from_bytes(ksn[8:], "big")
    if counter == 0 or counter.bit_count() > AES_COUNTER_ONES_MAX:
        raise _ksn_error("KSN transaction counter is not one a terminal may use")
    if working_algorithm.key_bytes > bdk_algorithm.key_bytes:
        raise HsmError("DUKPT working key stronger than its BDK", HsmResult.KEY_LENGTH)
    return aes_working_key(bdk, bdk_algorithm, ksn, AesKeyUsage.PIN_ENCRYPTION,
                           working_algorithm)
