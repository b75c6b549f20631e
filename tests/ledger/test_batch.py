"""Group commit semantics of ledger.batch (the database side is covered by every
ledger test, which now runs through it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from ledger.batch import AuthorizeBatcher
from ledger.errors import InvalidOperation, OutcomeUnknown


class FakeDb:
    def __init__(self, *, refuse: int | None = None, lose_connection: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.singles: list[int] = []
        self.refuse = refuse
        self.lose_connection = lose_connection

    async def many(self, batch: Sequence[tuple[Any, ...]]) -> list[Any]:
        await asyncio.sleep(0.01)
        items = [args[0] for args in batch]
        self.batches.append(items)
        if self.lose_connection:
            raise OutcomeUnknown("lost")
        if self.refuse in items:
            raise InvalidOperation("refused")
        return [("row", i) for i in items]

    async def one(self, args: tuple[Any, ...]) -> Any:
        await asyncio.sleep(0.01)
        self.singles.append(args[0])
        if args[0] == self.refuse:
            raise InvalidOperation("refused")
        return ("row", args[0])


async def test_alone_at_low_load_batched_under_load() -> None:
    db = FakeDb()
    sizes: list[int] = []
    commits: list[float] = []
    batcher = AuthorizeBatcher(db.many, db.one, batch_max=4, lanes=1, on_batch=sizes.append,
                               on_commit=commits.append)
    assert await batcher.submit((0,)) == ("row", 0)
    assert db.singles == [0] and db.batches == []
    rows = await asyncio.gather(*(batcher.submit((i,)) for i in range(1, 10)))
    assert rows == [("row", i) for i in range(1, 10)], "each caller gets its own row"
    assert all(len(batch) <= 4 for batch in db.batches)
    assert sum(len(b) for b in db.batches) + len(db.singles) == 10
    assert sorted(sizes) == sorted([1] * len(db.singles) + [len(b) for b in db.batches])
    # Every statement timed once, each at least the 10 ms the fake database takes.
    assert len(commits) == len(sizes) and min(commits) >= 0.009


async def test_a_refused_operation_fails_alone() -> None:
    db = FakeDb(refuse=3)
    commits: list[float] = []
    batcher = AuthorizeBatcher(db.many, db.one, batch_max=8, lanes=1, on_commit=commits.append)
    first = asyncio.ensure_future(batcher.submit((0,)))
    results = await asyncio.gather(*(batcher.submit((i,)) for i in range(1, 6)),
                                   return_exceptions=True)
    assert await first == ("row", 0)
    assert isinstance(results[2], InvalidOperation)
    assert [r for i, r in enumerate(results) if i != 2] == [("row", i) for i in (1, 2, 4, 5)]
    # Only the first operation's round trip is a commit timed: the refused batch and
    # the one-by-one runs that found the culprit are not a group commit's cycle.
    assert len(commits) == 1


async def test_a_lost_connection_leaves_every_outcome_unknown() -> None:
    db = FakeDb(lose_connection=True)
    batcher = AuthorizeBatcher(db.many, db.one, batch_max=8, lanes=1)
    first = asyncio.ensure_future(batcher.submit((0,)))
    results = await asyncio.gather(*(batcher.submit((i,)) for i in range(1, 4)),
                                   return_exceptions=True)
    await first
    assert all(isinstance(r, OutcomeUnknown) for r in results)
    assert db.singles == [0], "nothing is re-run blindly after an unknown outcome"


@pytest.mark.parametrize("lanes", [1, 3])
async def test_lanes_bound_batches_in_flight(lanes: int) -> None:
    in_flight = 0
    peak = 0

    async def many(batch: Sequence[tuple[Any, ...]]) -> list[Any]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return [None for _ in batch]

    async def one(args: tuple[Any, ...]) -> Any:
        return await many([args])

    batcher = AuthorizeBatcher(many, one, batch_max=2, lanes=lanes)
    await asyncio.gather(*(batcher.submit((i,)) for i in range(20)))
    assert peak <= lanes


async def test_a_further_lane_opens_only_when_enough_operations_wait() -> None:
    db = FakeDb()
    batcher = AuthorizeBatcher(db.many, db.one, batch_max=8, lanes=2, lane_open_min=3)
    first = asyncio.ensure_future(batcher.submit((0,)))
    await asyncio.sleep(0)                       # 0 takes the first lane, alone
    second = [asyncio.ensure_future(batcher.submit((i,))) for i in (1, 2)]
    await asyncio.sleep(0.005)                   # mid-flight: 2 waiting < 3, lane 2 stays shut
    assert db.singles == [] and db.batches == []
    third = [asyncio.ensure_future(batcher.submit((i,))) for i in (3, 4, 5)]
    rows = await asyncio.gather(first, *second, *third)
    assert rows == [("row", i) for i in range(6)]
    # 3 made three waiting: lane 2 opened with 1, 2, 3; 4 and 5 took the next free lane.
    assert db.singles == [0] and db.batches == [[1, 2, 3], [4, 5]]
    # With every lane idle the next operation goes at once, whatever lane_open_min says.
    assert await batcher.submit((6,)) == ("row", 6) and db.singles == [0, 6]


async def test_a_stalled_batch_opens_a_further_lane_for_what_waits() -> None:
    release = asyncio.Event()
    ran: list[list[int]] = []

    async def one(args: tuple[Any, ...]) -> Any:
        if args[0] == 0:
            await release.wait()        # the first statement hangs (a lock, a stuck session)
        ran.append([args[0]])
        return ("row", args[0])

    async def many(batch: Sequence[tuple[Any, ...]]) -> list[Any]:
        ran.append([args[0] for args in batch])
        return [("row", args[0]) for args in batch]

    # The stall time is far above the pause before the first check, so a loaded
    # machine cannot make that check see the second lane open already.
    batcher = AuthorizeBatcher(many, one, batch_max=32, lanes=2, lane_open_min=32,
                               lane_stall_s=0.3)
    stuck = asyncio.ensure_future(batcher.submit((0,)))
    await asyncio.sleep(0)
    behind = [asyncio.ensure_future(batcher.submit((i,))) for i in (1, 2)]
    await asyncio.sleep(0.005)
    assert ran == []                    # 2 waiting, far from 32, and no stall yet
    # Past the stall time the second lane takes them, though the first still hangs.
    assert await asyncio.wait_for(asyncio.gather(*behind), 5.0) == [("row", 1), ("row", 2)]
    assert ran == [[1, 2]] and not stuck.done()
    release.set()
    assert await stuck == ("row", 0)
    assert ran == [[1, 2], [0]]


async def test_no_stall_timer_while_the_lane_keeps_up() -> None:
    # Batches that finish in time never open the second lane below lane_open_min.
    db = FakeDb()
    batcher = AuthorizeBatcher(db.many, db.one, batch_max=32, lanes=2, lane_open_min=32,
                               lane_stall_s=10.0)
    first = asyncio.ensure_future(batcher.submit((0,)))
    await asyncio.sleep(0)
    rows = await asyncio.gather(first, *(batcher.submit((i,)) for i in range(1, 6)))
    assert rows == [("row", i) for i in range(6)]
    assert db.singles == [0] and db.batches == [[1, 2, 3, 4, 5]]
