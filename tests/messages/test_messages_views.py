"""Typed views: round trips in both profiles, rejection of broken messages, respond()."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msg_strategies import (
    MUTATIONS,
    mutate,
    network_requests,
    network_responses,
    reversal_requests,
    transaction_requests,
    transaction_responses,
)

from messages.codec import IsoMessage, decode, encode
from messages.codes import ResponseCode
from messages.errors import DecodeError, EncodeError, FieldError, MessageError
from messages.fields import AdditionalAmount, OriginalData, Pan, ReplacementAmounts
from messages.mti import Mti
from messages.profiles import ASCII, BINARY, Profile
from messages.views import (
    NetworkRequest,
    NetworkResponse,
    ReversalRequest,
    TransactionRequest,
    TransactionResponse,
    respond,
)

PROFILES = [ASCII, BINARY]
PAN = "4761739001010010"
PIN = "8C2A4D7E91F03B56"
VIEWS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (TransactionRequest, transaction_requests()),
    (ReversalRequest, reversal_requests()),
    (NetworkRequest, network_requests),
    (TransactionResponse, transaction_responses),
    (NetworkResponse, network_responses),
]
SLOW = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@pytest.mark.parametrize(("view", "strategy"), VIEWS, ids=lambda v: getattr(v, "__name__", ""))
@SLOW
@given(data=st.data())
def test_view_round_trips(
    profile: Profile, view: Any, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    value = data.draw(strategy)
    raw = encode(value.to_iso(), profile)
    again = view.from_iso(decode(raw, profile))
    assert again == value
    assert encode(again.to_iso(), profile) == raw


# --------------------------------------------------------------------------- invalid input


def withdrawal() -> IsoMessage:
    return IsoMessage(
        "0200",
        {
            2: PAN,
            3: "011000",
            4: "000000020000",
            7: "1124031502",
            11: "000002",
            32: "123456",
            35: PAN + "=27122011234500000",
            41: "ATM00001",
            49: "840",
            52: PIN,
        },
    )


@pytest.mark.parametrize("missing", [3, 4, 7, 11, 32, 41, 49])
def test_missing_mandatory_field_is_named(missing: int) -> None:
    with pytest.raises(FieldError) as info:
        TransactionRequest.from_iso(withdrawal().with_fields({missing: None}))
    assert info.value.field == missing


def test_pan_comes_from_track_2_when_field_2_is_absent() -> None:
    request = TransactionRequest.from_iso(withdrawal().with_fields({2: None}))
    assert request.pan == Pan(PAN)
    assert request.expiry == "2712"
    with pytest.raises(FieldError) as info:
        TransactionRequest.from_iso(withdrawal().with_fields({2: None, 35: None}))
    assert info.value.field == 2


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({0: "x"}, 0),
        ({2: "4761739001010011"}, 2),
        ({35: "4111111111111111=2712201"}, 35),
        ({35: PAN + "2712201"}, 35),
        ({3: "01100A"}, 3),
        ({7: "1324031502"}, 7),
        ({7: "11240315"}, 7),
        ({52: "XYZ"}, 52),
        ({90: "0" * 41}, 90),
        ({4: "-00000000001"}, 4),
    ],
)
def test_wrong_field_content_is_named(changes: dict[int, str], field: int) -> None:
    msg = withdrawal()
    if 0 in changes:
        msg = msg.replace(msg.fields, mti="0210")
    else:
        msg = msg.with_fields(changes)  # type: ignore[arg-type]
    with pytest.raises(FieldError) as info:
        TransactionRequest.from_iso(msg)
    assert info.value.field == field
    assert PAN not in str(info.value) and PIN not in str(info.value)


def test_balance_inquiry_may_omit_the_amount() -> None:
    msg = withdrawal().with_fields({3: "301000", 4: None})
    assert TransactionRequest.from_iso(msg).amount == 0


@pytest.mark.parametrize(
    ("view", "mti"),
    [
        (TransactionRequest, "0400"),
        (ReversalRequest, "0200"),
        (NetworkRequest, "0810"),
        (TransactionResponse, "0200"),
        (NetworkResponse, "0800"),
    ],
)
def test_views_refuse_other_mtis(view: Any, mti: str) -> None:
    with pytest.raises(FieldError) as info:
        view.from_iso(IsoMessage(mti, {}))
    assert info.value.field == 0


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    data=st.data(),
    **MUTATIONS,
)
def test_mutations_are_rejected_with_the_package_errors(
    profile: Profile, data: st.DataObject, position: int, byte: int, action: str
) -> None:
    view, strategy = data.draw(st.sampled_from(VIEWS))
    raw = mutate(encode(data.draw(strategy).to_iso(), profile), position, byte, action)
    try:
        msg = decode(raw, profile)
        for candidate in (view, TransactionRequest, ReversalRequest, NetworkRequest):
            try:
                candidate.from_iso(msg)
            except FieldError:
                pass
    except DecodeError:
        pass


# --------------------------------------------------------------------------- respond


def test_respond_echoes_and_adds() -> None:
    request = withdrawal().with_fields({37: "432803000002", 12: "031502", 13: "1124"})
    balances = [
        AdditionalAmount("10", "01", "840", 980000),
        AdditionalAmount("10", "02", "840", 960000),
    ]
    response = respond(
        request, ResponseCode.APPROVED, approval_code="A1B2C3", additional_amounts=balances
    )
    assert response.mti == "0210"
    for n in (2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 49):
        assert response.get(n) == request.get(n)
    assert response.get(35) is None and response.get(52) is None  # never echoed
    assert (response.get(38), response.get(39)) == ("A1B2C3", "00")
    assert response.get(54) == "1001840C000000980000" + "1002840C000000960000"
    for profile in PROFILES:
        view = TransactionResponse.from_iso(decode(encode(response, profile), profile))
        assert view.approved and view.code is ResponseCode.APPROVED
        assert view.additional_amounts == tuple(balances)


def test_respond_decline_has_no_approval_code_and_extra_applies_last() -> None:
    response = respond(withdrawal(), "51", extra={49: None, 44: "x"})
    assert response.get(38) is None and response.get(39) == "51"
    assert response.get(49) is None and response.get(44) == "x"


def test_respond_to_repeat_and_advice_and_network() -> None:
    assert respond(withdrawal().replace(withdrawal().fields, mti="0201"), "00").mti == "0210"
    original = OriginalData("0200", "000002", "1124031502", "123456")
    advice = IsoMessage(
        "0421",
        {
            **withdrawal().fields,
            90: original.to_iso(),
            95: ReplacementAmounts(10000, 10000).to_iso(),
        },
    )
    ack = respond(advice, "00")
    assert ack.mti == "0430" and ack.get(90) == original.to_iso() and ack.get(95)
    sign_on = IsoMessage("0800", {7: "1124031500", 11: "000001", 70: "001", 41: "ATM00001"})
    reply = NetworkResponse.from_iso(respond(sign_on, "00"))
    assert (reply.info_code, reply.stan, reply.terminal_id) == ("001", "000001", "ATM00001")
    assert str(reply.mti) == "0810"


def test_respond_to_a_malformed_request_still_encodes() -> None:
    bad = withdrawal().with_fields({4: "12AB", 41: "ATM\x0001"})
    response = respond(bad, ResponseCode.FORMAT_ERROR)
    assert response.get(4) is None and response.get(41) is None
    for profile in PROFILES:
        assert decode(encode(response, profile), profile) == response


def test_respond_refuses_what_it_cannot_send() -> None:
    with pytest.raises(FieldError):
        respond(IsoMessage("0210", {}), "00")
    with pytest.raises(EncodeError):
        respond(withdrawal(), "000")
    with pytest.raises(EncodeError):
        respond(withdrawal(), "00", approval_code="12345")
    with pytest.raises(EncodeError):
        respond(withdrawal(), "00", additional_amounts=[AdditionalAmount("10", "01", "840", 1)] * 7)


def test_reversal_dispensed_amount() -> None:
    base = withdrawal().with_fields({52: None})
    full = ReversalRequest.from_iso(base.replace(base.fields, mti="0420"))
    assert full.dispensed_amount is None
    partial = ReversalRequest.from_iso(
        base.replace(base.fields, mti="0400").with_fields(
            {95: ReplacementAmounts(5000, 5000).to_iso()}
        )
    )
    assert partial.dispensed_amount == 5000
    zero = base.replace(base.fields, mti="0400").with_fields({95: "0" * 42})
    assert ReversalRequest.from_iso(zero).dispensed_amount is None


def test_errors_share_one_root() -> None:
    for kind in (DecodeError, EncodeError, FieldError):
        assert issubclass(kind, MessageError)
    assert Mti.parse("0200").response() == Mti.parse("0210")


def test_view_repr_never_shows_clear_card_data() -> None:
    secret_48 = "KEY1-0123456789ABCDEF0123456789ABCDEF"
    request = TransactionRequest.from_iso(
        withdrawal().with_fields(
            {48: secret_48, 55: "9F2608AABBCCDDEEFF0011", 102: "ACCT998877665544", 103: "ACCT1122"}
        )
    )
    sign_on = NetworkRequest.from_iso(
        IsoMessage(
            "0800",
            {7: "1124031500", 11: "000001", 70: "161", 48: secret_48, 96: "1122334455667788"},
        )
    )
    reply = TransactionResponse.from_iso(respond(withdrawal(), "00", approval_code="A1B2C3"))
    for view in (request, sign_on, reply):
        for shown in (repr(view), str(view), f"{view}", repr([view])):
            assert PAN not in shown and PIN not in shown and "27122011234500000" not in shown
            assert "0123456789ABCDEF" not in shown and "1122334455667788" not in shown
            assert "AABBCCDDEEFF" not in shown and "998877665544" not in shown
            assert "ACCT1122" not in shown
    assert "476173******0010" in repr(request)


@pytest.mark.parametrize(
    "track",
    [PAN + "D2712201123450000F", PAN + "d2712201123450000f", ";" + PAN + "=2712201123450000?"],
)
def test_liberal_track_2_through_codec_and_view(track: str) -> None:
    msg = withdrawal().with_fields({2: None, 35: track})
    for profile in PROFILES:
        request = TransactionRequest.from_iso(decode(encode(msg, profile), profile))
        assert request.pan == Pan(PAN) and request.expiry == "2712"
        assert request.track2 is not None
        assert request.track2.to_iso() == PAN + "=2712201123450000"
