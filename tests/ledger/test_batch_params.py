"""A group commit's columns travel as joined texts (ledger.store.batch_columns) and
must come back in PostgreSQL as exactly the arrays the function takes."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidOperation
from ledger.store import _BATCH_TYPES, _batch_param, batch_columns

_SELECT = "SELECT " + ", ".join(
    _batch_param(i, t) for i, t in enumerate(_BATCH_TYPES, start=1))

_texts = st.one_of(st.none(), st.just(""), st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12))
_moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1),
                        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]))
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "smallint": st.one_of(st.none(), st.integers(-2, 20)),
    "integer": st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    "bigint": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    "text": _texts,
    "bytea": st.one_of(st.none(), st.binary(max_size=32)),
    "date": st.one_of(st.none(), st.dates(date(2000, 1, 1), date(2099, 12, 31))),
    "timestamptz": st.one_of(st.none(), _moments),
}
_rows = st.tuples(*(_VALUES[t] for t in _BATCH_TYPES))


def _round_trip(dsn: str, batch: list[tuple[Any, ...]]) -> list[list[Any]]:
    async def run() -> list[list[Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(_SELECT, *batch_columns(batch))
        finally:
            await conn.close()
        assert row is not None
        return [list(value) for value in row.values()]

    return asyncio.run(run())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_rows, min_size=1, max_size=9))
def test_every_column_comes_back_as_the_array_it_was(pg_dsn: str,
                                                     batch: list[tuple[Any, ...]]) -> None:
    assert _round_trip(pg_dsn, batch) == [list(column) for column in zip(*batch, strict=True)]


def test_one_empty_text_is_an_array_of_one_empty_text(pg_dsn: str) -> None:
    # string_to_array('') is an empty array: the marker keeps the element.
    row = tuple("" if t == "text" else None for t in _BATCH_TYPES)
    columns = _round_trip(pg_dsn, [row])
    assert all(column == [""] if t == "text" else column == [None]
               for t, column in zip(_BATCH_TYPES, columns, strict=True))


@pytest.mark.parametrize("bad", ["\x1f", "a\x1eb", "\x1d", "\n"])
def test_a_text_with_a_control_character_is_refused(bad: str) -> None:
    row = tuple(bad if t == "text" else None for t in _BATCH_TYPES)
    with pytest.raises(InvalidOperation):
        batch_columns([row])
