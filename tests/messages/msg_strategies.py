"""Hypothesis strategies for messages tests (imported by the test modules)."""

from __future__ import annotations

from hypothesis import strategies as st

from messages.codec import IsoMessage
from messages.profiles import FIELD_DEFS, FieldDef, FieldKind

DIGITS = "0123456789"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
HEX = "0123456789ABCDEF"


def luhn_complete(body: str) -> str:
    """``body`` plus the Luhn check digit."""
    total = 0
    for index, char in enumerate(reversed(body)):
        value = int(char)
        if index % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return body + str((10 - total % 10) % 10)


def text(alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size)


def field_value(d: FieldDef) -> st.SearchStrategy[str]:
    """Any value the codec must accept for field ``d``."""
    low = d.length if d.prefix == 0 else 0
    if d.kind is FieldKind.BINARY:
        return st.binary(min_size=low, max_size=d.length).map(lambda b: b.hex().upper())
    alphabet = {
        FieldKind.NUMERIC: DIGITS,
        FieldKind.TEXT: PRINTABLE,
        FieldKind.TRACK: DIGITS + "=DF",
    }[d.kind]
    return text(alphabet, low, d.length)


@st.composite
def iso_messages(draw: st.DrawFn) -> IsoMessage:
    numbers = draw(st.sets(st.sampled_from(sorted(FIELD_DEFS)), max_size=12))
    mti = draw(text(DIGITS, 4, 4))
    return IsoMessage(mti, {n: draw(field_value(FIELD_DEFS[n])) for n in numbers})


pans = st.builds(
    luhn_complete, st.integers(min_value=11, max_value=18).flatmap(lambda n: text(DIGITS, n, n))
)
