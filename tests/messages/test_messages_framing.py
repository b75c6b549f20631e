"""The sans-I/O framer fed the way a socket really delivers bytes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.errors import (
    EmptyFrame,
    FrameTooLarge,
    FramingError,
    MalformedFrame,
    MessageError,
    TruncatedFrame,
)
from messages.framing import Frame, Framer, LengthHeader, encode_frame, reply_tpdu

HEADERS = list(LengthHeader)
TPDU = bytes.fromhex("6000120034")


def drain(framer: Framer) -> list[Frame]:
    frames = []
    while (frame := framer.next_frame()) is not None:
        frames.append(frame)
    return frames


def frames_of(payloads: list[bytes], header: LengthHeader, tpdu: bool) -> bytes:
    return b"".join(
        encode_frame(p, length_header=header, tpdu=TPDU if tpdu else None) for p in payloads
    )


def test_header_layouts() -> None:
    assert encode_frame(b"0800") == b"\x00\x040800"
    assert encode_frame(b"0800", length_header=LengthHeader.ASCII4) == b"00040800"
    assert encode_frame(b"0800", tpdu=TPDU) == b"\x00\x09" + TPDU + b"0800"
    assert encode_frame(b"x" * 300)[:2] == b"\x01\x2c"


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: h.name)
@pytest.mark.parametrize("tpdu", [False, True])
def test_one_byte_at_a_time(header: LengthHeader, tpdu: bool) -> None:
    payloads = [b"0800" + b"a" * n for n in (0, 1, 50, 300)]
    stream = frames_of(payloads, header, tpdu)
    framer = Framer(header, tpdu=tpdu)
    got: list[Frame] = []
    for index in range(len(stream)):
        framer.feed(stream[index : index + 1])
        got.extend(drain(framer))
    assert [f.payload for f in got] == payloads
    assert all(f.tpdu == (TPDU if tpdu else None) for f in got)
    framer.eof()


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=120), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
    header=st.sampled_from(HEADERS),
    tpdu=st.booleans(),
)
def test_random_chunkings(
    payloads: list[bytes], cuts: list[int], header: LengthHeader, tpdu: bool
) -> None:
    stream = frames_of(payloads, header, tpdu)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    framer = Framer(header, tpdu=tpdu)
    got: list[bytes] = []
    for start, end in itertools.pairwise(points):
        framer.feed(stream[start:end])
        got.extend(f.payload for f in drain(framer))
    assert got == payloads
    assert framer.pending_bytes == 0
    framer.eof()


def test_two_frames_in_one_read() -> None:
    framer = Framer()
    framer.feed(encode_frame(b"0800first") + encode_frame(b"0800second"))
    assert [f.payload for f in drain(framer)] == [b"0800first", b"0800second"]


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: h.name)
def test_oversize_frame_is_refused_before_its_body_arrives(header: LengthHeader) -> None:
    framer = Framer(header, frame_bytes_max=100)
    framer.feed(header.write(101))
    with pytest.raises(FrameTooLarge) as info:
        framer.next_frame()
    assert (info.value.length, info.value.frame_bytes_max) == (101, 100)
    # The stream cannot be resynchronised: the framer keeps refusing.
    framer.feed(encode_frame(b"0800"))
    with pytest.raises(FrameTooLarge):
        framer.next_frame()


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    framer = Framer(frame_bytes_max=100)
    framer.feed(encode_frame(b"x" * 100, frame_bytes_max=100))
    frame = framer.next_frame()
    assert frame is not None and len(frame.payload) == 100


def test_sender_checks_the_same_limit() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 101, frame_bytes_max=100)
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 96, tpdu=TPDU, frame_bytes_max=100)


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: h.name)
def test_eof_mid_frame(header: LengthHeader) -> None:
    framer = Framer(header)
    framer.feed(encode_frame(b"0800abc", length_header=header)[:-2])
    assert framer.next_frame() is None
    with pytest.raises(TruncatedFrame) as info:
        framer.eof()
    assert info.value.pending_bytes == header.width + 5


def test_eof_inside_the_length_header() -> None:
    framer = Framer()
    framer.feed(b"\x00")
    assert framer.next_frame() is None
    with pytest.raises(TruncatedFrame):
        framer.eof()


@pytest.mark.parametrize("header", HEADERS, ids=lambda h: h.name)
def test_zero_length_frame_is_a_keep_alive_and_the_framer_carries_on(header: LengthHeader) -> None:
    def one(payload: bytes) -> bytes:
        return encode_frame(payload, length_header=header)

    framer = Framer(header)
    framer.feed(header.write(0) + one(b"0800a") + header.write(0) + header.write(0) + one(b"0800b"))
    events: list[object] = []
    while True:
        try:
            frame = framer.next_frame()
        except EmptyFrame:
            events.append("keep-alive")
            continue
        if frame is None:
            break
        events.append(frame.payload)
    assert events == ["keep-alive", b"0800a", "keep-alive", "keep-alive", b"0800b"]
    framer.eof()


def test_errors_are_distinct_and_share_the_root() -> None:
    kinds = {FrameTooLarge, EmptyFrame, TruncatedFrame, MalformedFrame}
    assert all(issubclass(k, FramingError) and issubclass(k, MessageError) for k in kinds)
    assert len({k.__mro__[0] for k in kinds}) == 4
    assert not any(issubclass(a, b) for a in kinds for b in kinds if a is not b)


def test_malformed_ascii_header() -> None:
    framer = Framer(LengthHeader.ASCII4)
    framer.feed(b"00x4abcd")
    with pytest.raises(MalformedFrame):
        framer.next_frame()
    with pytest.raises(MalformedFrame):
        framer.next_frame()


def test_frame_too_short_for_its_tpdu() -> None:
    framer = Framer(tpdu=True)
    framer.feed(b"\x00\x03abc")
    with pytest.raises(MalformedFrame):
        framer.next_frame()


def test_tpdu_reply_swaps_source_and_destination() -> None:
    assert reply_tpdu(TPDU) == bytes.fromhex("6000340012")
    assert reply_tpdu(reply_tpdu(TPDU)) == TPDU
    with pytest.raises(ValueError, match="5 bytes"):
        reply_tpdu(b"\x60\x00")


def test_framer_encode_uses_its_settings() -> None:
    framer = Framer(LengthHeader.ASCII4, tpdu=True)
    assert framer.encode(b"0810", reply_tpdu(TPDU)) == b"0009" + reply_tpdu(TPDU) + b"0810"
    with pytest.raises(ValueError, match="TPDU"):
        framer.encode(b"0810")


@pytest.mark.parametrize(
    ("header", "limit"),
    [(LengthHeader.ASCII4, 10_000), (LengthHeader.BINARY2, 65_536), (LengthHeader.BINARY2, 0)],
)
def test_limit_must_fit_the_header(header: LengthHeader, limit: int) -> None:
    with pytest.raises(ValueError, match="frame_bytes_max"):
        Framer(header, frame_bytes_max=limit)


@settings(max_examples=200, deadline=None)
@given(
    stream=st.binary(max_size=600),
    step=st.integers(min_value=1, max_value=64),
    header=st.sampled_from(HEADERS),
    tpdu=st.booleans(),
)
def test_any_stream_yields_frames_or_framing_errors(
    stream: bytes, step: int, header: LengthHeader, tpdu: bool
) -> None:
    framer = Framer(header, tpdu=tpdu, frame_bytes_max=256)
    try:
        for start in range(0, len(stream), step):
            framer.feed(stream[start : start + step])
            while True:
                try:
                    frame = framer.next_frame()
                except EmptyFrame:
                    continue
                if frame is None:
                    break
                assert len(frame.payload) + (5 if tpdu else 0) <= 256
                assert (frame.tpdu is not None) == tpdu
        framer.eof()
    except FramingError:
        pass
