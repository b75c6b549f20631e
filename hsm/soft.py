"""SoftHsm: the synchronous software HSM. The only place keys and PINs are in clear.

Keys come in and go out wrapped (:class:`~hsm.keys.WrappedKey`) or encrypted under a
key-encrypting key; PINs come in and go out as encrypted PIN blocks. Verification
methods return an :class:`~hsm.results.HsmResult` and never raise for bad input;
key-management and generation methods raise :class:`~hsm.errors.HsmError` subclasses.

Unwrapped keys are cached in memory (bounded, ``key_cache_max`` entries) as cipher
objects so a PIN verification does not pay for an AES-SIV unwrap and two cipher
setups each time; the cache is never logged or exposed.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hsm import cvv, dukpt, mac, pinblock, pinverify
from hsm._crypto import BlockKey, with_odd_parity
from hsm.errors import (
    HsmError,
    KcvMismatch,
    KeyMaterialError,
    KeyParityError,
    KeyUsageError,
    PinBlockError,
    PinVerificationDataError,
)
from hsm.keys import (
    KEY_ENCRYPTING_USAGES,
    MAC_USAGES,
    PIN_ENCRYPTING_USAGES,
    KeyAlgorithm,
    KeyUsage,
    MasterKey,
    WrappedKey,
    algorithm_for_length,
    as_usage,
    check_clear_key,
    check_kek_strength,
    compute_kcv,
    parse_hex,
)
from hsm.mac import MacAlgorithm
from hsm.results import HsmResult

KEY_CACHE_MAX_DEFAULT = 4096
PinMethod = Literal["pvv", "ibm3624"]
# ISO 9564 formats whose PIN field is bound to the PAN; a PIN in one of them is never
# translated to format 1, which is not (PCI PIN Security requirement 3-3).
PAN_BOUND_FORMATS = (0, 3, 4)
# Attempts at a random key before giving up: one degenerate draw is already ~2^-56.
_GENERATE_ATTEMPTS = 4


def _mask_pan(pan: str) -> str:
    if len(pan) < 12:
        return "<hidden>"
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


@dataclass(frozen=True, slots=True)
class PinVerification:
    """One PIN check. The repr hides the PIN block and masks the PAN.

    ``method`` "pvv" needs ``pvki`` and ``pvv``; "ibm3624" needs ``offset`` and takes
    ``decimalisation_table`` (default: the HSM's own, the first it was configured
    with; another must be one of its configured tables), ``pin_check_length``
    (default: the offset length) and ``validation_data`` (hex, default: the PAN's
    leftmost 16 digits) padded with ``pad_char`` to 16 digits. ``tpk`` is the key the
    PIN block is under (TPK or ZPK); with a ``ksn`` it is instead the DUKPT BDK the
    terminal's key derives from (``dukpt_key_algorithm``: see
    :meth:`SoftHsm.translate_pin`).
    """

    pin_block_hex: str = field(repr=False)
    pan: str = field(repr=False)
    pin_block_format: int
    tpk: WrappedKey
    method: PinMethod
    pvk: WrappedKey
    pvki: str | None = None
    pvv: str | None = field(default=None, repr=False)
    offset: str | None = field(default=None, repr=False)
    decimalisation_table: str | None = field(default=None, repr=False)  # None: the HSM's
    pin_check_length: int | None = None
    validation_data: str | None = field(default=None, repr=False)
    pad_char: str = "F"
    ksn: str | None = None
    dukpt_key_algorithm: KeyAlgorithm | None = None

    def __repr__(self) -> str:
        return (
            f"PinVerification(pan={_mask_pan(self.pan)}, pin_block=<hidden>, "
            f"format={self.pin_block_format}, method={self.method}, tpk={self.tpk!r}, "
            f"pvk={self.pvk!r})"
        )


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A new key under the master key, and (if a KEK was given) under that KEK."""

    wrapped: WrappedKey
    under_kek_hex: str | None = field(repr=False)
    kcv: str


