"""ISO 9564-1 PIN blocks: formats 0, 1 and 3 (8 bytes, TDES) and 4 (16 bytes, AES).

Clear PINs exist only inside the hsm package. Decoding is strict: control nibble,
PIN length 4 to 12, decimal PIN digits, the fill each format prescribes (F for 0,
A-F for 3, A then anything for 4), and for formats 0, 3 and 4 the binding to the PAN
(12 to 19 digits for formats 0 and 3; 1 to 19 for format 4, which pads a short PAN).
Every malformed input raises :class:`~hsm.errors.PinBlockError` (results 20, 22, 23
or 24) and nothing else; the message names the check that failed, never the value.
"""

from __future__ import annotations

import secrets

from hsm._crypto import BlockKey, xor
from hsm.errors import PinBlockError
from hsm.results import HsmResult

FORMATS = (0, 1, 3, 4)
PIN_DIGITS_MIN = 4
PIN_DIGITS_MAX = 12
PAN_DIGITS_MIN = 12
PAN_DIGITS_MAX = 19
FORMAT4_PAN_DIGITS_MIN = 1
_DIGITS = frozenset("0123456789")
_HEX_UPPER = "0123456789ABCDEF"


def check_pin(pin: str) -> None:
    """Raises PinBlockError unless ``pin`` is 4 to 12 decimal digits."""
    if not isinstance(pin, str) or not (PIN_DIGITS_MIN <= len(pin) <= PIN_DIGITS_MAX):
        raise PinBlockError("PIN length outside 4 to 12 digits", HsmResult.PIN_LENGTH)
    if not set(pin) <= _DIGITS:
        raise PinBlockError("PIN has a non-decimal digit")


def check_pan(pan: str, min_digits: int = PAN_DIGITS_MIN) -> None:
    """Raises PinBlockError (result 22) unless ``pan`` is ``min_digits`` (default 12) to
    19 decimal digits."""
    if (
        not isinstance(pan, str)
        or not (min_digits <= len(pan) <= PAN_DIGITS_MAX)
        or not set(pan) <= _DIGITS
    ):
        raise PinBlockError(
            f"PAN must be {min_digits} to {PAN_DIGITS_MAX} decimal digits", HsmResult.INVALID_PAN
        )


def check_format(fmt: int) -> None:
    if fmt not in FORMATS:
        raise PinBlockError("PIN block format not supported", HsmResult.PIN_BLOCK_FORMAT)


def block_bytes(fmt: int) -> int:
    check_format(fmt)
    return 16 if fmt == 4 else 8


def _pan_field_0_3(pan: str) -> bytes:
    # Twelve rightmost digits excluding the check digit, left-padded with zeros if the
    # PAN is shorter, behind four zero nibbles.
    check_pan(pan)
    return bytes.fromhex("0000" + pan[:-1][-12:].rjust(12, "0"))


def _random_nibbles(count: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(count))


def plain_block(fmt: int, pin: str, pan: str, *, fill: str | None = None) -> bytes:
    """The clear 8-byte block of format 0, 1 or 3 (after the XOR with the PAN field).

    ``fill`` overrides the random fill of formats 1 and 3 (tests only).
    Raises PinBlockError.
    """
    check_pin(pin)
    head = f"{fmt}{len(pin):X}{pin}"
    pad = 16 - len(head)
    if fmt == 0:
        nibbles = head + "F" * pad
    elif fmt == 1:
        nibbles = head + (fill if fill is not None else _random_nibbles(pad, _HEX_UPPER))
    elif fmt == 3:
        nibbles = head + (fill if fill is not None else _random_nibbles(pad, "ABCDEF"))
    else:
        raise PinBlockError("PIN block format not supported", HsmResult.PIN_BLOCK_FORMAT)
    if len(nibbles) != 16:
        raise PinBlockError("PIN block fill has the wrong length", HsmResult.INVALID_INPUT)
    pin_field = bytes.fromhex(nibbles)
    return pin_field if fmt == 1 else xor(pin_field, _pan_field_0_3(pan))


