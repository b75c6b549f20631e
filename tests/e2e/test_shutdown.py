"""Graceful shutdown with requests in flight: nothing approved without a journal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ledger.embedded import EmbeddedPostgres
from switch.atm import AtmClient, AtmError, CardData
from switch.demo import demo_pan
from tests.conftest import new_database
from tests.e2e.conftest import atm_config
from tests.e2e.harness import SwitchProcess, card, run_cli, terminal, write_provisioning

pytestmark = pytest.mark.e2e


async def test_sigterm_with_requests_in_flight(pg_server: EmbeddedPostgres, template_db: str,
                                               tmp_path: Path) -> None:
    dsn = new_database(pg_server, template_db)
    cards = [card(n, balance=1_000_000) for n in range(1, 21)]
    path = write_provisioning(tmp_path / "p.json", [terminal("ATM00001")], cards)
    assert run_cli(["provision", str(path)], dsn).returncode == 0
    proc = SwitchProcess(dsn=dsn, workdir=tmp_path)
    proc.start()
    clients = [AtmClient(atm_config(), stan_start=1000 * i + 1) for i in range(10)]
    for client in clients:
        await client.connect("127.0.0.1", proc.port)
    sent = []
    for i, client in enumerate(clients):
        for j in range(10):
            sent.append((client, client.withdrawal(
                CardData(demo_pan(1 + (i * 10 + j) % 20), "3012"), 100, "1234")))
    tasks = [asyncio.ensure_future(c.send(m, timeout_s=20)) for c, m in sent]
    await asyncio.sleep(0.05)
    code = await asyncio.to_thread(proc.stop)
    assert code == 0, proc.logs()[-3000:]
    answered = []
    for task in tasks:
        try:
            answered.append(await task)
        except AtmError:
            pass
    for client in clients:
        await client.close()
    approved = [ex for ex in answered if ex.code == "00"]
    assert all(ex.code in ("00", "91") for ex in answered)
    # Every answered approval is in the ledger, exactly once: after a restart a
    # repeat of each replays the same approval code.
    proc.start()
    try:
        checker = AtmClient(atm_config(), stan_start=900_000)
        await checker.connect("127.0.0.1", proc.port)
        try:
            for ex in approved:
                again = await checker.send(checker.repeat_of(ex.request))
                assert again.code == "00"
                assert again.response.get(38) == ex.response.get(38)
        finally:
            await checker.close()
    finally:
        proc.stop()
    verify = await asyncio.to_thread(run_cli, ["ledger", "verify"], dsn)
    assert verify.returncode == 0, verify.stdout + verify.stderr
