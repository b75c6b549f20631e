"""Field 39 response codes: each defined once, with its meaning, checked at import."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["RESPONSE_CODE_MEANINGS", "ResponseCode"]


class ResponseCode(enum.StrEnum):
    """The field 39 codes this host sends. ``str(code)`` is the two characters."""

    _meaning: str

    # ``meaning`` has a default only so that ``ResponseCode("51")`` (a lookup by
    # value) type-checks; every member below gives one, as _check() asserts.
    def __new__(cls, code: str, meaning: str = "") -> ResponseCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member._meaning = meaning
        return member

    @property
    def meaning(self) -> str:
        return self._meaning

    @property
    def is_approval(self) -> bool:
        return self is ResponseCode.APPROVED

    APPROVED = "00", "approved or completed successfully"
    INVALID_MERCHANT = "03", "invalid merchant or terminal"
    DO_NOT_HONOUR = "05", "do not honour"
    INVALID_TRANSACTION = "12", "invalid transaction"
    INVALID_AMOUNT = "13", "invalid amount"
    INVALID_CARD_NUMBER = "14", "invalid card number"
    NO_SUCH_ISSUER = "15", "no such issuer"
    UNABLE_TO_LOCATE_RECORD = "25", "unable to locate record"
    FORMAT_ERROR = "30", "format error"
    PIN_TRIES_EXCEEDED_CAPTURE = "38", "allowable PIN tries exceeded, capture card"
    LOST_CARD = "41", "lost card"
    STOLEN_CARD = "43", "stolen card"
    INSUFFICIENT_FUNDS = "51", "not sufficient funds"
    NO_CHECKING_ACCOUNT = "52", "no checking account"
    NO_SAVINGS_ACCOUNT = "53", "no savings account"
    EXPIRED_CARD = "54", "expired card"
    INCORRECT_PIN = "55", "incorrect PIN"
    NOT_PERMITTED_CARDHOLDER = "57", "transaction not permitted to cardholder"
    NOT_PERMITTED_TERMINAL = "58", "transaction not permitted to terminal"
    EXCEEDS_AMOUNT_LIMIT = "61", "exceeds withdrawal amount limit"
    RESTRICTED_CARD = "62", "restricted card"
    SECURITY_VIOLATION = "63", "security violation"
    EXCEEDS_FREQUENCY_LIMIT = "65", "exceeds withdrawal frequency limit"
    PIN_TRIES_EXCEEDED = "75", "allowable number of PIN tries exceeded"
    INVALID_TO_ACCOUNT = "76", "invalid 'to' account"
    INVALID_FROM_ACCOUNT = "77", "invalid 'from' account"
    INVALID_ACCOUNT = "78", "invalid account"
    PIN_VALIDATION_NOT_POSSIBLE = "86", "PIN validation not possible"
    CRYPTOGRAPHIC_FAILURE = "88", "cryptographic failure"
    UNACCEPTABLE_PIN = "89", "unacceptable PIN"
    ISSUER_INOPERATIVE = "91", "issuer or switch inoperative"
    UNABLE_TO_ROUTE = "92", "financial institution cannot be found for routing"
    DUPLICATE_TRANSMISSION = "94", "duplicate transmission"
    SYSTEM_MALFUNCTION = "96", "system malfunction"


RESPONSE_CODE_MEANINGS: Final[Mapping[str, str]] = MappingProxyType(
    {code.value: code.meaning for code in ResponseCode}
)


def _check() -> None:
    # Enum aliasing would silently merge two names that share a code: forbid it.
    assert len(ResponseCode.__members__) == len(ResponseCode), "duplicate response code"
    for code in ResponseCode:
        assert len(code.value) == 2 and code.value.isascii() and code.value.isalnum(), code.name
        assert code.meaning, code.name


_check()