def pin_from_plain(fmt: int, block: bytes, pan: str) -> str:
    """The PIN in a clear block of format 0, 1 or 3. Raises PinBlockError."""
    if len(block) != 8:
        raise PinBlockError("PIN block must be 8 bytes for formats 0, 1 and 3")
    if fmt == 1:
        field = block
    elif fmt in (0, 3):
        field = xor(block, _pan_field_0_3(pan))
    else:
        raise PinBlockError("PIN block format not supported", HsmResult.PIN_BLOCK_FORMAT)
    nibbles = field.hex().upper()
    pin = _pin_from_nibbles(fmt, nibbles)
    fill = nibbles[2 + len(pin) :]
    if fmt == 0 and fill != "F" * len(fill):
        raise PinBlockError("format 0 fill is not F")
    if fmt == 3 and not set(fill) <= set("ABCDEF"):
        raise PinBlockError("format 3 fill is not A to F")
    return pin


def _pin_from_nibbles(fmt: int, nibbles: str) -> str:
    if nibbles[0] != str(fmt):
        raise PinBlockError("PIN block control nibble does not match the format")
    length = int(nibbles[1], 16)
    if not (PIN_DIGITS_MIN <= length <= PIN_DIGITS_MAX):
        raise PinBlockError("PIN length outside 4 to 12 digits", HsmResult.PIN_LENGTH)
    pin = nibbles[2 : 2 + length]
    if not set(pin) <= _DIGITS:
        raise PinBlockError("PIN has a non-decimal digit")
    return pin


def format4_pin_field(pin: str, *, random_half: bytes | None = None) -> bytes:
    """The 16-byte plain-text PIN field of format 4. Raises PinBlockError."""
    check_pin(pin)
    head = f"4{len(pin):X}{pin}".ljust(16, "A")
    tail = random_half if random_half is not None else secrets.token_bytes(8)
    if len(tail) != 8:
        raise PinBlockError("format 4 random field must be 8 bytes", HsmResult.INVALID_INPUT)
    return bytes.fromhex(head) + tail


def format4_pan_field(pan: str) -> bytes:
    """The 16-byte plain-text PAN field of format 4: M (PAN length - 12, or 0), the PAN
    (left-padded with zeros to 12 digits if shorter), zero fill.

    ISO 9564-1 defines it for PANs of 1 to 19 digits. Raises PinBlockError (22).
    """
    check_pan(pan, FORMAT4_PAN_DIGITS_MIN)
    nibbles = f"{max(len(pan) - 12, 0)}{pan.rjust(12, '0')}"
    return bytes.fromhex(nibbles.ljust(32, "0"))


def pin_from_format4_field(field: bytes) -> str:
    if len(field) != 16:
        raise PinBlockError("format 4 PIN field must be 16 bytes")
    nibbles = field.hex().upper()
    pin = _pin_from_nibbles(4, nibbles)
    if nibbles[2 + len(pin) : 16] != "A" * (14 - len(pin)):
        raise PinBlockError("format 4 fill is not A")
    return pin


def check_key_fits(fmt: int, key: BlockKey) -> None:
    if key.is_aes != (fmt == 4):
        raise PinBlockError(
            "PIN block format does not fit the key algorithm", HsmResult.PIN_BLOCK_FORMAT
        )


def encrypt(key: BlockKey, fmt: int, pin: str, pan: str) -> bytes:
    """Encrypted PIN block of format ``fmt`` under ``key``. Raises PinBlockError."""
    check_format(fmt)
    check_key_fits(fmt, key)
    if fmt != 4:
        return key.encrypt(plain_block(fmt, pin, pan))
    # ISO 9564-1 format 4: E(K, E(K, PIN field) XOR PAN field)
    intermediate = key.encrypt(format4_pin_field(pin))
    return key.encrypt(xor(intermediate, format4_pan_field(pan)))


def decrypt(key: BlockKey, fmt: int, block: bytes, pan: str) -> str:
    """The PIN inside an encrypted block. Raises PinBlockError only."""
    check_format(fmt)
    check_key_fits(fmt, key)
    if len(block) != block_bytes(fmt):
        raise PinBlockError("PIN block length does not fit the format")
    if fmt != 4:
        return pin_from_plain(fmt, key.decrypt(block), pan)
    intermediate = xor(key.decrypt(block), format4_pan_field(pan))
    return pin_from_format4_field(key.decrypt(intermediate))


def parse_block_hex(text: str, fmt: int) -> bytes:
    """PIN block bytes from hex. Raises PinBlockError if not hex of the format's length."""
    size = block_bytes(fmt)
    if not isinstance(text, str) or len(text) != 2 * size:
        raise PinBlockError("PIN block length does not fit the format")
    try:
        block = bytes.fromhex(text)
    except ValueError:
        raise PinBlockError("PIN block is not hex") from None
    if len(block) != size:  # fromhex skips spaces
        raise PinBlockError("PIN block is not hex")
    return block
