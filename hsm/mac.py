"""Message authentication codes: ISO 9797-1 algorithms 1 and 3, CMAC. Internal maths.

- Algorithm 1: CBC-MAC with the whole key (TDES or AES).
- Algorithm 3 (ANSI X9.19 "retail MAC"): CBC with single DES under K1, then the last
  block decrypted under K2 and encrypted under K1. Needs a double-length TDES key.
- CMAC (NIST SP 800-38B) with a TDES or AES key.
Padding method 1 appends zero bytes up to a whole block (at least one block);
padding method 2 appends 0x80 then zero bytes.
"""

from __future__ import annotations

from enum import StrEnum

from hsm._crypto import BlockKey
from hsm.errors import KeyMaterialError, MacError
from hsm.results import HsmResult

MAC_BYTES_MIN = 4
MAC_DATA_BYTES_MAX = 1 << 20  # one mebibyte: far above any ISO 8583 message


class MacAlgorithm(StrEnum):
    ISO9797_1_ALG1_PAD1 = "ISO9797_1_ALG1_PAD1"
    ISO9797_1_ALG1_PAD2 = "ISO9797_1_ALG1_PAD2"
    ISO9797_1_ALG3_PAD1 = "ISO9797_1_ALG3_PAD1"  # ANSI X9.19 retail MAC
    ISO9797_1_ALG3_PAD2 = "ISO9797_1_ALG3_PAD2"
    CMAC = "CMAC"  # TDES-CMAC or AES-CMAC, after the key's algorithm


RETAIL_MAC = MacAlgorithm.ISO9797_1_ALG3_PAD1


def pad(data: bytes, method: int, block: int) -> bytes:
    """ISO 9797-1 padding method 1 or 2."""
    if method == 2:
        data += b"\x80"
    elif not data:
        return bytes(block)  # method 1 on empty data: one block of zeros
    return data + bytes(-len(data) % block)


def _check_data(data: bytes) -> None:
    if not isinstance(data, bytes | bytearray) or len(data) > MAC_DATA_BYTES_MAX:
        raise MacError("MAC data is not bytes or is too long")


def compute(algorithm: MacAlgorithm, key: bytes, is_aes: bool, data: bytes) -> bytes:
    """The full-block MAC (8 bytes TDES, 16 bytes AES). Raises MacError, KeyMaterialError."""
    _check_data(data)
    try:
        algorithm = MacAlgorithm(algorithm)
    except ValueError:
        raise MacError("unknown MAC algorithm") from None
    block = 16 if is_aes else 8
    if algorithm is MacAlgorithm.CMAC:
        return BlockKey(key, is_aes=is_aes).cmac(bytes(data))
    method = 1 if algorithm.value.endswith("PAD1") else 2
    padded = pad(bytes(data), method, block)
    if algorithm in (MacAlgorithm.ISO9797_1_ALG1_PAD1, MacAlgorithm.ISO9797_1_ALG1_PAD2):
        return BlockKey(key, is_aes=is_aes).cbc_mac(padded)
    if is_aes or len(key) != 16:
        raise KeyMaterialError(
            "ISO 9797-1 algorithm 3 needs a double-length TDES key", HsmResult.KEY_LENGTH
        )
    k1, k2 = BlockKey(key[:8], is_aes=False), BlockKey(key[8:], is_aes=False)
    chained = k1.cbc_mac(padded)
    return k1.encrypt(k2.decrypt(chained))


def check_mac_length(mac: bytes, full: int) -> None:
    if not isinstance(mac, bytes | bytearray) or not (MAC_BYTES_MIN <= len(mac) <= full):
        raise MacError("MAC length outside 4 bytes to one block")
