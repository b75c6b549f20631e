"""The compiled codec against pyiso8583, the reference: byte-identical encoding,
the same decoded message, and never accepting what pyiso8583 and the field
checks refuse (the compiled reader hands anything unusual to pyiso8583)."""

from __future__ import annotations

import iso8583
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msg_strategies import iso_messages, mutate

from messages import codec
from messages.codec import IsoMessage, decode, encode, encode_with_spans
from messages.errors import DecodeError
from messages.profiles import ASCII, BINARY, FIELD_DEFS, FieldKind, Profile

PROFILES = [ASCII, BINARY]


def reference_encode(msg: IsoMessage, profile: Profile) -> bytes:
    """pyiso8583's encoding of ``msg`` (it takes hex text for a raw binary field)."""
    doc = {"t": msg.mti, **{str(number): value for number, value in msg.fields.items()}}
    data, _ = iso8583.encode(doc, profile.spec)
    return bytes(data)


def reference_decode(raw: bytes, profile: Profile) -> IsoMessage:
    """The pyiso8583 path of the codec (raises DecodeError)."""
    return codec._decode(raw, profile)


def compiled_decode(raw: bytes, profile: Profile) -> IsoMessage | None:
    return codec._decode_compiled(raw, codec._LAYOUTS[profile.binary])


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(msg=iso_messages())
def test_encoding_is_byte_identical_to_pyiso8583(profile: Profile, msg: IsoMessage) -> None:
    raw = encode(msg, profile)
    assert raw == reference_encode(msg, profile)
    # A checked message (decoded) skips the field checks and still encodes the same.
    decoded = decode(raw, profile)
    assert decoded.checked
    assert encode(decoded, profile) == raw


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(msg=iso_messages())
def test_well_formed_messages_take_the_compiled_path(profile: Profile, msg: IsoMessage) -> None:
    raw = reference_encode(msg, profile)
    fast = compiled_decode(raw, profile)
    assert fast is not None
    assert fast == reference_decode(raw, profile) == msg


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    msg=iso_messages(),
    profile=st.sampled_from(PROFILES),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255),
                             st.sampled_from(["replace", "insert", "delete", "truncate"])),
                   min_size=1, max_size=3),
)
def test_damaged_messages_agree_with_pyiso8583(
    msg: IsoMessage, profile: Profile, edits: list[tuple[int, int, str]]
) -> None:
    raw = encode(msg, profile)
    for position, byte, action in edits:
        if raw:
            raw = mutate(raw, position, byte, action)
    fast = compiled_decode(raw, profile)
    try:
        slow = reference_decode(raw, profile)
    except DecodeError:
        assert fast is None, "the compiled reader accepted what pyiso8583 refuses"
        return
    assert fast is None or fast == slow


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300), profile=st.sampled_from(PROFILES))
def test_arbitrary_bytes_agree_with_pyiso8583(data: bytes, profile: Profile) -> None:
    fast = compiled_decode(data, profile)
    try:
        slow = reference_decode(data, profile)
    except DecodeError:
        assert fast is None
        return
    assert fast is None or fast == slow


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"0800" + b"8220000000000000" + b"0000000000000000" + b"1124031500000001301",
         "secondary bitmap present but empty"),
        (b"0800" + b"8220000000000000" + b"04000000000000" + b"1124031500000001301",
         "secondary bitmap cut short"),
        (b"0800" + b"02200000000000 0" + b"1124031500000001",
         "space inside the bitmap"),
        (b"0200" + b"4000000000000000" + b"+1" + b"4",
         "length prefix with a sign"),
    ],
)
def test_unusual_input_is_left_to_pyiso8583(raw: bytes, why: str) -> None:
    fast = compiled_decode(raw, ASCII)
    try:
        slow = reference_decode(raw, ASCII)
    except DecodeError:
        assert fast is None, why
        return
    assert fast is None or fast == slow, why


def test_hand_built_messages_are_not_checked() -> None:
    msg = IsoMessage("0800", {11: "000001", 70: "301"})
    assert not msg.checked
    assert not msg.with_fields({39: "00"}).checked


@settings(max_examples=500, deadline=None)
@given(number=st.sampled_from(sorted(FIELD_DEFS)),
       value=st.text(alphabet="0123456789ABCDEFabcdef=DF;?x \u00e9\x7f", max_size=60))
def test_fast_field_check_equals_the_detailed_rules(number: int, value: str) -> None:
    d = FIELD_DEFS[number]
    fast = codec._PATTERNS[number].fullmatch(value) is not None
    chars = len(value) // 2 if d.kind is FieldKind.BINARY else len(value)
    detailed = (
        not (d.kind is FieldKind.BINARY and len(value) % 2)
        and (chars == d.length if d.prefix == 0 else chars <= d.length)
        and codec._valid_text(d.kind, value)
    )
    assert fast == detailed


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_encode_with_spans_locates_every_field_in_the_encoded_message(data: st.DataObject) -> None:
    profile: Profile = data.draw(st.sampled_from([ASCII, BINARY]))
    msg = data.draw(iso_messages())
    raw, spans = encode_with_spans(msg, profile)
    assert raw == encode(msg, profile)
    assert sorted(spans) == sorted(msg.fields)
    for number, (start, end) in spans.items():
        wire = raw[start:end]
        value = msg.fields[number]
        assert wire == (bytes.fromhex(value) if profile.binary and FIELD_DEFS[number].kind
                        is FieldKind.BINARY else value.encode("ascii")), number
    last = max(spans.values(), key=lambda span: span[1], default=(0, len(raw)))
    assert last[1] == len(raw)
