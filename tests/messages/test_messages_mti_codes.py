"""MTI model and the response code table."""

from __future__ import annotations

import pytest

from messages.codes import RESPONSE_CODE_MEANINGS, ResponseCode
from messages.errors import FieldError
from messages.mti import Mti


@pytest.mark.parametrize(
    ("text", "response", "is_req", "is_adv", "is_rep"),
    [
        ("0100", "0110", True, False, False),
        ("0101", "0110", True, False, True),
        ("0200", "0210", True, False, False),
        ("0201", "0210", True, False, True),
        ("0220", "0230", False, True, False),
        ("0221", "0230", False, True, True),
        ("0400", "0410", True, False, False),
        ("0401", "0410", True, False, True),
        ("0420", "0430", False, True, False),
        ("0421", "0430", False, True, True),
        ("0800", "0810", True, False, False),
    ],
)
def test_mti_model(text: str, response: str, is_req: bool, is_adv: bool, is_rep: bool) -> None:
    mti = Mti.parse(text)
    assert str(mti) == text
    assert str(mti.response()) == response
    assert (mti.is_request, mti.is_advice, mti.is_repeat) == (is_req, is_adv, is_rep)
    assert not mti.is_response and mti.response().is_response
    assert str(mti.original()) == text[:3] + "0"
    assert mti.version == 0 and mti.msg_class == int(text[1])


@pytest.mark.parametrize("text", ["", "020", "02000", "02a0", "٠٢٠٠"])
def test_mti_parse_rejects(text: str) -> None:
    with pytest.raises(FieldError) as info:
        Mti.parse(text)
    assert info.value.field == 0


def test_a_response_has_no_response() -> None:
    with pytest.raises(FieldError):
        Mti.parse("0210").response()


def test_response_codes_are_the_contract_list() -> None:
    expected = {
        "APPROVED": "00", "INVALID_MERCHANT": "03", "DO_NOT_HONOUR": "05",
        "INVALID_TRANSACTION": "12", "INVALID_AMOUNT": "13", "INVALID_CARD_NUMBER": "14",
        "NO_SUCH_ISSUER": "15", "UNABLE_TO_LOCATE_RECORD": "25", "FORMAT_ERROR": "30",
        "PIN_TRIES_EXCEEDED_CAPTURE": "38", "LOST_CARD": "41", "STOLEN_CARD": "43",
        "INSUFFICIENT_FUNDS": "51", "NO_CHECKING_ACCOUNT": "52", "NO_SAVINGS_ACCOUNT": "53",
        "EXPIRED_CARD": "54", "INCORRECT_PIN": "55", "NOT_PERMITTED_CARDHOLDER": "57",
        "NOT_PERMITTED_TERMINAL": "58", "EXCEEDS_AMOUNT_LIMIT": "61", "RESTRICTED_CARD": "62",
        "SECURITY_VIOLATION": "63", "EXCEEDS_FREQUENCY_LIMIT": "65", "PIN_TRIES_EXCEEDED": "75",
        "INVALID_TO_ACCOUNT": "76", "INVALID_FROM_ACCOUNT": "77", "INVALID_ACCOUNT": "78",
        "PIN_VALIDATION_NOT_POSSIBLE": "86", "CRYPTOGRAPHIC_FAILURE": "88",
        "UNACCEPTABLE_PIN": "89", "ISSUER_INOPERATIVE": "91", "UNABLE_TO_ROUTE": "92",
        "DUPLICATE_TRANSMISSION": "94", "SYSTEM_MALFUNCTION": "96",
    }  # fmt: skip
    assert {c.name: c.value for c in ResponseCode} == expected
    assert set(RESPONSE_CODE_MEANINGS) == set(expected.values())


def test_response_code_behaves_as_text_and_has_a_meaning() -> None:
    code = ResponseCode("51")
    assert code is ResponseCode.INSUFFICIENT_FUNDS
    assert code == "51" and f"{code}" == "51" and str(code) == "51"
    assert code.meaning == RESPONSE_CODE_MEANINGS["51"] == "not sufficient funds"
    assert ResponseCode.APPROVED.is_approval and not code.is_approval
    with pytest.raises(ValueError):
        ResponseCode("99")
