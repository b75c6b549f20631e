"""A small connection pool for the hot path.

Why not asyncpg's Pool: measured on the 2-core machine, its acquire/release
cycle cost ~35 µs of client CPU per call (shielded release task, timeout
contexts) and its default release ran an extra reset round trip. Our
sessions never change state, so a pool can be a stack of slots, each
holding a live connection or None (connect on demand), with a FIFO of
waiters that released slots are handed to directly. A connection that
breaks, or comes back inside a transaction, is terminated and its slot
refilled lazily. Bounded: at most ``size_max`` connections, and acquiring
waits at most ``acquire_timeout_s``.

Raises asyncpg/OS errors (connect failures) and TimeoutError; the store
translates them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping

import asyncpg

CLOSE_TIMEOUT_S = 5.0


class ConnectionPool:
    def __init__(self, dsn: str, *, size_max: int, command_timeout_s: float,
                 server_settings: Mapping[str, str]) -> None:
        assert size_max >= 1
        self._dsn = dsn
        self._command_timeout_s = command_timeout_s
        self._server_settings = dict(server_settings)
        # Free slots (most recently used last); None = not connected yet.
        self._idle: list[asyncpg.Connection | None] = [None] * size_max
        # Waiting acquirers, served first come first served: a released slot is
        # handed straight to the oldest waiter, so busy callers cannot starve it.
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._all: set[asyncpg.Connection] = set()
        self._closed = False

    @property
    def dsn(self) -> str:
        return self._dsn

    async def open(self, warm: int = 1) -> None:
        """Connect ``warm`` sessions now, so that an unreachable database fails early."""
        taken = [await self.acquire(timeout_s=CLOSE_TIMEOUT_S) for _ in range(warm)]
        for conn in taken:
            self.release(conn)

    async def acquire(self, *, timeout_s: float) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("pool is closed")
        if self._idle and not self._waiters:
            slot = self._idle.pop()
        else:
            waiter: asyncio.Future[asyncpg.Connection | None] = (
                asyncio.get_running_loop().create_future())
            self._waiters.append(waiter)
            try:
                slot = await asyncio.wait_for(waiter, timeout_s)
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._put(waiter.result())    # handed over as we gave up: pass it on
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        if slot is not None and not slot.is_closed():
            return slot
        if slot is not None:
            self._all.discard(slot)
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self._dsn, timeout=timeout_s, command_timeout=self._command_timeout_s,
                server_settings=self._server_settings)
        except BaseException:
            self._put(None)
            raise
        self._all.add(conn)
        return conn

    def release(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        if broken or self._closed or conn.is_closed() or conn.is_in_transaction():
            self._all.discard(conn)
            conn.terminate()
            self._put(None)
            return
        self._put(conn)

    def _put(self, slot: asyncpg.Connection | None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._idle.append(slot)

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            try:
                await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_S)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
        self._all.clear()

    @contextlib.asynccontextmanager
    async def connection(self, *, timeout_s: float) -> AsyncIterator[asyncpg.Connection]:
        """``async with pool.connection(timeout_s=…) as conn``: broken on any non-SQL error."""
        conn = await self.acquire(timeout_s=timeout_s)
        broken = True
        try:
            yield conn
            broken = False
        except asyncpg.PostgresError as exc:
            # An SQL error leaves the session usable, unless the server is going away.
            broken = isinstance(exc, asyncpg.exceptions.OperatorInterventionError)
            raise
        finally:
            self.release(conn, broken=broken)
