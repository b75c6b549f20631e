"""ISO 8583:1987 messages for an ATM authorization host. Pure: no I/O.

Modules:

- :mod:`messages.profiles` — the two wire profiles (``ascii``, ``binary``) and
  the field table they are generated from.
- :mod:`messages.codec` — :class:`~messages.codec.IsoMessage`, ``decode``, ``encode``.
- :mod:`messages.mti` — the MTI model.
- :mod:`messages.fields` — processing code, track 2, fields 54/90/95, and the
  masked wrappers for PAN, PIN block and key data.
- :mod:`messages.codes` — field 39 response codes with their meanings.
- :mod:`messages.views` — typed request/response views and ``respond()``.
- :mod:`messages.framing` — the sans-I/O framer.
- :mod:`messages.compiled` — which modules are compiled with mypyc at install,
  and whether the compiled form or the source is in use.

Exceptions: everything raised on purpose derives from
:class:`messages.errors.MessageError`::

    MessageError
    ├── DecodeError      bytes that are not a message (names field and offset)
    ├── EncodeError      a message to send that breaks the profile
    ├── FieldError       decodable, but a field is missing or wrong (answer 39=30)
    └── FramingError
        ├── FrameTooLarge, MalformedFrame   (close the connection)
        ├── EmptyFrame                      (keep-alive: carry on)
        └── TruncatedFrame                  (end of stream mid-frame)

``decode`` raises nothing but DecodeError for any input bytes, and no error
text ever contains a field value. Programmer errors (wrong argument types,
broken invariants of this package) are assertions or TypeError/ValueError.
"""

# Before any submodule is imported: decides whether compiled modules or their
# sources are loaded (see messages.compiled).
from messages import compiled as _compiled  # noqa: F401
