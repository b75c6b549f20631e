"""Message authentication (field 64 or 128) for terminals that require a MAC.

The MAC covers the message as it was received, from the MTI up to and not
including the MAC field, which is the last field of the message. TDES TAKs use
the ANSI X9.19 retail MAC (ISO 9797-1 algorithm 3, padding method 1); AES TAKs
use AES-CMAC. The first 8 bytes are sent.
"""

from __future__ import annotations

from collections.abc import Callable

from hsm.errors import HsmError
from hsm.interface import Hsm
from hsm.keys import WrappedKey
from hsm.mac import RETAIL_MAC, MacAlgorithm
from hsm.results import HsmResult
from ledger.model import TerminalRecord
from messages.codec import IsoMessage, mac_data, put_mac
from messages.errors import EncodeError
from messages.profiles import ASCII, Profile

MAC_BYTES = 8


def mac_algorithm(key: WrappedKey) -> MacAlgorithm:
    return MacAlgorithm.CMAC if key.algorithm.is_aes else RETAIL_MAC


def mac_field(msg: IsoMessage) -> int | None:
    if msg.get(128) is not None:
        return 128
    if msg.get(64) is not None:
        return 64
    return None


def mac_input(raw: bytes, mac_hex: str) -> bytes | None:
    """The bytes a MAC covers: `raw` without its trailing MAC field (hex text or raw)."""
    as_text = mac_hex.encode()
    if raw[-len(as_text):].upper() == as_text.upper():
        return raw[: -len(as_text)]
    as_bytes = bytes.fromhex(mac_hex)
    if raw.endswith(as_bytes):
        return raw[: -len(as_bytes)]
    return None


async def verify_message_mac(hsm: Hsm, msg: IsoMessage, raw: bytes, terminal: TerminalRecord,
                             key_of: Callable[[str], WrappedKey],
                             deadline: float) -> bool | None:
    """True when the MAC verifies, False when it is absent or wrong, None on an HSM fault."""
    number = mac_field(msg)
    if number is None or not terminal.tak:
        return False
    mac_hex = msg.get(number) or ""
    data = mac_input(raw, mac_hex)
    if data is None:
        return False
    key = key_of(terminal.tak)
    try:
        mac = bytes.fromhex(mac_hex)
    except ValueError:
        return False
    result = await hsm.verify_mac(key, data, mac, mac_algorithm(key), deadline_s=deadline)
    if result == HsmResult.OK:
        return True
    if result == HsmResult.VERIFICATION_FAILED:
        return False
    return None


async def sign_message(hsm: Hsm, msg: IsoMessage, key: WrappedKey, profile: Profile | None,
                       deadline: float) -> IsoMessage | None:
    """`msg` with its MAC as it will travel in `profile`, or None when the HSM or the
    encoder fails (the caller sends the message unsigned and the terminal will refuse
    it, which is the safe failure). The MAC is the message's last field: 64, or 128
    when any field above 64 is present (a 0410's 90 and 95)."""
    try:
        data = mac_data(msg, profile or ASCII)
    except EncodeError:
        return None
    try:
        mac = await hsm.generate_mac(key, data, mac_algorithm(key), deadline_s=deadline)
    except HsmError:
        return None
    return put_mac(msg, mac[:MAC_BYTES].hex().upper())
