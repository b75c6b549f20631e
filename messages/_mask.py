"""Masking rules shared by the wrapper types and the message repr."""

from __future__ import annotations

from typing import Final

REDACTED: Final = "<redacted>"


def mask_digits(text: str) -> str:
    """First 6 and last 4 characters in clear, the rest as ``*`` (PCI DSS display rule).

    Under 13 characters first 6 + last 4 would leave almost nothing hidden, so
    only the last 4 are shown.
    """
    if len(text) < 13:
        return mask_tail(text)
    return text[:6] + "*" * (len(text) - 10) + text[-4:]


def mask_tail(text: str) -> str:
    """Only the last 4 characters in clear (account identifiers)."""
    if len(text) <= 4:
        return "*" * len(text)
    return "*" * (len(text) - 4) + text[-4:]


# Field number -> how its value is shown by IsoMessage.__repr__.
# 2: PAN; 35: track 2 (PAN + discretionary data); 14: expiry (cardholder data
# under PCI DSS when it sits next to the PAN); 52: PIN block; 55: ICC data can
# carry track-equivalent data; 48 and 96 carry key material in key exchanges;
# 102/103: account numbers.
def show_field(number: int, value: str) -> str:
    if number == 2:
        return mask_digits(value)
    if number == 35:
        return mask_digits(value.split("=")[0].split("D")[0]) + "=" + REDACTED
    if number in (14, 48, 52, 55, 96):
        return REDACTED
    if number in (102, 103):
        return mask_tail(value)
    return value
