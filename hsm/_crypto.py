"""Block-cipher primitives over the `cryptography` package. Internal to hsm.

Nothing here hand-writes a cipher: TDES and AES come from `cryptography`. TripleDES
lives in ``cryptography.hazmat.decrepit`` since cryptography 43, and 8- and 16-byte
TDES keys are deprecated there, so every DES key is expanded to its 24-byte form
(K1 K2 K1 for double length, K K K for single DES) before it reaches the library:
the result is the same cipher and no deprecation warning is raised.
"""

from __future__ import annotations

import threading

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

TDES_BLOCK_BYTES = 8
AES_BLOCK_BYTES = 16


def des_24(key: bytes) -> bytes:
    """The 24-byte TripleDES key equivalent to a 8-, 16- or 24-byte DES key."""
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    assert len(key) == 24, "DES key of unexpected length"
    return key


def _odd(byte: int) -> bool:
    return bin(byte).count("1") % 2 == 1


def has_odd_parity(key: bytes) -> bool:
    return all(_odd(b) for b in key)


def with_odd_parity(key: bytes) -> bytes:
    """The key with each byte's low bit set so the byte has odd parity."""
    return bytes(b if _odd(b) else b ^ 0x01 for b in key)


class BlockKey:
    """A clear key with ECB contexts made once and reused.

    ECB contexts keep no chaining state between whole-block ``update`` calls, so one
    encryptor and one decryptor serve every call; a lock keeps two threads from
    using the same context at once. The repr never shows the key.
    """

    __slots__ = ("_dec", "_enc", "_lock", "block_bytes", "is_aes", "key")

    def __init__(self, key: bytes, *, is_aes: bool) -> None:
        self.key = key
        self.is_aes = is_aes
        self.block_bytes = AES_BLOCK_BYTES if is_aes else TDES_BLOCK_BYTES
        cipher = Cipher(self._algorithm(), modes.ECB())  # noqa: S305 - ECB on single blocks is what PIN blocks and KCVs specify
        self._enc: CipherContext = cipher.encryptor()
        self._dec: CipherContext = cipher.decryptor()
        self._lock = threading.Lock()

    def _algorithm(self) -> algorithms.AES | TripleDES:
        return algorithms.AES(self.key) if self.is_aes else TripleDES(des_24(self.key))

    def __repr__(self) -> str:
        return f"BlockKey(<{len(self.key)} bytes hidden>)"

    def encrypt(self, data: bytes) -> bytes:
        assert len(data) % self.block_bytes == 0, "ECB input must be whole blocks"
        with self._lock:
            return self._enc.update(data)

    def decrypt(self, data: bytes) -> bytes:
        assert len(data) % self.block_bytes == 0, "ECB input must be whole blocks"
        with self._lock:
            return self._dec.update(data)

    def cbc_mac(self, data: bytes) -> bytes:
        """Last block of CBC encryption with a zero IV (ISO 9797-1 algorithm 1 core)."""
        assert data and len(data) % self.block_bytes == 0, "CBC-MAC input must be whole blocks"
        ctx = Cipher(self._algorithm(), modes.CBC(bytes(self.block_bytes))).encryptor()
        return ctx.update(data)[-self.block_bytes :]

    def cmac(self, data: bytes) -> bytes:
        mac = CMAC(self._algorithm())
        mac.update(data)
        return mac.finalize()


def xor(a: bytes, b: bytes) -> bytes:
    assert len(a) == len(b), "xor of unequal lengths"
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")