class SoftHsm:
    """The software HSM over one master key. Synchronous and pure (no I/O)."""

    def __init__(
        self,
        master_key: MasterKey,
        *,
        key_cache_max: int = KEY_CACHE_MAX_DEFAULT,
        decimalisation_tables: Sequence[str] = (pinverify.DEFAULT_DECIMALISATION_TABLE,),
    ) -> None:
        """``decimalisation_tables``: the IBM 3624 tables this HSM accepts (a production
        HSM keeps them as protected configuration); the first is used when a caller
        names none. A caller choosing its own table could learn PIN digits by varying
        it (the decimalisation-table attack), so a table outside the set is refused
        (25) whatever it contains.

        Raises PinVerificationDataError for a configured table that is not 16 digits.
        """
        if not decimalisation_tables:
            raise PinVerificationDataError(
                "at least one decimalisation table is needed", HsmResult.DECIMALISATION_TABLE
            )
        assert key_cache_max > 0, "key cache needs room for at least one key"
        self._master = master_key
        self._cache: dict[WrappedKey, BlockKey] = {}
        self._key_cache_max = key_cache_max
        self._decimalisation_tables = frozenset(
            pinverify.check_decimalisation_table(table) for table in decimalisation_tables
        )
        self._decimalisation_table_default = decimalisation_tables[0]

    def __repr__(self) -> str:
        return f"SoftHsm(master={self._master!r})"

    @property
    def master_key_kcv(self) -> str:
        return self._master.kcv

    # ----------------------------------------------------------------- keys

    def _block_key(self, wrapped: WrappedKey, allowed: Collection[KeyUsage]) -> BlockKey:
        """Cipher object of a wrapped key after checking its usage.

        Raises KeyUsageError (29) for another usage or a non-key, KeyMaterialError (13)
        if it does not unwrap under this master key.
        """
        if not isinstance(wrapped, WrappedKey):
            raise KeyUsageError("not a wrapped key")
        if wrapped.usage not in allowed:
            raise KeyUsageError(f"key usage {wrapped.usage.value} not permitted here")
        cached = self._cache.get(wrapped)
        if cached is not None:
            return cached
        block = BlockKey(self._master.unwrap(wrapped), is_aes=wrapped.algorithm.is_aes)
        if len(self._cache) >= self._key_cache_max:
            del self._cache[next(iter(self._cache))]  # oldest first: bounded, simple
        self._cache[wrapped] = block
        return block

    def import_clear_key(
        self, usage: KeyUsage, algorithm: KeyAlgorithm | None, clear_hex: str
    ) -> WrappedKey:
        """Wrap a clear key under the master key. Provisioning of test and demo keys only.

        ``algorithm`` None infers it from the length (16/24 bytes TDES, 32 AES-256).
        Raises KeyMaterialError, KeyParityError.
        """
        clear = parse_hex(clear_hex, "clear key")
        algo = algorithm if algorithm is not None else algorithm_for_length(len(clear))
        check_clear_key(algo, clear)
        return self._master.wrap(as_usage(usage), algo, clear)

    def import_key(
        self,
        usage: KeyUsage,
        encrypted_hex: str,
        kek: WrappedKey,
        kcv: str,
        *,
        algorithm: KeyAlgorithm | None = None,
    ) -> WrappedKey:
        """Import a key sent encrypted (ECB) under a ZMK or TMK and check its KCV.

        The KEK must be at least as strong as the key (:func:`~hsm.keys.check_kek_strength`,
        result 02); this is checked before anything is decrypted.
        Raises KeyUsageError, KeyMaterialError, KeyParityError, KcvMismatch.
        """
        kek_key = self._block_key(kek, KEY_ENCRYPTING_USAGES)
        encrypted = parse_hex(encrypted_hex, "encrypted key")
        if not encrypted or len(encrypted) % kek_key.block_bytes:
            raise KeyMaterialError("encrypted key length does not fit the KEK")
        # ECB keeps the length: the ciphertext length is the clear key's.
        algo = algorithm if algorithm is not None else algorithm_for_length(len(encrypted))
        check_kek_strength(kek.algorithm, algo)
        clear = kek_key.decrypt(encrypted)
        check_clear_key(algo, clear)
        given = kcv.strip().upper() if isinstance(kcv, str) else ""
        # Networks send 4 or 6 hex digits of check value; compare what was sent.
        if len(given) not in (4, 6) or not set(given) <= set("0123456789ABCDEF"):
            raise KeyMaterialError("check value must be 4 or 6 hex digits",
                                   HsmResult.INVALID_INPUT)
        expected = compute_kcv(algo, clear)[: len(given)]
        if not hmac.compare_digest(expected.encode("ascii"), given.encode("ascii")):
            raise KcvMismatch("imported key does not match its check value")
        return self._master.wrap(as_usage(usage), algo, clear)

    def generate_key(
        self, usage: KeyUsage, algorithm: KeyAlgorithm, kek: WrappedKey | None = None
    ) -> GeneratedKey:
        """A new random key under the master key and, if ``kek`` is given, under it.

        This is the 0800 key change: store ``wrapped``, send ``under_kek_hex`` and
        ``kcv``. The KEK must be at least as strong as the new key
        (:func:`~hsm.keys.check_kek_strength`, result 02). A degenerate random draw
        (all zero, weak DES component) is discarded and drawn again.
        Raises KeyUsageError, KeyMaterialError.
        """
        kek_key = None
        if kek is not None:
            kek_key = self._block_key(kek, KEY_ENCRYPTING_USAGES)
            check_kek_strength(kek.algorithm, algorithm)
        clear = self._random_key(algorithm)
        wrapped = self._master.wrap(as_usage(usage), algorithm, clear)
        under = None
        if kek_key is not None:
            if len(clear) % kek_key.block_bytes:
                raise KeyMaterialError("key length does not fit the KEK block size")
            under = kek_key.encrypt(clear).hex().upper()
        return GeneratedKey(wrapped, under, wrapped.kcv)

    @staticmethod
    def _random_key(algorithm: KeyAlgorithm) -> bytes:
        """Random key bytes that pass :func:`~hsm.keys.check_clear_key` (TDES: odd parity)."""
        attempts = _GENERATE_ATTEMPTS
        while True:
            clear = secrets.token_bytes(algorithm.key_bytes)
            if not algorithm.is_aes:
                clear = with_odd_parity(clear)
            try:
                check_clear_key(algorithm, clear)
            except KeyParityError:
                attempts -= 1
                if not attempts:
                    raise
                continue
            return clear

    # ------------------------------------------------------------------ PIN

    @staticmethod
    def _decrypt_pin(key: BlockKey, fmt: int, block_hex: str, pan: str) -> str:
        # A key that cannot carry the format (TDES key, format 4) is a configuration
        # fault (96): say so before looking at the block, whose length would
        # otherwise make it look like the cardholder's error (55).
        pinblock.check_format(fmt)
        pinblock.check_key_fits(fmt, key)
        block = pinblock.parse_block_hex(block_hex, fmt)
        return pinblock.decrypt(key, fmt, block, pan)

    def _pin_source_key(
        self,
        key: WrappedKey,
        fmt: int,
        ksn: str | None,
        dukpt_key_algorithm: KeyAlgorithm | None,
    ) -> BlockKey:
        """The key a PIN block arrived under: a TPK/ZPK, or with a KSN the DUKPT PIN key
        derived from a BDK."""
        if ksn is None:
            return self._block_key(key, PIN_ENCRYPTING_USAGES)
        bdk = self._block_key(key, (KeyUsage.BDK,)).key
        if key.algorithm is KeyAlgorithm.TDES2:
            return BlockKey(dukpt.tdes_pin_key(bdk, ksn), is_aes=False)
        if not key.algorithm.is_aes:
            raise KeyMaterialError("TDES DUKPT needs a double-length BDK")
        working = dukpt_key_algorithm
        if working is None:
            working = key.algorithm if fmt == 4 else KeyAlgorithm.TDES2
        clear = dukpt.aes_pin_key(bdk, key.algorithm, ksn, working)
        return BlockKey(clear, is_aes=working.is_aes)

    def translate_pin(
        self,
        source_key: WrappedKey,
        source_format: int,
        pin_block_hex: str,
        pan: str,
        dest_key: WrappedKey,
        dest_format: int,
        *,
        ksn: str | None = None,
        dukpt_key_algorithm: KeyAlgorithm | None = None,
    ) -> str:
        """Re-encrypt a PIN block from a TPK or ZPK (or, with ``ksn``, from the DUKPT key
        of a BDK) to a ZPK, converting its format. Returns upper-case hex; the PIN never
        leaves in clear.

        With an AES BDK the terminal's working key is ``dukpt_key_algorithm``, by default
        the BDK's own AES size for format 4 and double-length TDES for formats 0, 1, 3.
        A PAN-bound block (formats 0, 3, 4) is never translated to format 1: PinBlockError
        (23), raised before any key or the block is used.
        Raises KeyUsageError, KeyMaterialError, PinBlockError, HsmError (15 for a bad KSN).
        """
        if source_format in PAN_BOUND_FORMATS and dest_format == 1:
            raise PinBlockError(
                "PAN-bound PIN block cannot be translated to format 1",
                HsmResult.PIN_BLOCK_FORMAT,
            )
        dest = self._block_key(dest_key, (KeyUsage.ZPK,))
        source = self._pin_source_key(source_key, source_format, ksn, dukpt_key_algorithm)
        pin = self._decrypt_pin(source, source_format, pin_block_hex, pan)
        return pinblock.encrypt(dest, dest_format, pin, pan).hex().upper()

    def verify_pin(self, req: PinVerification) -> HsmResult:
        """OK (00), VERIFICATION_FAILED (01) or the error result. Never raises HsmError."""
        try:
            pvk = self._block_key(req.pvk, (KeyUsage.PVK,))
            source = self._pin_source_key(
                req.tpk, req.pin_block_format, req.ksn, req.dukpt_key_algorithm
            )
            pin = self._decrypt_pin(source, req.pin_block_format, req.pin_block_hex, req.pan)
            return self._check_pin(req, pvk, pin)
        except HsmError as exc:
            return exc.result

    def _check_pin(self, req: PinVerification, pvk: BlockKey, pin: str) -> HsmResult:
        if req.method == "pvv":
            if req.pvki is None or req.pvv is None:
                raise HsmError("PVV method needs pvki and pvv", HsmResult.INVALID_INPUT)
            expected = pinverify.check_pvv(req.pvv)
            actual = pinverify.visa_pvv(pvk, req.pan, req.pvki, pin)
        elif req.method == "ibm3624":
            if req.offset is None:
                raise HsmError("IBM 3624 method needs an offset", HsmResult.INVALID_INPUT)
            check = req.pin_check_length if req.pin_check_length is not None else len(req.offset)
            if len(pin) < check:
                return HsmResult.VERIFICATION_FAILED
            natural = pinverify.ibm3624_natural_pin(
                pvk, self._decimalisation_table(req.decimalisation_table),
                self._validation(req.pan, req), len(pin)
            )
            expected = pinverify.ibm3624_check_digits(natural, req.offset, check)
            actual = pin[-check:]
        else:
            raise HsmError("unknown PIN verification method", HsmResult.INVALID_INPUT)
        if hmac.compare_digest(expected.encode("ascii"), actual.encode("ascii")):
            return HsmResult.OK
        return HsmResult.VERIFICATION_FAILED

    def _decimalisation_table(self, table: str | None) -> str:
        """``table`` if it is one this HSM was configured with (None: its default);
        raises PinVerificationDataError (25) otherwise."""
        if table is None:
            return self._decimalisation_table_default
        pinverify.check_decimalisation_table(table)
        if table not in self._decimalisation_tables:
            raise PinVerificationDataError(
                "decimalisation table is not one this HSM is configured with",
                HsmResult.DECIMALISATION_TABLE,
            )
        return table

    @staticmethod
    def _validation(pan: str, req: PinVerification | None = None,
                    validation_data: str | None = None, pad_char: str = "F") -> bytes:
        if req is not None:
            validation_data, pad_char = req.validation_data, req.pad_char
        data = validation_data if validation_data is not None else pan[:16]
        return pinverify.validation_block(data, pad_char)

    def generate_pvv(self, pvk: WrappedKey, pan: str, pvki: str, pin: str) -> str:
        """Visa PVV of a chosen PIN (card issuance). Raises HsmError subclasses."""
        pinblock.check_pin(pin)
        pinblock.check_pan(pan)
        return pinverify.visa_pvv(self._block_key(pvk, (KeyUsage.PVK,)), pan, pvki, pin)

    def generate_ibm3624_offset(
        self,
        pvk: WrappedKey,
        pan: str,
        pin: str,
        *,
        decimalisation_table: str | None = None,
        pin_check_length: int | None = None,
        validation_data: str | None = None,
        pad_char: str = "F",
    ) -> str:
        """IBM 3624 offset of a chosen PIN (card issuance). Raises HsmError subclasses.

        ``pin_check_length`` defaults to the PIN length; the offset has that many digits.
        """
        pinblock.check_pin(pin)
        pinblock.check_pan(pan)
        key = self._block_key(pvk, (KeyUsage.PVK,))
        natural = pinverify.ibm3624_natural_pin(
            key, self._decimalisation_table(decimalisation_table),
            self._validation(pan, validation_data=validation_data, pad_char=pad_char), len(pin),
        )
        check = pin_check_length if pin_check_length is not None else len(pin)
        return pinverify.ibm3624_offset(natural, pin, check)

    # ------------------------------------------------------------------ MAC

    def _mac_key(self, key: WrappedKey) -> bytes:
        return self._block_key(key, MAC_USAGES).key

    def generate_mac(self, key: WrappedKey, data: bytes, algorithm: MacAlgorithm) -> bytes:
        """Full-block MAC of ``data`` under a TAK or ZAK. Raises HsmError subclasses."""
        clear = self._mac_key(key)
        return mac.compute(algorithm, clear, key.algorithm.is_aes, data)

    def verify_mac(
        self, key: WrappedKey, data: bytes, mac_value: bytes, algorithm: MacAlgorithm
    ) -> HsmResult:
        """Compare in constant time against the leading bytes of the full MAC.

        ``mac_value`` may be truncated to 4 bytes or more. Never raises HsmError.
        """
        try:
            full = self.generate_mac(key, data, algorithm)
            mac.check_mac_length(mac_value, len(full))
        except HsmError as exc:
            return exc.result
        if hmac.compare_digest(full[: len(mac_value)], bytes(mac_value)):
            return HsmResult.OK
        return HsmResult.VERIFICATION_FAILED

    # ------------------------------------------------------------------ CVV

    def generate_cvv(self, cvk: WrappedKey, pan: str, expiry: str, service_code: str) -> str:
        """CVV/CVC (service code from the track), iCVV (999) or CVV2 (000) under a
        double-length CVK. Raises KeyUsageError, KeyMaterialError, HsmError (15)."""
        if cvk.algorithm is not KeyAlgorithm.TDES2:
            raise KeyMaterialError("CVK must be a double-length TDES key")
        return cvv.cvv(self._block_key(cvk, (KeyUsage.CVK,)).key, pan, expiry, service_code)

    def verify_cvv(
        self, cvk: WrappedKey, pan: str, expiry: str, service_code: str, value: str
    ) -> HsmResult:
        """Compare a card's CVV in constant time. Never raises HsmError."""
        try:
            expected = self.generate_cvv(cvk, pan, expiry, service_code)
        except HsmError as exc:
            return exc.result
        if not isinstance(value, str) or len(value) != 3 or not value.isascii():
            return HsmResult.INVALID_INPUT
        if hmac.compare_digest(expected.encode("ascii"), value.encode("ascii")):
            return HsmResult.OK
        return HsmResult.VERIFICATION_FAILED
