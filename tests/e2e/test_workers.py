"""Several switch processes on one port (SO_REUSEPORT) with one metrics view, and what
one process sees of a terminal key another one changed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ledger.embedded import EmbeddedPostgres
from messages.fields import luhn_complete
from switch.atm import AtmClient, CardData
from switch.demo import demo_pan
from tests.conftest import new_database
from tests.e2e.conftest import atm_config
from tests.e2e.harness import SwitchProcess, card, run_cli, terminal, write_provisioning

pytestmark = pytest.mark.e2e


async def test_two_workers_share_the_port_and_the_metrics(
        pg_server: EmbeddedPostgres, template_db: str, tmp_path: Path) -> None:
    dsn = new_database(pg_server, template_db)
    path = write_provisioning(tmp_path / "p.json", [terminal("ATM00001")],
                              [card(n) for n in range(1, 9)])
    assert run_cli(["provision", str(path)], dsn).returncode == 0
    proc = SwitchProcess(dsn=dsn, workdir=tmp_path, extra_args=["--workers", "2"])
    proc.start()
    try:
        clients = [AtmClient(atm_config()) for _ in range(16)]
        await asyncio.gather(*(c.connect("127.0.0.1", proc.port) for c in clients))
        results = await asyncio.gather(*(
            c.send(c.withdrawal(CardData(demo_pan(1 + i % 8), "3012"), 100, "1234"))
            for i, c in enumerate(clients)))
        assert [r.code for r in results] == ["00"] * 16
        await asyncio.gather(*(c.close() for c in clients))
        approved = await asyncio.to_thread(proc.metric, "atm_switch_messages_total",
                                           mti="0200", response_code="00")
        assert approved == 16, "every worker's answers are counted on the one metrics port"
    finally:
        assert proc.stop() == 0
    verify = await asyncio.to_thread(run_cli, ["ledger", "verify"], dsn)
    assert verify.returncode == 0, verify.stdout


async def test_a_pin_key_changed_elsewhere_is_checked_before_a_wrong_pin_counts(
        pg_server: EmbeddedPostgres, template_db: str, tmp_path: Path) -> None:
    """Another process (a worker serving the key change, or provisioning) replaces the
    terminal's TPK while this worker still caches the old one. The ATM's next PIN block,
    under the new key, fails under the cached key: the ledger sees that key is no longer
    the terminal's and counts nothing; the worker re-reads the terminal and approves."""
    new_tpk = "0123456789ABCDEFFEDCBA9876543210"
    dsn = new_database(pg_server, template_db)
    path = write_provisioning(tmp_path / "p.json", [terminal("ATM00001")], [card(1)])
    assert run_cli(["provision", str(path)], dsn).returncode == 0
    # A long terminal cache, so the worker surely still holds the old key.
    proc = SwitchProcess(dsn=dsn, workdir=tmp_path,
                         config_text="[server]\ncache_ttl_s = 600\n")
    proc.start()
    client = AtmClient(atm_config())
    try:
        await client.connect("127.0.0.1", proc.port)
        pan = CardData(demo_pan(1), "3012")
        assert (await client.send(client.balance_inquiry(pan, "1234"))).code == "00"
        path = write_provisioning(tmp_path / "k.json", [terminal("ATM00001", tpk=new_tpk)], [])
        assert run_cli(["provision", str(path)], dsn).returncode == 0
        client.config.tpk_hex = new_tpk
        assert (await client.send(client.balance_inquiry(pan, "1234"))).code == "00"
        assert await asyncio.to_thread(proc.metric, "atm_switch_pin_key_stale_total") == 1
        # Tries were not counted: two wrong PINs then the right one (limit 3) still pass.
        assert [(await client.send(client.balance_inquiry(pan, "9999"))).code
                for _ in range(2)] == ["55", "55"]
        assert (await client.send(client.balance_inquiry(pan, "1234"))).code == "00"
        assert await asyncio.to_thread(proc.metric, "atm_switch_pin_key_stale_total") == 1, \
            "the fresh key is cached now"
    finally:
        await client.close()
        assert proc.stop() == 0
    verify = await asyncio.to_thread(run_cli, ["ledger", "verify"], dsn)
    assert verify.returncode == 0, verify.stdout


async def test_a_pan_outside_the_issuer_bins_is_15_without_a_lookup(
        pg_server: EmbeddedPostgres, template_db: str, tmp_path: Path) -> None:
    dsn = new_database(pg_server, template_db)
    path = write_provisioning(tmp_path / "p.json", [terminal("ATM00001")], [card(1)])
    assert run_cli(["provision", str(path)], dsn).returncode == 0
    ours = demo_pan(1)[:6]
    proc = SwitchProcess(dsn=dsn, workdir=tmp_path,
                         config_text=f"[business]\nissuer_bins = ['{ours}']\n")
    proc.start()
    client = AtmClient(atm_config())
    try:
        await client.connect("127.0.0.1", proc.port)
        foreign = CardData("4000000000000002", "3012")   # Luhn-valid, another BIN
        assert (await client.send(client.withdrawal(foreign, 100, "1234"))).code == "15"
        unknown = CardData(luhn_complete(ours + "999999999"), "3012")   # ours, not issued
        assert (await client.send(client.withdrawal(unknown, 100, "1234"))).code == "14"
        assert (await client.send(client.withdrawal(CardData(demo_pan(1), "3012"), 100,
                                                    "1234"))).code == "00"
    finally:
        await client.close()
        assert proc.stop() == 0
