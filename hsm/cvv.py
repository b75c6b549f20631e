"""Visa CVV / Mastercard CVC (and iCVV, CVV2: the same algorithm with another service
code). Internal maths.

Data: PAN, expiry, service code, zero-filled to 32 digits; block 1 encrypted under
CVK A (single DES), XOR block 2, then TDES under A|B; decimalise (digits first, then
A-F minus 10) and keep the first 3 digits.
"""

from __future__ import annotations

from hsm._crypto import BlockKey, xor
from hsm.errors import HsmError
from hsm.results import HsmResult

_DIGITS = frozenset("0123456789")
ICVV_SERVICE_CODE = "999"  # Visa: iCVV is the CVV computed with service code 999
CVV2_SERVICE_CODE = "000"


def _check(value: str, what: str, lengths: range) -> None:
    if not isinstance(value, str) or len(value) not in lengths or not set(value) <= _DIGITS:
        raise HsmError(f"{what} malformed", HsmResult.INVALID_INPUT)


def cvv(cvk: bytes, pan: str, expiry: str, service_code: str) -> str:
    """Three-digit CVV. ``cvk`` is the double-length key A|B. Raises HsmError (15)."""
    _check(pan, "PAN", range(12, 20))
    _check(expiry, "expiry", range(4, 5))
    _check(service_code, "service code", range(3, 4))
    assert len(cvk) == 16, "CVK is a double-length TDES key"
    data = (pan + expiry + service_code).ljust(32, "0")
    block1, block2 = bytes.fromhex(data[:16]), bytes.fromhex(data[16:])
    key_a = BlockKey(cvk[:8], is_aes=False)
    step = xor(key_a.encrypt(block1), block2)
    result = BlockKey(cvk, is_aes=False).encrypt(step).hex().upper()
    digits = [c for c in result if c in _DIGITS]
    digits += [str(int(c, 16) - 10) for c in result if c not in _DIGITS]
    return "".join(digits[:3])
