"""The message type indicator: version, class, function, origin."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from messages.errors import FieldError

__all__ = ["Function", "MsgClass", "Mti", "Origin"]


class MsgClass(enum.IntEnum):
    AUTHORIZATION = 1
    FINANCIAL = 2
    FILE_ACTION = 3
    REVERSAL = 4
    RECONCILIATION = 5
    ADMINISTRATIVE = 6
    FEE_COLLECTION = 7
    NETWORK_MANAGEMENT = 8


class Function(enum.IntEnum):
    REQUEST = 0
    REQUEST_RESPONSE = 1
    ADVICE = 2
    ADVICE_RESPONSE = 3
    NOTIFICATION = 4
    NOTIFICATION_ACK = 5


class Origin(enum.IntEnum):
    ACQUIRER = 0
    ACQUIRER_REPEAT = 1
    ISSUER = 2
    ISSUER_REPEAT = 3
    OTHER = 4
    OTHER_REPEAT = 5


@dataclass(frozen=True, slots=True, order=True, init=False)
class Mti:
    """A parsed MTI; ``str(mti)`` gives the four digits back."""

    version: int
    msg_class: int
    function: int
    origin: int

    # Spelled out for the reason given at messages.views.TransactionRequest (every
    # answer makes one).
    def __init__(self, version: int, msg_class: int, function: int, origin: int) -> None:
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "msg_class", msg_class)
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "origin", origin)
        self.__post_init__()

    @classmethod
    def parse(cls, text: str) -> Mti:
        """Parse four digits. Raises FieldError(0, …) for anything else."""
        if type(text) is str:
            known = _PARSED.get(text)
            if known is not None:
                return known
        if not (isinstance(text, str) and len(text) == 4 and text.isascii() and text.isdigit()):
            raise FieldError(0, "MTI must be 4 digits")
        mti = cls(int(text[0]), int(text[1]), int(text[2]), int(text[3]))
        if cls is Mti:
            _PARSED[text] = mti   # at most 10,000 texts: every MTI is parsed once
        return mti

    def __post_init__(self) -> None:
        for part in (self.version, self.msg_class, self.function, self.origin):
            assert 0 <= part <= 9, part

    def __str__(self) -> str:
        return f"{self.version}{self.msg_class}{self.function}{self.origin}"

    @property
    def is_request(self) -> bool:
        """x0xx: a request the receiver may decline."""
        return self.function == Function.REQUEST

    @property
    def is_advice(self) -> bool:
        """x2xx: an advice the receiver must accept."""
        return self.function == Function.ADVICE

    @property
    def is_response(self) -> bool:
        return self.function in (Function.REQUEST_RESPONSE, Function.ADVICE_RESPONSE)

    @property
    def is_repeat(self) -> bool:
        """Odd origin (0201, 0221, 0401, 0421): a retransmission of an earlier message."""
        return self.origin % 2 == 1

    def original(self) -> Mti:
        """The MTI without the repeat flag: 0201 -> 0200; others unchanged."""
        return Mti(self.version, self.msg_class, self.function, self.origin - self.origin % 2)

    def response(self) -> Mti:
        """The MTI that answers this request or advice: 0200 -> 0210, 0421 -> 0430.

        Raises FieldError(0, …) when this MTI is not a request or an advice.
        """
        if self.function not in (Function.REQUEST, Function.ADVICE, Function.NOTIFICATION):
            raise FieldError(0, "MTI is not a request or advice, it has no response")
        return Mti(self.version, self.msg_class, self.function + 1, self.origin - self.origin % 2)


# Parsed MTIs by their text (Mti is immutable, so one instance serves every message).
_PARSED: dict[str, Mti] = {}
