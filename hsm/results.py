"""Result codes of the soft-HSM, in the payShield convention, and their field 39 mapping.

The numeric values follow the Thales payShield error codes where one exists, so an
operator who knows a network HSM reads them the same way. Two codes have no
payShield equivalent and are local to atm-switch: ``KCV_MISMATCH`` (12) and
``DEADLINE_EXCEEDED`` (98).

Field 39 is chosen by the switch in exactly one place; :func:`response_code_for` is the
table it must use for HSM outcomes, kept here so the two sides cannot drift.
"""

from __future__ import annotations

from enum import StrEnum


class HsmResult(StrEnum):
    """Outcome of one HSM operation. ``OK`` is the only success."""

    OK = "00"
    VERIFICATION_FAILED = "01"  # PIN, MAC or CVV does not match
    KEY_LENGTH = "02"  # key length inappropriate for the algorithm, or KEK weaker than the key
    KEY_PARITY = "10"  # source key (or key under a KEK) has a DES byte with even parity
    DESTINATION_KEY_PARITY = "11"  # destination key parity error, all-zero or degenerate key
    KCV_MISMATCH = "12"  # local: imported key does not match the check value sent with it
    MASTER_KEY_ERROR = "13"  # wrapped key does not authenticate under the loaded master key
    INVALID_INPUT = "15"  # invalid input data: bad hex, bad length, bad field
    PIN_BLOCK_ERROR = "20"  # PIN block does not contain valid values
    INVALID_PAN = "22"  # account number unusable for the PIN block or the algorithm
    PIN_BLOCK_FORMAT = "23"  # PIN block format code not supported
    PIN_LENGTH = "24"  # PIN shorter than 4 or longer than 12 digits
    DECIMALISATION_TABLE = "25"  # decimalisation table not 16 digits, or not a configured one
    KEY_USAGE = "29"  # key function not permitted: the key's usage does not fit the call
    INTERNAL_ERROR = "41"  # internal software error (a bug; also logged by the caller)
    DEADLINE_EXCEEDED = "98"  # local: the call's deadline passed before it was answered

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS: dict[HsmResult, str] = {
    HsmResult.OK: "no error",
    HsmResult.VERIFICATION_FAILED: "verification failed",
    HsmResult.KEY_LENGTH: "key length inappropriate for algorithm",
    HsmResult.KEY_PARITY: "source key parity error",
    HsmResult.DESTINATION_KEY_PARITY: "destination key parity error, all-zero or degenerate key",
    HsmResult.KCV_MISMATCH: "key check value mismatch",
    HsmResult.MASTER_KEY_ERROR: "key not valid under the loaded master key",
    HsmResult.INVALID_INPUT: "invalid input data",
    HsmResult.PIN_BLOCK_ERROR: "PIN block does not contain valid values",
    HsmResult.INVALID_PAN: "invalid account number",
    HsmResult.PIN_BLOCK_FORMAT: "PIN block format not supported",
    HsmResult.PIN_LENGTH: "PIN length outside 4 to 12 digits",
    HsmResult.DECIMALISATION_TABLE: "decimalisation table error",
    HsmResult.KEY_USAGE: "key function not permitted",
    HsmResult.INTERNAL_ERROR: "internal error",
    HsmResult.DEADLINE_EXCEEDED: "deadline exceeded",
}
assert set(_MEANINGS) == set(HsmResult), "every result code needs a meaning"

# Field 39 for each HSM outcome of a PIN-bearing request. A PIN that does not verify
# is the cardholder's mistake (55, and the caller counts a try). A PIN block that does
# not decode is also answered 55: to the host it is indistinguishable from a wrong PIN
# typed on a terminal whose key is out of step, and the caller decides (configurable)
# whether it counts as a try. Anything about keys, the master key, the deadline or our
# own code is a system fault: 96, never counted against the cardholder.
PIN_FORMAT_RESULTS: frozenset[HsmResult] = frozenset(
    {HsmResult.PIN_BLOCK_ERROR, HsmResult.PIN_LENGTH, HsmResult.INVALID_PAN}
)

FIELD39_APPROVED = "00"
FIELD39_INCORRECT_PIN = "55"
FIELD39_SYSTEM_MALFUNCTION = "96"


def response_code_for(result: HsmResult) -> str:
    """Field 39 the switch answers with for an HSM result on a PIN check.

    ``00`` for OK, ``55`` for a failed verification or a malformed PIN block,
    ``96`` for every key, configuration, deadline or internal fault.
    """
    if result is HsmResult.OK:
        return FIELD39_APPROVED
    if result is HsmResult.VERIFICATION_FAILED or result in PIN_FORMAT_RESULTS:
        return FIELD39_INCORRECT_PIN
    return FIELD39_SYSTEM_MALFUNCTION


def counts_as_pin_try(result: HsmResult, *, count_format_errors: bool) -> bool:
    """Whether the caller increments the card's PIN try counter for this result."""
    if result is HsmResult.VERIFICATION_FAILED:
        return True
    return count_format_errors and result in PIN_FORMAT_RESULTS
