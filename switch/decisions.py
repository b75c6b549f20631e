"""Internal decisions and the one function that turns a decision into field 39.

The pipeline never writes a response code itself: each stage returns a
:class:`Decision`, and :func:`response_code` chooses field 39. Decisions are
ordered by the processing order networks expect (parse, duplicate, card,
terminal, MAC, PIN, limits, funds), which is also their precedence when more
than one applies.
"""

from __future__ import annotations

import enum

from messages.codes import ResponseCode


class Decision(enum.IntEnum):
    APPROVED = 0
    # transport and capacity
    SHED_LOAD = 10
    ISSUER_UNAVAILABLE = 11
    SYSTEM_ERROR = 12
    HSM_ERROR = 13
    # message
    FORMAT_ERROR = 20
    UNSUPPORTED_TRANSACTION = 21
    INVALID_AMOUNT = 22
    DUPLICATE_MISMATCH = 23
    # card
    INVALID_CARD_NUMBER = 30
    UNKNOWN_CARD = 31
    CARD_LOST = 32
    CARD_STOLEN = 33
    CARD_RESTRICTED = 34
    CARD_EXPIRED = 35
    CARD_NOT_PERMITTED = 36
    NO_SUCH_ISSUER = 37
    # terminal
    UNKNOWN_TERMINAL = 40
    ACQUIRER_MISMATCH = 41
    TERMINAL_NOT_PERMITTED = 42
    NOT_SIGNED_ON = 43
    # security
    BAD_MAC = 50
    PIN_TRIES_EXCEEDED = 51
    PIN_WRONG = 52
    PIN_NOT_VERIFIABLE = 53
    TERMINAL_PIN_LIMIT = 54
    # accounts, limits, funds
    NO_CHECKING_ACCOUNT = 60
    NO_SAVINGS_ACCOUNT = 61
    INVALID_FROM_ACCOUNT = 62
    INVALID_TO_ACCOUNT = 63
    EXCEEDS_AMOUNT_LIMIT = 64
    EXCEEDS_FREQUENCY_LIMIT = 65
    INSUFFICIENT_FUNDS = 66
    # reversals
    ORIGINAL_NOT_FOUND = 70
    REVERSAL_EXCEEDS_ORIGINAL = 71
    LATE_ORIGINAL = 72


_CODES: dict[Decision, ResponseCode] = {
    Decision.APPROVED: ResponseCode.APPROVED,
    Decision.SHED_LOAD: ResponseCode.ISSUER_INOPERATIVE,
    Decision.ISSUER_UNAVAILABLE: ResponseCode.ISSUER_INOPERATIVE,
    Decision.SYSTEM_ERROR: ResponseCode.SYSTEM_MALFUNCTION,
    Decision.HSM_ERROR: ResponseCode.SYSTEM_MALFUNCTION,
    Decision.FORMAT_ERROR: ResponseCode.FORMAT_ERROR,
    Decision.UNSUPPORTED_TRANSACTION: ResponseCode.INVALID_TRANSACTION,
    Decision.INVALID_AMOUNT: ResponseCode.INVALID_AMOUNT,
    Decision.DUPLICATE_MISMATCH: ResponseCode.DUPLICATE_TRANSMISSION,
    Decision.INVALID_CARD_NUMBER: ResponseCode.INVALID_CARD_NUMBER,
    Decision.UNKNOWN_CARD: ResponseCode.INVALID_CARD_NUMBER,
    Decision.CARD_LOST: ResponseCode.LOST_CARD,
    Decision.CARD_STOLEN: ResponseCode.STOLEN_CARD,
    Decision.CARD_RESTRICTED: ResponseCode.RESTRICTED_CARD,
    Decision.CARD_EXPIRED: ResponseCode.EXPIRED_CARD,
    Decision.CARD_NOT_PERMITTED: ResponseCode.NOT_PERMITTED_CARDHOLDER,
    Decision.NO_SUCH_ISSUER: ResponseCode.NO_SUCH_ISSUER,
    Decision.UNKNOWN_TERMINAL: ResponseCode.INVALID_MERCHANT,
    Decision.ACQUIRER_MISMATCH: ResponseCode.INVALID_MERCHANT,
    Decision.TERMINAL_NOT_PERMITTED: ResponseCode.NOT_PERMITTED_TERMINAL,
    Decision.NOT_SIGNED_ON: ResponseCode.NOT_PERMITTED_TERMINAL,
    Decision.BAD_MAC: ResponseCode.SECURITY_VIOLATION,
    Decision.PIN_TRIES_EXCEEDED: ResponseCode.PIN_TRIES_EXCEEDED,
    Decision.PIN_WRONG: ResponseCode.INCORRECT_PIN,
    Decision.PIN_NOT_VERIFIABLE: ResponseCode.PIN_VALIDATION_NOT_POSSIBLE,
    Decision.TERMINAL_PIN_LIMIT: ResponseCode.NOT_PERMITTED_TERMINAL,
    Decision.NO_CHECKING_ACCOUNT: ResponseCode.NO_CHECKING_ACCOUNT,
    Decision.NO_SAVINGS_ACCOUNT: ResponseCode.NO_SAVINGS_ACCOUNT,
    Decision.INVALID_FROM_ACCOUNT: ResponseCode.INVALID_FROM_ACCOUNT,
    Decision.INVALID_TO_ACCOUNT: ResponseCode.INVALID_TO_ACCOUNT,
    Decision.EXCEEDS_AMOUNT_LIMIT: ResponseCode.EXCEEDS_AMOUNT_LIMIT,
    Decision.EXCEEDS_FREQUENCY_LIMIT: ResponseCode.EXCEEDS_FREQUENCY_LIMIT,
    Decision.INSUFFICIENT_FUNDS: ResponseCode.INSUFFICIENT_FUNDS,
    Decision.ORIGINAL_NOT_FOUND: ResponseCode.UNABLE_TO_LOCATE_RECORD,
    Decision.REVERSAL_EXCEEDS_ORIGINAL: ResponseCode.INVALID_AMOUNT,
    Decision.LATE_ORIGINAL: ResponseCode.DO_NOT_HONOUR,
}

# Decisions an advice may still be refused with: the receiver could not record it,
# so the acquirer must repeat it later (store and forward), or its amounts are wrong
# (a 0420 whose dispensed amount, 95.1, exceeds the original: 13, nothing reversed).
# Everything else about an advice is acknowledged with 00: it states a fact, it asks
# nothing.
_ADVICE_REFUSALS = frozenset({
    Decision.SHED_LOAD, Decision.ISSUER_UNAVAILABLE, Decision.SYSTEM_ERROR,
    Decision.FORMAT_ERROR, Decision.BAD_MAC, Decision.REVERSAL_EXCEEDS_ORIGINAL,
})

assert set(_CODES) == set(Decision), "every decision needs a response code"


def response_code(decision: Decision, *, advice: bool = False) -> ResponseCode:
    """Field 39 for `decision`; the only place the host chooses a response code."""
    if advice and decision not in _ADVICE_REFUSALS:
        return ResponseCode.APPROVED
    return _CODES[decision]


def describe() -> list[tuple[str, str, list[str]]]:
    """(code, meaning, decisions) for every code the host can send, for documentation."""
    by_code: dict[ResponseCode, list[str]] = {}
    for decision, code in _CODES.items():
        by_code.setdefault(code, []).append(decision.name)
    return [(code.value, code.meaning, names) for code, names in sorted(by_code.items())]
