"""The hot path's connection pool: bounded, fair, and it replaces broken sessions."""

from __future__ import annotations

import asyncio

import pytest

from ledger.pool import ConnectionPool


def _pool(dsn: str, size: int) -> ConnectionPool:
    return ConnectionPool(dsn, size_max=size, command_timeout_s=5,
                          server_settings={"application_name": "pool-test"})


async def test_bounded_and_first_come_first_served(fresh_dsn: str) -> None:
    pool = _pool(fresh_dsn, 1)
    try:
        held = await pool.acquire(timeout_s=5)
        with pytest.raises(TimeoutError):
            await pool.acquire(timeout_s=0.05)
        order: list[int] = []

        async def waiter(n: int) -> None:
            conn = await pool.acquire(timeout_s=5)
            order.append(n)
            await asyncio.sleep(0.01)
            pool.release(conn)

        waiters = [asyncio.ensure_future(waiter(n)) for n in range(3)]
        await asyncio.sleep(0.05)
        pool.release(held)
        await asyncio.gather(*waiters)
        assert order == [0, 1, 2]
    finally:
        await pool.close()


async def test_broken_session_is_replaced(fresh_dsn: str) -> None:
    pool = _pool(fresh_dsn, 1)
    try:
        conn = await pool.acquire(timeout_s=5)
        first_pid = conn.get_server_pid()
        pool.release(conn, broken=True)
        again = await pool.acquire(timeout_s=5)
        assert again.get_server_pid() != first_pid
        assert await again.fetchval("SELECT 1") == 1
        pool.release(again)
    finally:
        await pool.close()
