"""PIN verification values: Visa PVV and IBM 3624 natural PIN + offset. Internal maths.

These functions see a clear PIN; only :class:`~hsm.soft.SoftHsm` calls them, after
decrypting a PIN block, and only a verdict or a PVV/offset leaves the package.
Malformed reference data raises :class:`~hsm.errors.PinVerificationDataError`.
"""

from __future__ import annotations

from hsm._crypto import BlockKey
from hsm.errors import PinVerificationDataError
from hsm.results import HsmResult

DEFAULT_DECIMALISATION_TABLE = "0123456789012345"
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789ABCDEF")
# Visa PVKI: 1 to 6 select a PVK pair; 0 means the card has no PVV to verify.
_PVKIS = frozenset("123456")


def _digits(text: str, what: str, lengths: range) -> str:
    if not isinstance(text, str) or len(text) not in lengths or not set(text) <= _DIGITS:
        raise PinVerificationDataError(f"{what} malformed")
    return text


def check_pvv(pvv: str) -> str:
    """A stored PVV must be 4 digits: a malformed one is bad reference data (15), not a
    wrong PIN, so it never costs the cardholder a try."""
    return _digits(pvv, "PVV", range(4, 5))


def visa_tsp(pan: str, pvki: str, pin: str) -> str:
    """Transformed security parameter: the 11 rightmost PAN digits before the check
    digit, the PVKI (1 to 6), the 4 leftmost PIN digits (16 decimal digits)."""
    _digits(pan, "PAN", range(12, 20))
    if not isinstance(pvki, str) or pvki not in _PVKIS:
        raise PinVerificationDataError("PVKI must be one digit 1 to 6")
    assert len(pin) >= 4, "PIN checked by the caller"
    return pan[-12:-1] + pvki + pin[:4]


def pvv_from_tsp(pvk: BlockKey, tsp: str) -> str:
    """Encrypt the TSP under the PVK; keep the first 4 decimal digits of the result,
    completed if needed by a second scan taking A-F minus 10."""
    result = pvk.encrypt(bytes.fromhex(tsp)).hex().upper()
    decimal = [c for c in result if c in _DIGITS]
    if len(decimal) < 4:
        decimal += [str(int(c, 16) - 10) for c in result if c not in _DIGITS]
    return "".join(decimal[:4])


def visa_pvv(pvk: BlockKey, pan: str, pvki: str, pin: str) -> str:
    """The 4-digit Visa PVV of a PIN (its 4 leftmost digits) and PAN under ``pvk``."""
    return pvv_from_tsp(pvk, visa_tsp(pan, pvki, pin))


def check_decimalisation_table(table: str) -> str:
    if not isinstance(table, str) or len(table) != 16 or not set(table) <= _DIGITS:
        raise PinVerificationDataError(
            "decimalisation table must be 16 decimal digits", HsmResult.DECIMALISATION_TABLE
        )
    return table


def validation_block(validation_data: str, pad: str = "F") -> bytes:
    """IBM 3624 validation data, right-padded with ``pad`` to 16 hex digits."""
    if (
        not isinstance(validation_data, str)
        or not (1 <= len(validation_data) <= 16)
        or not set(validation_data.upper()) <= _HEX
        or len(pad) != 1
        or pad.upper() not in _HEX
    ):
        raise PinVerificationDataError("validation data malformed")
    return bytes.fromhex(validation_data.upper().ljust(16, pad.upper()))


def decimalise(hex_digits: str, table: str) -> str:
    """Each hex digit replaced by the table digit at its position (IBM 3624 step 2)."""
    check_decimalisation_table(table)
    return "".join(table[int(c, 16)] for c in hex_digits)


def ibm3624_natural_pin(pvk: BlockKey, table: str, validation: bytes, length: int) -> str:
    """The natural PIN: validation data encrypted under the PVK, decimalised, leftmost
    ``length`` digits (``length`` is the customer PIN length)."""
    if not (4 <= length <= 12):
        raise PinVerificationDataError("PIN length outside 4 to 12", HsmResult.PIN_LENGTH)
    return decimalise(pvk.encrypt(validation).hex().upper(), table)[:length]


def ibm3624_offset(natural: str, pin: str, check_length: int) -> str:
    """PIN offset: the rightmost ``check_length`` digits of (PIN - natural PIN) mod 10.

    IBM z/OS ICSF "PIN Offset Generation algorithm": offset data is the digit-wise
    modulo-10 difference without borrow; the PIN offset is its rightmost m digits.
    """
    assert len(natural) == len(pin), "natural PIN cut to the PIN length"
    if not (4 <= check_length <= len(pin)):
        raise PinVerificationDataError("PIN check length outside 4 to PIN length")
    data = "".join(str((int(p) - int(n)) % 10) for p, n in zip(pin, natural, strict=True))
    return data[-check_length:]


def ibm3624_check_digits(natural: str, offset: str, check_length: int) -> str:
    """The rightmost ``check_length`` digits the PIN must end with, given its offset.

    IBM z/OS ICSF "3624 PIN Verification Algorithm": natural PIN (leftmost n digits,
    n the entered PIN length) plus offset data, modulo 10 without carry; the rightmost
    m digits of the sum are compared with the rightmost m digits of the entered PIN.
    """
    _digits(offset, "offset", range(4, 13))
    if not (4 <= check_length <= min(len(offset), len(natural))):
        raise PinVerificationDataError("PIN check length outside 4 to offset length")
    tail = natural[-check_length:]
    return "".join(
        str((int(n) + int(o)) % 10) for n, o in zip(tail, offset[-check_length:], strict=True)
    )
