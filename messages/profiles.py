"""Wire profiles: the field layouts an acquirer can choose between.

Both profiles follow ISO 8583:1987 with ASCII length prefixes and ASCII text
fields. They differ only in how binary data travels:

* ``ascii`` (default): bitmaps as 16 hex characters each; field 52, 64, 96 and
  128 as 16 hex characters; field 55 as hex text.
* ``binary``: bitmaps as 8 raw bytes each; field 52, 64, 96 and 128 as 8 raw
  bytes; field 55 as raw bytes.

The field table below is data, checked when this module is imported. It
defines every ISO 8583:1987 data element, so a message carrying fields the
host does not use (an EMV ATM's 23, a network's private 60-63 or 120-127) is
still read and answered; only the fields the host uses are ever sent back. The
pyiso8583 spec of each profile is generated from it, so the two profiles can
never disagree about a field's length or kind.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

__all__ = ["ASCII", "BINARY", "FieldDef", "FieldKind", "Profile", "get_profile"]


class FieldKind(enum.Enum):
    """What a field's value may contain once decoded into text."""

    NUMERIC = "n"  # digits only
    TEXT = "ans"  # printable ASCII, space included
    TRACK = "z"  # track 2 characters: digits, separator, sentinels, F pad
    BINARY = "b"  # bytes on the wire in `binary`, hex text in `ascii`; upper-case hex in a message


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One data element. ``length`` is characters (bytes for BINARY) and is
    exact for fixed fields (``prefix == 0``) and a maximum otherwise.
    ``prefix`` is the number of ASCII length digits (0, 2 or 3)."""

    number: int
    kind: FieldKind
    prefix: int
    length: int
    name: str


_N, _ANS, _Z, _B = FieldKind.NUMERIC, FieldKind.TEXT, FieldKind.TRACK, FieldKind.BINARY

FIELD_DEFS: Final[Mapping[int, FieldDef]] = MappingProxyType(
    {
        d.number: d
        for d in (
            FieldDef(2, _N, 2, 19, "primary account number"),
            FieldDef(3, _N, 0, 6, "processing code"),
            FieldDef(4, _N, 0, 12, "amount, transaction"),
            FieldDef(5, _N, 0, 12, "amount, settlement"),
            FieldDef(6, _N, 0, 12, "amount, cardholder billing"),
            FieldDef(7, _N, 0, 10, "transmission date and time"),
            FieldDef(8, _N, 0, 8, "amount, cardholder billing fee"),
            FieldDef(9, _N, 0, 8, "conversion rate, settlement"),
            FieldDef(10, _N, 0, 8, "conversion rate, cardholder billing"),
            FieldDef(11, _N, 0, 6, "systems trace audit number"),
            FieldDef(12, _N, 0, 6, "time, local transaction"),
            FieldDef(13, _N, 0, 4, "date, local transaction"),
            FieldDef(14, _N, 0, 4, "date, expiration"),
            FieldDef(15, _N, 0, 4, "date, settlement"),
            FieldDef(16, _N, 0, 4, "date, conversion"),
            FieldDef(17, _N, 0, 4, "date, capture"),
            FieldDef(18, _N, 0, 4, "merchant type"),
            FieldDef(19, _N, 0, 3, "acquiring institution country code"),
            FieldDef(20, _N, 0, 3, "PAN extended, country code"),
            FieldDef(21, _N, 0, 3, "forwarding institution country code"),
            FieldDef(22, _N, 0, 3, "point of service entry mode"),
            FieldDef(23, _N, 0, 3, "card sequence number"),
            FieldDef(24, _N, 0, 3, "network international identifier"),
            FieldDef(25, _N, 0, 2, "point of service condition code"),
            FieldDef(26, _N, 0, 2, "point of service capture code"),
            FieldDef(27, _N, 0, 1, "authorizing identification response length"),
            FieldDef(28, _ANS, 0, 9, "amount, transaction fee"),
            FieldDef(29, _ANS, 0, 9, "amount, settlement fee"),
            FieldDef(30, _ANS, 0, 9, "amount, transaction processing fee"),
            FieldDef(31, _ANS, 0, 9, "amount, settlement processing fee"),
            FieldDef(32, _N, 2, 11, "acquiring institution id"),
            FieldDef(33, _N, 2, 11, "forwarding institution id"),
            FieldDef(34, _ANS, 2, 28, "primary account number, extended"),
            FieldDef(35, _Z, 2, 37, "track 2 data"),
            FieldDef(36, _ANS, 3, 104, "track 3 data"),
            FieldDef(37, _ANS, 0, 12, "retrieval reference number"),
            FieldDef(38, _ANS, 0, 6, "authorization id response"),
            FieldDef(39, _ANS, 0, 2, "response code"),
            FieldDef(40, _ANS, 0, 3, "service restriction code"),
            FieldDef(41, _ANS, 0, 8, "card acceptor terminal id"),
            FieldDef(42, _ANS, 0, 15, "card acceptor id code"),
            FieldDef(43, _ANS, 0, 40, "card acceptor name/location"),
            FieldDef(44, _ANS, 2, 25, "additional response data"),
            FieldDef(45, _ANS, 2, 76, "track 1 data"),
            FieldDef(46, _ANS, 3, 999, "additional data, ISO"),
            FieldDef(47, _ANS, 3, 999, "additional data, national"),
            FieldDef(48, _ANS, 3, 999, "additional data, private"),
            FieldDef(49, _N, 0, 3, "currency code, transaction"),
            FieldDef(50, _ANS, 0, 3, "currency code, settlement"),
            FieldDef(51, _ANS, 0, 3, "currency code, cardholder billing"),
            FieldDef(52, _B, 0, 8, "PIN data"),
            FieldDef(53, _N, 0, 16, "security related control information"),
            FieldDef(54, _ANS, 3, 120, "additional amounts"),
            FieldDef(55, _B, 3, 255, "ICC data"),
            *(FieldDef(n, _ANS, 3, 999, "reserved, ISO") for n in (56,)),
            *(FieldDef(n, _ANS, 3, 999, "reserved, national") for n in (57, 58, 59)),
            *(FieldDef(n, _ANS, 3, 999, "reserved, private") for n in (60, 61, 62, 63)),
            FieldDef(64, _B, 0, 8, "message authentication code"),
            FieldDef(66, _N, 0, 1, "settlement code"),
            FieldDef(67, _N, 0, 2, "extended payment code"),
            FieldDef(68, _N, 0, 3, "receiving institution country code"),
            FieldDef(69, _N, 0, 3, "settlement institution country code"),
            FieldDef(70, _N, 0, 3, "network management information code"),
            FieldDef(71, _N, 0, 4, "message number"),
            FieldDef(72, _N, 0, 4, "message number, last"),
            FieldDef(73, _N, 0, 6, "date, action"),
            *(FieldDef(n, _N, 0, 10, name) for n, name in (
                (74, "credits, number"), (75, "credits, reversal number"),
                (76, "debits, number"), (77, "debits, reversal number"),
                (78, "transfer, number"), (79, "transfer, reversal number"),
                (80, "inquiries, number"), (81, "authorizations, number"))),
            *(FieldDef(n, _N, 0, 12, name) for n, name in (
                (82, "credits, processing fee amount"), (83, "credits, transaction fee amount"),
                (84, "debits, processing fee amount"), (85, "debits, transaction fee amount"))),
            *(FieldDef(n, _N, 0, 16, name) for n, name in (
                (86, "credits, amount"), (87, "credits, reversal amount"),
                (88, "debits, amount"), (89, "debits, reversal amount"))),
            FieldDef(90, _N, 0, 42, "original data elements"),
            FieldDef(91, _ANS, 0, 1, "file update code"),
            FieldDef(92, _ANS, 0, 2, "file security code"),
            FieldDef(93, _ANS, 0, 5, "response indicator"),
            FieldDef(94, _ANS, 0, 7, "service indicator"),
            FieldDef(95, _ANS, 0, 42, "replacement amounts"),
            FieldDef(96, _B, 0, 8, "message security code"),
            FieldDef(97, _ANS, 0, 17, "amount, net settlement"),
            FieldDef(98, _ANS, 0, 25, "payee"),
            FieldDef(99, _N, 2, 11, "settlement institution id"),
            FieldDef(100, _N, 2, 11, "receiving institution id"),
            FieldDef(101, _ANS, 2, 17, "file name"),
            FieldDef(102, _ANS, 2, 28, "account identification 1"),
            FieldDef(103, _ANS, 2, 28, "account identification 2"),
            FieldDef(104, _ANS, 3, 100, "transaction description"),
            *(FieldDef(n, _ANS, 3, 999, "reserved, ISO") for n in range(105, 112)),
            *(FieldDef(n, _ANS, 3, 999, "reserved, national") for n in range(112, 120)),
            *(FieldDef(n, _ANS, 3, 999, "reserved, private") for n in range(120, 128)),
            FieldDef(128, _B, 0, 8, "message authentication code (secondary)"),
        )
    }
)


def _check_field_defs() -> None:
    for number, d in FIELD_DEFS.items():
        assert number == d.number
        assert 2 <= number <= 128 and number != 65, number  # 1 and 65 are bitmaps
        assert d.prefix in (0, 2, 3), number
        assert 0 < d.length < 10**d.prefix if d.prefix else d.length > 0, number
        assert d.kind is not _B or d.prefix in (0, 3), number  # ascii hex doubles the length


_check_field_defs()


def _spec_entry(d: FieldDef, binary: bool) -> dict[str, Any]:
    wire_binary = binary and d.kind is FieldKind.BINARY
    length = d.length if wire_binary or d.kind is not FieldKind.BINARY else d.length * 2
    assert d.prefix == 0 or length < 10**d.prefix, d.number
    return {
        "data_enc": "b" if wire_binary else "ascii",
        "len_enc": "ascii",
        "len_type": d.prefix,
        "max_len": length,
        "desc": d.name,
    }


def _build_spec(binary: bool) -> Mapping[str, Mapping[str, Any]]:
    bitmap = {
        "data_enc": "b" if binary else "ascii",
        "len_enc": "ascii",
        "len_type": 0,
        "max_len": 8 if binary else 16,
        "desc": "bitmap",
    }
    spec: dict[str, Mapping[str, Any]] = {
        "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": "-"},
        "t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4, "desc": "MTI"},
        "p": bitmap,
        "1": bitmap,
    }
    for number, d in FIELD_DEFS.items():
        spec[str(number)] = _spec_entry(d, binary)
    return MappingProxyType(spec)


@dataclass(frozen=True, slots=True)
class Profile:
    """A wire profile. ``spec`` is the pyiso8583 spec generated from the field table;
    ``binary`` tells whether bitmaps and binary fields travel as raw bytes."""

    name: str
    spec: Mapping[str, Mapping[str, Any]] = field(compare=False, repr=False)
    binary: bool = False

    @property
    def bitmap_bytes(self) -> int:
        """Width on the wire of one bitmap."""
        return 8 if self.binary else 16

    def wire_length(self, number: int) -> int:
        """Exact (fixed) or maximum (variable) wire length of a field."""
        return int(self.spec[str(number)]["max_len"])


ASCII: Final = Profile("ascii", _build_spec(binary=False), binary=False)
BINARY: Final = Profile("binary", _build_spec(binary=True), binary=True)
_PROFILES: Final[Mapping[str, Profile]] = MappingProxyType({"ascii": ASCII, "binary": BINARY})


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (``ascii`` or ``binary``). Raises ValueError."""
    try:
        return _PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(_PROFILES)}") from None
