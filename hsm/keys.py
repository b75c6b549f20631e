"""The key model: a master key, and working keys that exist outside the HSM only wrapped.

Every working key is stored and passed around as a :class:`WrappedKey`: ciphertext
under the master key plus its usage, algorithm and check value. Only
:class:`~hsm.soft.SoftHsm` unwraps keys, and only in memory.

Wrapping choice: AES-SIV (RFC 5297) with a 512-bit key derived from the master key.
SIV is deterministic authenticated encryption designed for key wrapping: there is no
nonce to manage or repeat, and it authenticates associated data. The associated data
is the format version, the usage, the algorithm and the check value, so a wrapped
key relabelled from PVK to TPK (or with its KCV edited in the database) no longer
unwraps: usage is enforced by the cryptography, not only by a label check. Being
deterministic, wrapping the same key twice gives the same text, which only reveals
that two stored keys are equal (their KCVs already say so).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hsm._crypto import BlockKey, has_odd_parity
from hsm.errors import KeyMaterialError, KeyParityError, KeyUsageError, MasterKeyUnavailable
from hsm.results import HsmResult

MASTER_KEY_ENV = "ATM_SWITCH_MASTER_KEY"
MASTER_KEY_BYTES = 32
KCV_BYTES = 3
_WRAP_INFO = b"atm-switch hsm master key wrap v1"
_TEXT_VERSION = "K1"


class KeyUsage(StrEnum):
    """What a working key may be used for; an operation refuses any other usage."""

    TMK = "TMK"  # terminal master key: encrypts keys sent to an ATM
    ZMK = "ZMK"  # zone master key: encrypts keys exchanged with another network
    TPK = "TPK"  # terminal PIN key: PIN blocks from an ATM
    ZPK = "ZPK"  # zone PIN key: PIN blocks between networks
    PVK = "PVK"  # PIN verification key (Visa PVV, IBM 3624)
    TAK = "TAK"  # terminal MAC key
    ZAK = "ZAK"  # zone MAC key
    CVK = "CVK"  # card verification key (CVV, iCVV)
    BDK = "BDK"  # DUKPT base derivation key


KEY_ENCRYPTING_USAGES = frozenset({KeyUsage.TMK, KeyUsage.ZMK})
PIN_ENCRYPTING_USAGES = frozenset({KeyUsage.TPK, KeyUsage.ZPK})
MAC_USAGES = frozenset({KeyUsage.TAK, KeyUsage.ZAK})


class KeyAlgorithm(StrEnum):
    TDES2 = "TDES2"  # double-length TDES (16 bytes, K1 K2 K1)
    TDES3 = "TDES3"  # triple-length TDES (24 bytes)
    AES128 = "AES128"
    AES192 = "AES192"
    AES256 = "AES256"

    @property
    def key_bytes(self) -> int:
        return _KEY_BYTES[self]

    @property
    def is_aes(self) -> bool:
        return self in (KeyAlgorithm.AES128, KeyAlgorithm.AES192, KeyAlgorithm.AES256)

    @property
    def block_bytes(self) -> int:
        return 16 if self.is_aes else 8

    @property
    def strength_bits(self) -> int:
        """Effective strength, the order in which a KEK may protect a key: TDES2 80,
        TDES3 112, then the AES key size (NIST SP 800-57 part 1)."""
        return _STRENGTH_BITS[self]


_KEY_BYTES = {
    KeyAlgorithm.TDES2: 16,
    KeyAlgorithm.TDES3: 24,
    KeyAlgorithm.AES128: 16,
    KeyAlgorithm.AES192: 24,
    KeyAlgorithm.AES256: 32,
}

_STRENGTH_BITS = {
    KeyAlgorithm.TDES2: 80,
    KeyAlgorithm.TDES3: 112,
    KeyAlgorithm.AES128: 128,
    KeyAlgorithm.AES192: 192,
    KeyAlgorithm.AES256: 256,
}

# FIPS 74 section 3.6: the 4 weak and 12 semi-weak DES keys, with odd parity. They are
# compared with the parity bit (the low bit of each byte) masked off.
_DES_WEAK_KEYS_HEX = (
    "0101010101010101", "FEFEFEFEFEFEFEFE", "E0E0E0E0F1F1F1F1", "1F1F1F1F0E0E0E0E",
    "01FE01FE01FE01FE", "FE01FE01FE01FE01", "1FE01FE00EF10EF1", "E01FE01FF10EF10E",
    "01E001E001F101F1", "E001E001F101F101", "1FFE1FFE0EFE0EFE", "FE1FFE1FFE0EFE0E",
    "011F011F010E010E", "1F011F010E010E01", "E0FEE0FEF1FEF1FE", "FEE0FEE0FEF1FEF1",
)


def _without_parity(block: bytes) -> bytes:
    return bytes(b & 0xFE for b in block)


_DES_WEAK_KEYS = frozenset(_without_parity(bytes.fromhex(k)) for k in _DES_WEAK_KEYS_HEX)


def as_usage(value: str) -> KeyUsage:
    """A KeyUsage from itself or its name. Raises KeyUsageError for anything else."""
    try:
        return KeyUsage(value)
    except ValueError:
        raise KeyUsageError("unknown key usage") from None


def algorithm_for_length(key_bytes: int) -> KeyAlgorithm:
    """Default algorithm of a clear key given only its length.

    16 and 24 bytes are taken as TDES (the common case on ATM networks); 32 bytes
    can only be AES-256. Pass the algorithm explicitly for AES-128/192 keys.
    Raises KeyMaterialError for any other length.
    """
    table = {16: KeyAlgorithm.TDES2, 24: KeyAlgorithm.TDES3, 32: KeyAlgorithm.AES256}
    if key_bytes not in table:
        raise KeyMaterialError("key length fits no supported algorithm")
    return table[key_bytes]


def check_clear_key(algorithm: KeyAlgorithm, key: bytes) -> None:
    """Refuse a clear key of the wrong length, without odd parity (TDES), all zero, or
    a degenerate TDES key.

    Degenerate (result 11, like the all-zero key): a component that is a DES weak or
    semi-weak key, K1 = K2 (double or triple length) or K2 = K3 (triple length); each
    makes the key, or part of it, single DES. K1 = K3 in a triple-length key is the
    24-byte form of a double-length key and is accepted.
    Raises KeyMaterialError, KeyParityError.
    """
    if len(key) != algorithm.key_bytes:
        raise KeyMaterialError(f"key length does not match {algorithm.value}")
    if not any(key):
        raise KeyParityError("all-zero key", HsmResult.DESTINATION_KEY_PARITY)
    if algorithm.is_aes:
        return
    if not has_odd_parity(key):
        raise KeyParityError("TDES key without odd parity")
    parts = [_without_parity(key[i : i + 8]) for i in range(0, len(key), 8)]
    if any(part in _DES_WEAK_KEYS for part in parts):
        raise KeyParityError("TDES key has a DES weak or semi-weak component",
                             HsmResult.DESTINATION_KEY_PARITY)
    if parts[0] == parts[1] or (len(parts) == 3 and parts[1] == parts[2]):
        raise KeyParityError("TDES key has equal adjacent components (single DES)",
                             HsmResult.DESTINATION_KEY_PARITY)


def check_kek_strength(kek: KeyAlgorithm, key: KeyAlgorithm) -> None:
    """Refuse to carry a key under a weaker key-encrypting key (ANSI X9.24-1, ISO 11568,
    PCI PIN): the KEK's :attr:`~KeyAlgorithm.strength_bits` must be at least the key's.

    Raises KeyMaterialError (result 02).
    """
    if kek.strength_bits < key.strength_bits:
        raise KeyMaterialError(
            f"{kek.value} key-encrypting key is weaker than a {key.value} key",
            HsmResult.KEY_LENGTH,
        )


def compute_kcv(algorithm: KeyAlgorithm, key: bytes) -> str:
    """Key check value, 6 hex digits: TDES encrypts 8 zero bytes, AES takes a CMAC of 16."""
    block = BlockKey(key, is_aes=algorithm.is_aes)
    if algorithm.is_aes:
        value = block.cmac(bytes(16))
    else:
        value = block.encrypt(bytes(8))
    return value[:KCV_BYTES].hex().upper()


def parse_hex(text: str, what: str) -> bytes:
    """Bytes from hex text; raises KeyMaterialError (naming ``what``, never the value)."""
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise KeyMaterialError(f"{what} is not hex") from None


class MasterKey:
    """The local master key (the LMK of a network HSM): 32 random bytes.

    Load it with :meth:`from_env` or :meth:`from_file` in production; :meth:`demo`
    returns a fixed, public key for demos and tests only (``is_demo`` is True).
    The repr shows only its check value.
    """

    __slots__ = ("_siv", "is_demo", "kcv")

    def __init__(self, key: bytes, *, is_demo: bool = False) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise MasterKeyUnavailable(f"master key must be {MASTER_KEY_BYTES} bytes")
        if not any(key):
            raise MasterKeyUnavailable("master key is all zero")
        # Derive the SIV key rather than use the master key directly, so the same
        # configured secret can later feed other purposes under other labels.
        wrap_key = HKDF(
            algorithm=hashes.SHA256(), length=64, salt=None, info=_WRAP_INFO
        ).derive(key)
        self._siv = AESSIV(wrap_key)
        self.kcv = compute_kcv(KeyAlgorithm.AES256, key)
        self.is_demo = is_demo

    def __repr__(self) -> str:
        kind = "demo " if self.is_demo else ""
        return f"MasterKey({kind}kcv={self.kcv})"

    @classmethod
    def from_hex(cls, text: str) -> MasterKey:
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            raise MasterKeyUnavailable("master key is not hex") from None
        return cls(key)

    @classmethod
    def from_env(cls, name: str = MASTER_KEY_ENV) -> MasterKey:
        """Master key from an environment variable holding 64 hex digits.

        Raises MasterKeyUnavailable when the variable is unset or malformed.
        """
        value = os.environ.get(name)
        if not value:
            raise MasterKeyUnavailable(f"environment variable {name} is not set")
        return cls.from_hex(value)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MasterKey:
        """Master key from a file holding 64 hex digits.

        The file must not be readable or writable by group or others (like an SSH
        private key). Raises MasterKeyUnavailable otherwise or when unreadable.
        """
        file = Path(path)
        try:
            mode = file.stat().st_mode
        except OSError:
            raise MasterKeyUnavailable("master key file cannot be read") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MasterKeyUnavailable("master key file is accessible by group or others")
        try:
            text = file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            raise MasterKeyUnavailable("master key file cannot be read") from None
        return cls.from_hex(text)

    @classmethod
    def demo(cls) -> MasterKey:
        """A fixed, publicly known master key. For demos and tests only."""
        return cls(bytes(range(1, MASTER_KEY_BYTES + 1)), is_demo=True)

    def wrap(self, usage: KeyUsage, algorithm: KeyAlgorithm, clear: bytes) -> WrappedKey:
        """Wrap a clear key that has already passed :func:`check_clear_key`."""
        kcv = compute_kcv(algorithm, clear)
        ciphertext = self._siv.encrypt(clear, [_associated_data(usage, algorithm, kcv)])
        return WrappedKey(usage, algorithm, ciphertext, kcv)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        """The clear key. Raises KeyMaterialError (result 13) if it does not authenticate."""
        ad = _associated_data(wrapped.usage, wrapped.algorithm, wrapped.kcv)
        try:
            clear = self._siv.decrypt(wrapped.ciphertext, [ad])
        except InvalidTag:
            raise KeyMaterialError(
                "wrapped key does not authenticate under the master key",
                HsmResult.MASTER_KEY_ERROR,
            ) from None
        assert len(clear) == wrapped.algorithm.key_bytes, "authenticated key of wrong length"
        return clear


def _associated_data(usage: KeyUsage, algorithm: KeyAlgorithm, kcv: str) -> bytes:
    return "|".join((_TEXT_VERSION, usage.value, algorithm.value, kcv)).encode("ascii")


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A working key encrypted under the master key, with its usage and check value.

    Safe to store and log: the repr shows usage, algorithm and KCV only.
    Text form (for the database): ``K1:<usage>:<algorithm>:<kcv>:<ciphertext hex>``.
    """

    usage: KeyUsage
    algorithm: KeyAlgorithm
    ciphertext: bytes
    kcv: str

    def __post_init__(self) -> None:
        # Usage must be an enum member, not a look-alike string: the usage checks and
        # the associated data depend on it. Strings naming a member are accepted.
        try:
            object.__setattr__(self, "usage", KeyUsage(self.usage))
            object.__setattr__(self, "algorithm", KeyAlgorithm(self.algorithm))
        except ValueError:
            raise KeyMaterialError(
                "wrapped key has an unknown usage or algorithm", HsmResult.INVALID_INPUT
            ) from None
        if (
            not isinstance(self.ciphertext, bytes)
            or not isinstance(self.kcv, str)
            or len(self.kcv) != 2 * KCV_BYTES
            or not _is_upper_hex(self.kcv)
        ):
            raise KeyMaterialError("wrapped key is malformed", HsmResult.INVALID_INPUT)

    def __repr__(self) -> str:
        return (
            f"WrappedKey(usage={self.usage.value}, algorithm={self.algorithm.value}, "
            f"kcv={self.kcv})"
        )

    def to_text(self) -> str:
        return ":".join(
            (_TEXT_VERSION, self.usage.value, self.algorithm.value, self.kcv,
             self.ciphertext.hex().upper())
        )

    @classmethod
    def from_text(cls, text: str) -> WrappedKey:
        """Parse :meth:`to_text` output. Raises KeyMaterialError (result 15) if malformed."""
        parts = text.strip().split(":")
        if len(parts) != 5 or parts[0] != _TEXT_VERSION:
            raise KeyMaterialError("wrapped key text is malformed", HsmResult.INVALID_INPUT)
        _, usage, algorithm, kcv, ciphertext_hex = parts
        try:
            key_usage = KeyUsage(usage)
            key_algorithm = KeyAlgorithm(algorithm)
            ciphertext = bytes.fromhex(ciphertext_hex)
        except ValueError:
            raise KeyMaterialError(
                "wrapped key text is malformed", HsmResult.INVALID_INPUT
            ) from None
        if len(kcv) != 2 * KCV_BYTES or not _is_upper_hex(kcv):
            raise KeyMaterialError("wrapped key check value is malformed", HsmResult.INVALID_INPUT)
        # AES-SIV adds a 16-byte synthetic IV to the key bytes.
        if len(ciphertext) != key_algorithm.key_bytes + 16:
            raise KeyMaterialError("wrapped key length is wrong", HsmResult.INVALID_INPUT)
        return cls(key_usage, key_algorithm, ciphertext, kcv)


def _is_upper_hex(text: str) -> bool:
    return all(c in "0123456789ABCDEF" for c in text)
