from __future__ import annotations

import pytest

from ledger.model import Outcome
from messages.codes import ResponseCode
from switch.decisions import Decision, describe, response_code
from switch.pipeline import OUTCOME_DECISIONS


def test_every_ledger_outcome_has_a_decision() -> None:
    missing = [o.name for o in Outcome if o.name not in OUTCOME_DECISIONS
               and o.name != "NO_SUCH_ACCOUNT"]
    assert not missing


@pytest.mark.parametrize(
    ("decision", "code"),
    [
        (Decision.APPROVED, "00"),
        (Decision.FORMAT_ERROR, "30"),
        (Decision.UNKNOWN_CARD, "14"),
        (Decision.CARD_LOST, "41"),
        (Decision.CARD_STOLEN, "43"),
        (Decision.CARD_EXPIRED, "54"),
        (Decision.PIN_WRONG, "55"),
        (Decision.PIN_TRIES_EXCEEDED, "75"),
        (Decision.INSUFFICIENT_FUNDS, "51"),
        (Decision.EXCEEDS_AMOUNT_LIMIT, "61"),
        (Decision.EXCEEDS_FREQUENCY_LIMIT, "65"),
        (Decision.DUPLICATE_MISMATCH, "94"),
        (Decision.SHED_LOAD, "91"),
        (Decision.SYSTEM_ERROR, "96"),
        (Decision.ORIGINAL_NOT_FOUND, "25"),
    ],
)
def test_response_codes(decision: Decision, code: str) -> None:
    assert response_code(decision) == code


def test_advices_are_acknowledged_unless_they_could_not_be_recorded() -> None:
    assert response_code(Decision.ORIGINAL_NOT_FOUND, advice=True) == "00"
    assert response_code(Decision.INSUFFICIENT_FUNDS, advice=True) == "00"
    assert response_code(Decision.ISSUER_UNAVAILABLE, advice=True) == "91"
    assert response_code(Decision.FORMAT_ERROR, advice=True) == "30"


def test_describe_lists_every_code_once() -> None:
    rows = describe()
    codes = [row[0] for row in rows]
    assert len(codes) == len(set(codes))
    assert {"00", "14", "30", "51", "55", "75", "91", "96"} <= set(codes)
    assert all(code in {c.value for c in ResponseCode} for code in codes)
