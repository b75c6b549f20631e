"""PAN protection at rest: AES-256-GCM sealing plus an HMAC-SHA256 lookup index.

Both keys are derived from the switch's ``data_key`` with HKDF-SHA256 under
distinct labels, so the index key cannot decrypt and the sealing key cannot
forge index entries. The PAN is never stored in clear; the card id is bound
into the ciphertext as associated data, so a sealed PAN moved onto another
card row fails to open.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12
DATA_KEY_BYTES_MIN = 16


def _derive(data_key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"atm-switch ledger " + label).derive(data_key)


class PanVault:
    """Seals, opens and indexes PANs (digits only) under keys derived from ``data_key``."""

    __slots__ = ("_aead", "_index_key")

    def __init__(self, data_key: bytes) -> None:
        if len(data_key) < DATA_KEY_BYTES_MIN:
            raise ValueError(f"data_key must be at least {DATA_KEY_BYTES_MIN} bytes")
        self._aead = AESGCM(_derive(data_key, b"pan-seal v1"))
        self._index_key = _derive(data_key, b"pan-index v1")

    def __repr__(self) -> str:
        return "PanVault(<keys hidden>)"

    def index(self, pan: str) -> bytes:
        assert pan.isdigit(), "PAN must be digits"
        return hmac.new(self._index_key, pan.encode("ascii"), hashlib.sha256).digest()

    def seal(self, pan: str, card_id: int) -> bytes:
        assert pan.isdigit(), "PAN must be digits"
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, pan.encode("ascii"), _aad(card_id))

    def open(self, sealed: bytes, card_id: int) -> str:
        """Raises cryptography.exceptions.InvalidTag if the data or card id do not match."""
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, body, _aad(card_id)).decode("ascii")


def _aad(card_id: int) -> bytes:
    return f"card:{card_id}".encode("ascii")
