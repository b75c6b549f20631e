"""The commit whose outcome the switch cannot learn.

A byte-level proxy sits between the switch and PostgreSQL. When the switch
sends the ledger call for one chosen withdrawal (its idempotency key names the
terminal UNKN0001), the proxy lets the call through, so PostgreSQL runs it and
commits, then drops the answer, cuts every database connection and refuses
new ones for a while (1 s, well within the switch's 5 s deadline, and 9 s,
beyond it): until the database is back, the switch cannot know whether the
withdrawal was posted.

The ATM then behaves as ATMs do: an answer is final (00 dispenses, anything
else does not); no answer means a 0420 reversal, repeated until acknowledged.
Whatever the switch does, the card must end up charged exactly what the ATM
dispensed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.embedded import EmbeddedPostgres
from messages.codec import IsoMessage
from switch.atm import AtmError, CardData
from switch.demo import demo_pan
from tests.conftest import new_database
from tests.e2e.harness import SwitchProcess, card, terminal
from tests.faults.bank import ledger_balance
from tests.faults.conftest import atm, provision

pytestmark = [pytest.mark.e2e]

TERMINAL = "UNKN0001"
MARKER = f"|{TERMINAL}|".encode()   # inside the ledger's idempotency key text
# Database outages after the lost answer: well within the switch's 5 s deadline,
# and longer than it.
BLACKOUTS_S = (1.0, 9.0)
ATM_TIMEOUT_S = 20.0
OPENING = 100_000
AMOUNT = 5_000


class BlackoutProxy:
    """TCP proxy to PostgreSQL that, once, swallows the answer to the first call
    carrying `marker` and then makes the database unreachable for `blackout_s`."""

    def __init__(self, upstream_port: int, marker: bytes, blackout_s: float) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.blackout_s = blackout_s
        self.fired_at: float | None = None
        self.refuse_until = 0.0
        self.port = 0
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._cut_all()

    def _cut_all(self) -> None:
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.refuse_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.upstream_port), 5.0)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        armed = asyncio.Event()
        tasks = [asyncio.ensure_future(self._to_server(reader, up_writer, armed)),
                 asyncio.ensure_future(self._to_client(up_reader, writer, armed))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.transport.abort()
            up_writer.transport.abort()
            self._links.discard(link)

    async def _to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         armed: asyncio.Event) -> None:
        tail = b""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if self.fired_at is None and self.marker in tail + data:
                armed.set()
            tail = data[-len(self.marker):]
            writer.write(data)
            await writer.drain()

    async def _to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         armed: asyncio.Event) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if armed.is_set() and self.fired_at is None:
                # PostgreSQL has run (and committed) the call: its answer vanishes,
                # and so does the database, for a while.
                self.fired_at = time.monotonic()
                self.refuse_until = self.fired_at + self.blackout_s
                self._cut_all()
                return
            writer.write(data)
            await writer.drain()


@pytest.fixture
def unknown_commit_setup(pg_server: EmbeddedPostgres, template_db: str,
                         tmp_path: Path) -> Iterator[tuple[str, Path]]:
    dsn = new_database(pg_server, template_db)
    provision(dsn, tmp_path, [terminal(TERMINAL), terminal("ATM00001")],
              [card(400, balance=OPENING)])
    yield dsn, tmp_path


async def settle_as_an_atm(proc: SwitchProcess, original: IsoMessage) -> bool:
    """0420, then 0421 until acknowledged (bounded): True when acknowledged."""
    client = atm(TERMINAL)
    advice = client.reversal(original)
    msg = advice
    deadline = time.monotonic() + 40.0
    try:
        while time.monotonic() < deadline:
            try:
                if client._writer is None or client._writer.is_closing():
                    await client.connect("127.0.0.1", proc.port)
                ex = await client.send(msg, timeout_s=5.0)
                if ex.code == "00":
                    return True
            except AtmError:
                await client.close()
                client._writer = None
            await asyncio.sleep(0.5)
            msg = client.repeat_of(advice)
    finally:
        await client.close()
    return False


async def final_balance(proc: SwitchProcess, card_: CardData) -> int | None:
    client = atm("ATM00001")
    await client.connect("127.0.0.1", proc.port)
    try:
        for _ in range(40):
            ex = await client.send(client.balance_inquiry(card_, "1234"), timeout_s=10.0)
            if ex.code == "00":
                return ledger_balance(ex.response)
            await asyncio.sleep(0.5)
    finally:
        await client.close()
    return None


@pytest.mark.slow
@pytest.mark.parametrize("blackout_s", BLACKOUTS_S)
async def test_a_commit_of_unknown_outcome_never_charges_for_cash_not_dispensed(
        pg_server: EmbeddedPostgres, unknown_commit_setup: tuple[str, Path],
        blackout_s: float) -> None:
    dsn, workdir = unknown_commit_setup
    proxy = BlackoutProxy(pg_server.port, MARKER, blackout_s)
    await proxy.start()
    proxied = dsn.replace(f"127.0.0.1:{pg_server.port}/", f"127.0.0.1:{proxy.port}/")
    assert proxied != dsn
    proc = SwitchProcess(dsn=proxied, workdir=workdir)
    await asyncio.to_thread(proc.start)
    card_ = CardData(demo_pan(400), "3012")
    try:
        client = atm(TERMINAL)
        await client.connect("127.0.0.1", proc.port)
        withdrawal = client.withdrawal(card_, AMOUNT, "1234")
        try:
            ex = await client.send(withdrawal, timeout_s=ATM_TIMEOUT_S)
            seen = ex.code
        except AtmError:
            seen = None
        finally:
            await client.close()
        assert proxy.fired_at is not None, "the blackout never happened: the test proved nothing"
        if seen is None:
            acked = await settle_as_an_atm(proc, withdrawal)
            assert acked, "the reversal of the unanswered withdrawal was never acknowledged"
        dispensed = AMOUNT if seen == "00" else 0
        await asyncio.sleep(max(0.0, proxy.refuse_until - time.monotonic()))
        balance = await final_balance(proc, card_)
        assert balance == OPENING - dispensed, (
            f"the ATM saw {seen or 'no answer'} and dispensed {dispensed}; the card was "
            f"charged {None if balance is None else OPENING - balance}")
    finally:
        proc.stop()
        await proxy.stop()
