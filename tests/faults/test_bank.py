"""The bank test: money is conserved through crashes, restarts and a hostile network.

Simulated ATMs (tests/faults/bank.py) withdraw, ask balances and reverse over
real TCP through a fault proxy, while the switch is killed with SIGKILL and
restarted several times, PostgreSQL (a server of this test's own) is
crash-restarted in immediate mode, and the proxy drops, stalls, duplicates,
splits and cuts. After healing, every card's balance must equal its opening
balance minus what the ATMs were approved and did not reverse, every approval
must have exactly one journal, nothing may be posted or reversed twice, and
`atm-switch ledger verify` must be clean. Any violation fails with the history
that led to it.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator

import pytest

from ledger.embedded import EmbeddedPostgres
from switch.demo import demo_pan
from tests.e2e.harness import SwitchProcess, card, run_cli, terminal
from tests.faults.bank import (
    BankConfig,
    SimAtm,
    Violation,
    check_balances,
    check_ledger,
    check_repeats,
    final_balances,
    merge_counts,
    read_ledger,
    summarize,
)
from tests.faults.conftest import migrated_database, provision
from tests.faults.proxy import FaultPlan, FaultProxy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Another seed: BANK_SEED=n pytest tests/faults/test_bank.py
SEED = int(os.environ.get("BANK_SEED", "20261124"))
ATMS = 8
CARDS = 6
OPENING = 2_000_000
RUN_S = 48.0
SETTLE_S = 40.0
PLAN = FaultPlan(cut=0.01, drop=0.02, delay=0.015, duplicate=0.03, split=0.08, delay_s=1.4)

CONFIG = """
[server]
shutdown_grace_s = 2.0

[database]
pool_size_max = 8
"""


@pytest.fixture(scope="module")
def bank(dedicated_pg: EmbeddedPostgres,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SwitchProcess, str]]:
    workdir = tmp_path_factory.mktemp("bank")
    dsn = migrated_database(dedicated_pg, "bank")
    terminals = [terminal(f"ATM{i:05d}") for i in range(1, ATMS + 2)]
    cards = [card(100 + n, balance=OPENING, daily_limit=10**9, daily_count=10**6,
                  transaction_limit=10**9) for n in range(CARDS)]
    provision(dsn, workdir, terminals, cards)
    proc = SwitchProcess(dsn=dsn, workdir=workdir, config_text=CONFIG)
    proc.start()
    try:
        yield proc, dsn
    finally:
        proc.kill()


class Faults:
    """The fault schedule, run alongside the workload; keeps a timeline."""

    def __init__(self, proc: SwitchProcess, pg: EmbeddedPostgres, proxy: FaultProxy,
                 t0: float, seed: int) -> None:
        self.proc, self.pg, self.proxy, self.t0 = proc, pg, proxy, t0
        self.rng = random.Random(seed)
        self.timeline: list[str] = []

    def note(self, text: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.t0:7.3f}s {text}")

    async def at(self, offset_s: float) -> None:
        await asyncio.sleep(max(0.0, self.t0 + offset_s - time.monotonic()))

    async def kill_switch(self) -> None:
        self.note("kill -9 the switch")
        self.proc.kill()
        await asyncio.sleep(0.3 + self.rng.random())
        await asyncio.to_thread(self.proc.start)
        self.note("switch restarted and ready")

    async def restart_postgres(self) -> None:
        dsn = self.pg.dsn
        self.note("PostgreSQL: immediate stop")
        await asyncio.to_thread(self.pg.restart_immediate)
        assert self.pg.dsn == dsn, "PostgreSQL came back on another port"
        self.note("PostgreSQL restarted (WAL recovery done)")

    async def run(self) -> None:
        self.proxy.plan = PLAN
        self.note(f"proxy faults on: {PLAN}")
        await self.at(6)
        await self.kill_switch()
        await self.at(14)
        await self.restart_postgres()
        await self.at(21)
        await self.kill_switch()
        await self.at(27)
        self.note("proxy: cut every connection")
        self.proxy.cut_all()
        await self.at(31)
        await self.restart_postgres()
        await self.at(37)
        await self.kill_switch()
        await self.at(42)
        self.note("proxy: cut every connection")
        self.proxy.cut_all()


async def test_bank_money_is_conserved_under_faults(
        bank: tuple[SwitchProcess, str], dedicated_pg: EmbeddedPostgres) -> None:
    proc, dsn = bank
    started = time.monotonic()
    pans = [demo_pan(100 + n) for n in range(CARDS)]
    proxy = FaultProxy("127.0.0.1", proc.port, seed=SEED)
    await proxy.start()
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    config = BankConfig(cards=CARDS, opening=OPENING, host="127.0.0.1", port=proxy.port,
                        seed=SEED, run_s=RUN_S, settle_s=SETTLE_S)
    atms = [SimAtm(f"ATM{i:05d}", i, config, pans, t0) for i in range(1, ATMS + 1)]
    for sim in atms:
        sim.stop_at = loop.time() + RUN_S
        sim.give_up_at = loop.time() + RUN_S + SETTLE_S
    faults = Faults(proc, dedicated_pg, proxy, t0, SEED)
    try:
        fault_task = asyncio.ensure_future(faults.run())
        workload = asyncio.gather(*(sim.run() for sim in atms))
        await asyncio.wait_for(fault_task, RUN_S + 30)
        proxy.heal()
        faults.note("healed: proxy passes everything; ATMs settle their reversals")
        await asyncio.wait_for(workload, RUN_S + SETTLE_S + 30)
        faults.note("workload done")
    finally:
        for sim in atms:
            await sim.close()
        await proxy.stop()
    final = await final_balances(proc.port, pans, f"ATM{ATMS + 1:05d}")
    ops = [op for sim in atms for op in sim.withdrawals]
    inquiries = merge_counts(sim.inquiries for sim in atms)

    rows = await asyncio.to_thread(read_ledger, dsn)
    violations: list[Violation] = []
    violations += check_repeats(ops)
    balance_violations, table = check_balances(ops, CARDS, OPENING, final)
    violations += balance_violations
    violations += check_ledger(ops, rows)
    assert proc.stop() == 0, proc.logs()[-3000:]
    verify = await asyncio.to_thread(run_cli, ["ledger", "verify"], dsn)

    report = [
        f"bank test: {ATMS} ATMs, {CARDS} cards, seed {SEED}, "
        f"{time.monotonic() - started:.1f}s, switch started {proc.starts} times",
        summarize(ops, inquiries),
        f"proxy: {dict(sorted(proxy.stats.items()))}",
        "faults:", *(f"  {line}" for line in faults.timeline),
        "balances:", *(f"  {line}" for line in table),
        f"ledger verify: exit {verify.returncode}",
    ]
    print("\n".join(report))
    problems = [v.render() for v in violations]
    if verify.returncode != 0:
        problems.append("ledger verify failed:\n" + verify.stdout[-3000:] + verify.stderr[-2000:])
    assert not problems, "\n".join(report + problems)[:60_000]
    # The run must have exercised what it claims to.
    assert sum(1 for op in ops if op.code == "00") > 100
    assert any(op.reversal == "timeout" and op.reversal_acked for op in ops)
    assert any(op.reversal == "partial" and op.reversal_acked for op in ops)
    assert proc.starts >= 4

