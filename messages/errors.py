"""The one exception tree of :mod:`messages`.

::

    MessageError
    ├── DecodeError      bytes that are not a message of the profile
    ├── EncodeError      a message we were asked to send breaks the profile
    ├── FieldError       a decodable message whose content is wrong or missing
    └── FramingError     the byte stream cannot be cut into frames
        ├── FrameTooLarge    length header above ``frame_bytes_max``
        ├── EmptyFrame       zero-length frame (a keep-alive; the framer stays usable)
        ├── TruncatedFrame   end of stream in the middle of a frame
        └── MalformedFrame   unreadable length header, or a frame shorter than its TPDU

No error text ever contains a field value: values may be a PAN, track data or
a PIN block, and error texts end up in logs. Texts name the field, the offset
and a reason built only from lengths and field numbers.
"""

from __future__ import annotations


class MessageError(Exception):
    """Root of every error :mod:`messages` raises on purpose."""


def _where(field: int | None, offset: int | None) -> str:
    parts = []
    if field is not None:
        parts.append("MTI" if field == 0 else "bitmap" if field == 1 else f"field {field}")
    if offset is not None:
        parts.append(f"offset {offset}")
    return ", ".join(parts) if parts else "message"


class DecodeError(MessageError):
    """Bytes that do not decode as a message of the profile.

    ``field`` is the field number (0 for the MTI, 1 for the bitmaps), or None
    when the failure is not tied to one field. ``offset`` is the byte offset in
    the input where the offending element starts, when known. ``mti`` is the
    message type when it could be read (it is never sensitive), so the caller
    can count or answer by type.
    """

    def __init__(
        self,
        field: int | None,
        offset: int | None,
        reason: str,
        *,
        mti: str | None = None,
        partial: object | None = None,
    ) -> None:
        self.field = field
        self.offset = offset
        self.reason = reason
        self.mti = mti
        # When the structure decoded (MTI, bitmaps, every length) but some field's
        # content is wrong, ``partial`` is the IsoMessage of the fields that are
        # right, so the receiver can still answer 39=30 with the echo fields.
        self.partial = partial
        super().__init__(f"cannot decode {_where(field, offset)}: {reason}")


class EncodeError(MessageError):
    """A message to send does not satisfy the profile (we are strict on output)."""

    def __init__(self, field: int | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"cannot encode {_where(field, None)}: {reason}")


class FieldError(MessageError):
    """A decodable message whose field content is wrong or missing.

    The switch answers these with response code 30 (format error).
    ``field`` is 0 for the MTI.
    """

    def __init__(self, field: int, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{_where(field, None)}: {reason}")


class CardNumberError(FieldError):
    """A PAN that is present (field 2, or inside track 2) but is not a card number:
    not digits, not 12 to 19 of them, or failing the Luhn check. The switch answers
    these with response code 14 (invalid card number), not 30."""


class FramingError(MessageError):
    """The byte stream cannot be cut into frames."""


class FrameTooLarge(FramingError):
    """A length header announces more than ``frame_bytes_max`` bytes.

    The stream cannot be resynchronised after this: close the connection.
    """

    def __init__(self, length: int, frame_bytes_max: int) -> None:
        self.length = length
        self.frame_bytes_max = frame_bytes_max
        super().__init__(f"frame of {length} bytes exceeds frame_bytes_max={frame_bytes_max}")


class EmptyFrame(FramingError):
    """A zero-length frame: a keep-alive. The framer has consumed it and stays usable.

    Never answer it with another keep-alive (two peers doing so loop forever).
    """

    def __init__(self) -> None:
        super().__init__("zero-length frame (keep-alive)")


class TruncatedFrame(FramingError):
    """The stream ended in the middle of a frame."""

    def __init__(self, pending_bytes: int) -> None:
        self.pending_bytes = pending_bytes
        super().__init__(f"end of stream with {pending_bytes} bytes of an incomplete frame")


class MalformedFrame(FramingError):
    """An unreadable length header, or a frame too short to hold its TPDU.

    The stream cannot be resynchronised after this: close the connection.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
