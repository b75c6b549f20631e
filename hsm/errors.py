"""The exception tree of the soft-HSM.

Every error carries an :class:`~hsm.results.HsmResult` so a caller can turn it into a
result code without inspecting the type. Messages name what was wrong ("PIN length",
"control nibble") and never contain a key, a PIN, a PIN block or a check value.

- ``HsmError`` (root)
  - ``KeyUsageError``: key has the wrong usage for the operation
  - ``KeyParityError``: DES key bytes without odd parity, an all-zero key, or a
    degenerate TDES key (DES weak or semi-weak component, K1 = K2, K2 = K3)
  - ``KeyMaterialError``: key of the wrong length, not hex, not valid under the
    master key (wrapped key tampered with, or another master key), or to be carried
    under a weaker key-encrypting key
  - ``KcvMismatch``: an imported key does not match the check value sent with it
  - ``PinBlockError``: a PIN block (or a PIN given to encode one) is malformed
  - ``PinVerificationDataError``: PVV, offset, decimalisation table or PVKI malformed
  - ``MacError``: MAC input malformed (MAC length, padding choice)
  - ``DeadlineExceeded``: the call's deadline had passed
  - ``MasterKeyUnavailable``: no master key could be loaded from the configuration
"""

from __future__ import annotations

from hsm.results import HsmResult


class HsmError(Exception):
    """Root of every error the hsm package raises on purpose."""

    default_result = HsmResult.INTERNAL_ERROR

    def __init__(self, reason: str, result: HsmResult | None = None) -> None:
        self.result: HsmResult = result if result is not None else self.default_result
        self.reason = reason
        super().__init__(f"{reason} (hsm result {self.result.value})")


class KeyUsageError(HsmError):
    default_result = HsmResult.KEY_USAGE


class KeyParityError(HsmError):
    default_result = HsmResult.KEY_PARITY


class KeyMaterialError(HsmError):
    default_result = HsmResult.KEY_LENGTH


class KcvMismatch(HsmError):
    default_result = HsmResult.KCV_MISMATCH


class PinBlockError(HsmError):
    default_result = HsmResult.PIN_BLOCK_ERROR


class PinVerificationDataError(HsmError):
    default_result = HsmResult.INVALID_INPUT


class MacError(HsmError):
    default_result = HsmResult.INVALID_INPUT


class DeadlineExceeded(HsmError):
    default_result = HsmResult.DEADLINE_EXCEEDED


class MasterKeyUnavailable(HsmError):
    default_result = HsmResult.MASTER_KEY_ERROR
