"""Ledger fixtures: a Ledger on a fresh database, with a controllable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ledger_helpers import DATA_KEY, Clock, provision_terminal

from ledger.store import Ledger


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ledger(fresh_dsn: str, clock: Clock) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(fresh_dsn, data_key=DATA_KEY, pool_size_max=8, clock=clock)
    try:
        await provision_terminal(opened)
        yield opened
    finally:
        await opened.close()
