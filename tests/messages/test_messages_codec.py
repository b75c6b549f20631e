"""Codec: round trips, liberal input, strict output, errors that name field and offset."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msg_strategies import MUTATIONS, iso_messages, mutate

from messages.codec import IsoMessage, decode, encode
from messages.errors import DecodeError, EncodeError, MessageError
from messages.profiles import ASCII, BINARY, Profile, get_profile

PROFILES = [ASCII, BINARY]
PAN = "4761739001010010"
PIN = "A1B2C3D4E5F60718"

SAMPLE = IsoMessage(
    "0200",
    {
        2: PAN,
        3: "011000",
        4: "000000010000",
        7: "1124031500",
        11: "000123",
        12: "031500",
        13: "1124",
        14: "2712",
        41: "ATM00001",
        49: "840",
        52: PIN,
    },
)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(msg=iso_messages())
def test_any_valid_message_round_trips(profile: Profile, msg: IsoMessage) -> None:
    raw = encode(msg, profile)
    assert decode(raw, profile) == msg
    assert encode(decode(raw, profile), profile) == raw


def test_profiles_by_name() -> None:
    assert get_profile("ascii") is ASCII
    assert get_profile("binary") is BINARY
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("ebcdic")


def test_ascii_layout_is_exact() -> None:
    raw = encode(IsoMessage("0800", {7: "1124031500", 11: "000001", 70: "001"}), ASCII)
    assert raw == b"0800" + b"8220000000000000" + b"0400000000000000" + b"1124031500000001001"


def test_binary_layout_has_raw_bitmap_and_pin() -> None:
    raw = encode(IsoMessage("0200", {3: "011000", 52: PIN}), BINARY)
    assert raw == b"0200" + bytes.fromhex("2000000000001000") + b"011000" + bytes.fromhex(PIN)


def test_both_profiles_yield_the_same_message() -> None:
    assert decode(encode(SAMPLE, ASCII), ASCII) == decode(encode(SAMPLE, BINARY), BINARY) == SAMPLE


# --------------------------------------------------------------------------- liberal input


def test_lower_case_bitmap_and_hex_field_accepted_and_normalised() -> None:
    raw = encode(SAMPLE, ASCII)
    lowered = raw[:4] + raw[4:20].lower() + raw[20:-16] + PIN.lower().encode()
    assert raw[4:20] != raw[4:20].lower()  # the sample really has hex letters in its bitmap
    assert decode(lowered, ASCII) == SAMPLE
    assert encode(decode(lowered, ASCII), ASCII) == raw  # strict on output


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_secondary_bitmap_present_but_empty_is_accepted(profile: Profile) -> None:
    msg = IsoMessage("0800", {7: "1124031500", 11: "000001"})
    raw = encode(msg, profile)
    width = profile.bitmap_bytes
    primary = bytearray(bytes.fromhex(raw[4 : 4 + width].decode()) if width == 16 else raw[4:12])
    primary[0] |= 0x80
    if profile.binary:
        padded = raw[:4] + bytes(primary) + bytes(8) + raw[12:]
    else:
        padded = raw[:4] + primary.hex().encode() + b"0" * 16 + raw[20:]
    assert decode(padded, profile) == msg
    assert encode(msg, profile) == raw  # and we never send an empty secondary bitmap


def test_numeric_fields_keep_their_left_zero_padding() -> None:
    msg = IsoMessage("0200", {32: "00000012345", 4: "000000000001"})
    assert decode(encode(msg, ASCII), ASCII) == msg


# --------------------------------------------------------------------------- decode errors


def _decode_error(raw: bytes, profile: Profile = ASCII) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(raw, profile)
    return info.value


def test_error_for_short_or_non_digit_mti() -> None:
    assert _decode_error(b"").field == 0
    error = _decode_error(b"02x0")
    assert (error.field, error.offset, error.mti) == (0, 0, None)


def test_error_for_non_hex_bitmap() -> None:
    error = _decode_error(b"0200ZZ00000000000000")
    assert (error.field, error.offset, error.mti) == (1, 4, "0200")


def test_error_for_truncated_bitmap() -> None:
    assert _decode_error(b"02002000").field == 1
    assert _decode_error(b"0200\x20\x00", BINARY).field == 1


def test_error_names_an_undefined_field() -> None:
    # Bit 65 (a third bitmap in ISO 8583:1987) is the one data element left undefined.
    error = _decode_error(b"0200" + b"8000000000000000" + b"8000000000000000")
    assert error.field == 65
    assert "field 65" in str(error)


def test_every_iso8583_1987_field_is_read_even_those_the_host_never_uses() -> None:
    # An EMV ATM's card sequence number (23) and a network's private fields (60-63,
    # 120-127) must not make the whole message unreadable.
    fields = {2: "4761739001010010", 3: "010000", 4: "000000010000", 11: "000123",
              23: "001", 26: "12", 28: "D00000150", 60: "private data 60",
              63: "63", 100: "12345", 123: "POS data 123", 127: "x" * 300}
    message = IsoMessage.checked_message("0200", fields)
    for profile in (ASCII, BINARY):
        assert decode(encode(message, profile), profile) == message


def test_error_names_field_and_offset_of_non_digit_numeric_data() -> None:
    raw = encode(SAMPLE, ASCII)
    offset = raw.index(b"000000010000")
    bad = raw[:offset] + b"00000001000X" + raw[offset + 12 :]
    error = _decode_error(bad)
    assert (error.field, error.offset, error.mti) == (4, offset, "0200")
    assert "field 4" in str(error) and f"offset {offset}" in str(error)


def test_error_for_truncated_field_and_for_trailing_bytes() -> None:
    raw = encode(SAMPLE, ASCII)
    assert _decode_error(raw[:-3]).field == 52
    assert _decode_error(raw + b"9").field == 52


def test_error_for_length_prefix_above_maximum() -> None:
    raw = b"0200" + b"4000000000000000" + b"20" + b"4" * 20
    error = _decode_error(raw)
    assert (error.field, error.offset) == (2, 20)


@pytest.mark.parametrize("prefix", [b"+5", b" 5", b"5 "])
def test_error_for_length_prefix_that_is_not_digits(prefix: bytes) -> None:
    # pyiso8583 reads a prefix with int(), which would take these as 5.
    raw = encode(IsoMessage("0800", {11: "000001", 32: "12345", 70: "301"}), ASCII)
    assert raw.count(b"0512345") == 1
    assert _decode_error(raw.replace(b"0512345", prefix + b"12345")).field == 32


def test_error_text_never_contains_field_values() -> None:
    raw = encode(SAMPLE, ASCII)
    for cut in range(len(raw)):
        for damaged in (raw[:cut], raw[:cut] + b"\xff" + raw[cut + 1 :]):
            try:
                decode(damaged, ASCII)
            except DecodeError as error:
                text = str(error) + repr(error) + repr(error.args)
                assert PAN not in text and PIN not in text and PAN[-8:] not in text


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), profile=st.sampled_from(PROFILES))
def test_any_bytes_decode_or_raise_decode_error(data: bytes, profile: Profile) -> None:
    try:
        msg = decode(data, profile)
    except DecodeError:
        return
    assert isinstance(msg, IsoMessage)


@settings(max_examples=300, deadline=None)
@given(
    msg=iso_messages(),
    profile=st.sampled_from(PROFILES),
    **MUTATIONS,
)
def test_mutated_messages_decode_or_raise_decode_error(
    msg: IsoMessage, profile: Profile, position: int, byte: int, action: str
) -> None:
    raw = mutate(encode(msg, profile), position, byte, action)
    try:
        decoded = decode(raw, profile)
    except DecodeError:
        return
    assert encode(decoded, profile)  # whatever decodes can be sent back


# --------------------------------------------------------------------------- encode errors


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (IsoMessage("020", {}), 0),
        (IsoMessage("0200", {65: "0" * 16}), 65),
        (IsoMessage("0200", {4: "1000"}), 4),
        (IsoMessage("0200", {4: "00000000100A"}), 4),
        (IsoMessage("0200", {2: "4" * 20}), 2),
        (IsoMessage("0200", {52: PIN.lower()}), 52),
        (IsoMessage("0200", {52: PIN[:-1]}), 52),
        (IsoMessage("0200", {41: "ATM\x0001"}), 41),
        (IsoMessage("0200", {55: "ABC"}), 55),
    ],
)
def test_encode_is_strict(msg: IsoMessage, field: int) -> None:
    for profile in PROFILES:
        with pytest.raises(EncodeError) as info:
            encode(msg, profile)
        assert info.value.field == field
        assert isinstance(info.value, MessageError)


# --------------------------------------------------------------------------- IsoMessage


def test_message_is_immutable_and_hashable() -> None:
    fields = {39: "00"}
    msg = IsoMessage("0210", fields)
    fields[39] = "05"
    assert msg.get(39) == "00"
    with pytest.raises(TypeError):
        msg.fields[39] = "05"  # type: ignore[index]
    assert hash(msg) == hash(IsoMessage("0210", {39: "00"}))
    assert list(IsoMessage("0210", {39: "00", 11: "1"})) == [11, 39]
    assert 39 in msg and 38 not in msg and msg.get(38) is None


def test_with_fields_and_replace() -> None:
    msg = IsoMessage("0210", {39: "00", 38: "123456"})
    assert msg.with_fields({39: "05", 38: None}) == IsoMessage("0210", {39: "05"})
    assert msg.with_fields(f39="51") == IsoMessage("0210", {39: "51", 38: "123456"})
    assert msg.replace({11: "000001"}, mti="0230") == IsoMessage("0230", {11: "000001"})
    with pytest.raises(TypeError):
        msg.with_fields(response="00")


def test_message_repr_masks_card_and_pin_data() -> None:
    msg = SAMPLE.with_fields({35: PAN + "=25121011234567", 55: "9F2701", 102: "1234567890"})
    for shown in (repr(msg), str(msg)):
        assert PAN not in shown and PIN not in shown and "1234567" not in shown
        assert "476173******0010" in shown and "9F2701" not in shown


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_tertiary_bitmap_bit_65_is_refused(profile: Profile) -> None:
    raw = encode(IsoMessage("0800", {7: "1124031500", 11: "000001", 70: "001"}), profile)
    width = profile.bitmap_bytes
    if profile.binary:
        secondary = bytearray(raw[4 + width : 4 + 2 * width])
        secondary[0] |= 0x80
        damaged = raw[: 4 + width] + bytes(secondary) + raw[4 + 2 * width :]
    else:
        secondary = bytearray(bytes.fromhex(raw[4 + width : 4 + 2 * width].decode()))
        secondary[0] |= 0x80
        damaged = raw[: 4 + width] + secondary.hex().encode() + raw[4 + 2 * width :]
    with pytest.raises(DecodeError) as info:
        decode(damaged, profile)
    assert info.value.field == 65


def test_message_pickles_and_copies() -> None:
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(SAMPLE)) == SAMPLE  # noqa: S301 (our own bytes)
    assert copy.deepcopy(SAMPLE) == SAMPLE and copy.copy(SAMPLE) == SAMPLE


def test_repr_hides_expiry() -> None:
    assert "2712" not in repr(SAMPLE)


@settings(max_examples=100, deadline=None)
@given(msg=iso_messages())
def test_lower_case_bitmaps_decode_the_same(msg: IsoMessage) -> None:
    raw = encode(msg, ASCII)
    has_secondary = int(raw[4:5], 16) & 0x8
    end = 36 if has_secondary else 20
    assert decode(raw[:4] + raw[4:end].lower() + raw[end:], ASCII) == msg
