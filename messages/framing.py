"""Sans-I/O framing: feed bytes in, pull frames out, build frames to send.

A frame is a length header, then (optionally) a 5-byte TPDU, then one ISO 8583
message. The length counts everything after the header, TPDU included.

The framer never reads a socket. The caller feeds what it read, then calls
:meth:`Framer.next_frame` until it returns None, and :meth:`Framer.eof` when
the peer closed. ``frame_bytes_max`` is checked as soon as a header is
complete, before the body is buffered, so an oversize frame is refused
without being read. After :class:`FrameTooLarge` or :class:`MalformedFrame`
the stream cannot be resynchronised: the framer keeps raising and the caller
must close the connection. After :class:`EmptyFrame` it carries on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from messages.errors import (
    EmptyFrame,
    FrameTooLarge,
    FramingError,
    MalformedFrame,
    TruncatedFrame,
)

__all__ = ["TPDU_BYTES", "Frame", "Framer", "LengthHeader", "encode_frame", "reply_tpdu"]

TPDU_BYTES: Final = 5
FRAME_BYTES_MAX_DEFAULT: Final = 4096


class LengthHeader(enum.Enum):
    """How the frame length is written."""

    BINARY2 = "binary2"  # 2-byte unsigned big-endian
    ASCII4 = "ascii4"  # 4 ASCII decimal digits

    @property
    def width(self) -> int:
        return 2 if self is LengthHeader.BINARY2 else 4

    @property
    def length_max(self) -> int:
        """The largest length this header can express."""
        return 0xFFFF if self is LengthHeader.BINARY2 else 9999

    def write(self, length: int) -> bytes:
        assert 0 <= length <= self.length_max, length
        if self is LengthHeader.BINARY2:
            return length.to_bytes(2, "big")
        return f"{length:04d}".encode("ascii")

    def read(self, raw: bytes) -> int:
        """The length in ``raw`` (exactly ``width`` bytes). Raises MalformedFrame."""
        assert len(raw) == self.width
        if self is LengthHeader.BINARY2:
            return int.from_bytes(raw, "big")
        if not all(0x30 <= b <= 0x39 for b in raw):
            raise MalformedFrame("ASCII length header is not 4 decimal digits")
        return int(raw.decode("ascii"))


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame's content: the message bytes and the TPDU when the listener uses one."""

    payload: bytes
    tpdu: bytes | None = None


def _check_limit(length_header: LengthHeader, frame_bytes_max: int) -> None:
    if not 0 < frame_bytes_max <= length_header.length_max:
        raise ValueError(
            f"frame_bytes_max must be 1..{length_header.length_max} for {length_header.name}"
        )


class Framer:
    """Cuts a byte stream into frames. Not thread-safe; one per connection."""

    def __init__(
        self,
        length_header: LengthHeader = LengthHeader.BINARY2,
        tpdu: bool = False,
        frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
    ) -> None:
        _check_limit(length_header, frame_bytes_max)
        self.length_header = length_header
        self.tpdu = tpdu
        self.frame_bytes_max = frame_bytes_max
        self._buffer = bytearray()
        self._broken: FramingError | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes fed but not yet returned as a frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more bytes are needed.

        Raises FrameTooLarge, MalformedFrame (both final: close the connection)
        or EmptyFrame (a keep-alive, already consumed: carry on).
        """
        if self._broken is not None:
            raise self._broken.with_traceback(None)
        width = self.length_header.width
        if len(self._buffer) < width:
            return None
        try:
            length = self._frame_length(bytes(self._buffer[:width]))
        except (FrameTooLarge, MalformedFrame) as exc:
            self._broken = exc
            raise
        if length == 0:
            del self._buffer[:width]
            raise EmptyFrame()
        if len(self._buffer) < width + length:
            return None
        body = bytes(self._buffer[width : width + length])
        del self._buffer[: width + length]
        if self.tpdu:
            return Frame(body[TPDU_BYTES:], body[:TPDU_BYTES])
        return Frame(body)

    def _frame_length(self, header: bytes) -> int:
        length = self.length_header.read(header)
        if length > self.frame_bytes_max:
            raise FrameTooLarge(length, self.frame_bytes_max)
        if self.tpdu and 0 < length <= TPDU_BYTES:
            raise MalformedFrame(f"frame of {length} bytes has no room for a TPDU and a message")
        return length

    def eof(self) -> None:
        """The peer closed. Raises TruncatedFrame when part of a frame is pending."""
        if self._buffer:
            raise TruncatedFrame(len(self._buffer))

    def encode(self, payload: bytes, tpdu: bytes | None = None) -> bytes:
        """A frame with this framer's settings (see :func:`encode_frame`)."""
        if self.tpdu and tpdu is None:
            raise ValueError("this listener uses a TPDU: pass one (see reply_tpdu)")
        return encode_frame(
            payload,
            length_header=self.length_header,
            tpdu=tpdu if self.tpdu else None,
            frame_bytes_max=self.frame_bytes_max,
        )


def encode_frame(
    payload: bytes,
    *,
    length_header: LengthHeader = LengthHeader.BINARY2,
    tpdu: bytes | None = None,
    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT,
) -> bytes:
    """Length header + TPDU (when given) + payload.

    Raises FrameTooLarge when the frame would exceed ``frame_bytes_max`` (the same
    limit the receiver checks), ValueError for a TPDU that is not 5 bytes.
    """
    _check_limit(length_header, frame_bytes_max)
    if tpdu is not None and len(tpdu) != TPDU_BYTES:
        raise ValueError(f"TPDU must be {TPDU_BYTES} bytes")
    body = (tpdu or b"") + payload
    if len(body) > frame_bytes_max:
        raise FrameTooLarge(len(body), frame_bytes_max)
    return length_header.write(len(body)) + body


def reply_tpdu(tpdu: bytes) -> bytes:
    """The TPDU for a reply: same id, destination and source addresses swapped.

    A TPDU is id (1 byte) + destination (2) + source (2). Raises ValueError
    when ``tpdu`` is not 5 bytes.
    """
    if len(tpdu) != TPDU_BYTES:
        raise ValueError(f"TPDU must be {TPDU_BYTES} bytes")
    return tpdu[0:1] + tpdu[3:5] + tpdu[1:3]
