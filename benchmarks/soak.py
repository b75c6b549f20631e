"""Soak mode: the bank workload of the fault suite, for as long as you like.

    python -m benchmarks.soak --duration-s 1800 --seed 7

Runs from the repository root (it reuses the fault suite's workload in
tests/faults: simulated ATMs, the fault proxy and the checker). It starts a
PostgreSQL of its own in a temporary directory (or --workdir), a real
`atm-switch serve` process, and simulated ATMs that withdraw, ask balances,
reverse and repeat through the fault proxy, while the switch is killed with
SIGKILL and PostgreSQL is crash-restarted at intervals. Every minute it prints
throughput, answers and the switch's resident memory. At the end it heals,
settles every reversal, and checks what the bank test checks (balances as the
ATMs saw them, one journal per approval, nothing posted or reversed twice,
`atm-switch ledger verify`). Exit status 0 when clean, 1 on any violation.

Everything stays on 127.0.0.1 and stops by itself after --duration-s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ledger.embedded import EmbeddedPostgres
from ledger.migrations import upgrade
from switch.demo import demo_pan
from tests.e2e.harness import SwitchProcess, card, run_cli, terminal, write_provisioning
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
from tests.faults.proxy import NO_FAULTS, FaultPlan, FaultProxy

PLAN = FaultPlan(cut=0.005, drop=0.01, delay=0.01, duplicate=0.02, split=0.05, delay_s=1.4)
SETTLE_S = 60.0
REPORT_EVERY_S = 60.0
OPENING = 10**11          # minor units: enough that long soaks test conservation, not 51s
OPS_PER_ATM_PER_S_MAX = 200


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=600.0, help="workload time (s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--atms", type=int, default=8)
    p.add_argument("--cards", type=int, default=16)
    p.add_argument("--kill-every-s", type=float, default=90.0,
                   help="SIGKILL the switch about this often (0: never)")
    p.add_argument("--pg-restart-every-s", type=float, default=300.0,
                   help="crash-restart PostgreSQL about this often (0: never)")
    p.add_argument("--no-network-faults", action="store_true",
                   help="the proxy passes everything (process faults only)")
    p.add_argument("--workdir", type=Path, help="keep state here (default: a temp dir)")
    args = p.parse_args(argv)
    if not 0 < args.duration_s <= 7 * 24 * 3600:
        p.error("--duration-s must be within 0..604800")
    if not (1 <= args.atms <= 500 and 1 <= args.cards <= 10_000):
        p.error("--atms 1..500, --cards 1..10000")
    return args


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.timeline: list[str] = []
        self.pg = EmbeddedPostgres(workdir / "pg")
        self.proc: SwitchProcess | None = None

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.t0:9.1f}s {text}"
        self.timeline.append(line)
        print(line, flush=True)

    def setup(self) -> tuple[str, list[str]]:
        self.pg.start()
        self.pg.ensure_database("soak")
        dsn = self.pg.dsn_for("soak")
        upgrade(dsn)
        pans = [demo_pan(500 + n) for n in range(self.args.cards)]
        terminals = [terminal(f"SOAK{i:04d}") for i in range(1, self.args.atms + 2)]
        cards = [card(500 + n, balance=OPENING, daily_limit=10**15, daily_count=10**9,
                      transaction_limit=10**9) for n in range(self.args.cards)]
        path = write_provisioning(self.workdir / "provision.json", terminals, cards)
        result = run_cli(["provision", str(path)], dsn)
        if result.returncode != 0:
            raise SystemExit(f"provisioning failed: {result.stderr[-2000:]}")
        self.proc = SwitchProcess(dsn=dsn, workdir=self.workdir,
                                  config_text="[server]\nshutdown_grace_s = 2.0\n")
        self.proc.start()
        return dsn, pans

    async def faults(self, stop_at: float) -> None:
        assert self.proc is not None
        next_kill = self._next(self.args.kill_every_s)
        next_pg = self._next(self.args.pg_restart_every_s)
        while time.monotonic() < stop_at:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now >= next_kill:
                self.note("kill -9 the switch")
                self.proc.kill()
                await asyncio.sleep(0.3 + self.rng.random())
                await asyncio.to_thread(self.proc.start)
                self.note(f"switch restarted (start #{self.proc.starts})")
                next_kill = self._next(self.args.kill_every_s)
            elif now >= next_pg:
                self.note("PostgreSQL immediate restart")
                await asyncio.to_thread(self.pg.restart_immediate)
                self.note("PostgreSQL back")
                next_pg = self._next(self.args.pg_restart_every_s)

    def _next(self, every_s: float) -> float:
        if every_s <= 0:
            return float("inf")
        return time.monotonic() + every_s * (0.5 + self.rng.random())

    async def monitor(self, atms: list[SimAtm], stop_at: float) -> None:
        from tests.faults.conftest import rss_kib

        last = 0
        while time.monotonic() < stop_at:
            await asyncio.sleep(min(REPORT_EVERY_S, max(0.1, stop_at - time.monotonic())))
            done = sum(len(a.withdrawals) for a in atms) + sum(
                sum(a.inquiries.values()) for a in atms)
            rss = "?"
            if self.proc is not None and self.proc.proc is not None:
                try:
                    rss = f"{rss_kib(self.proc) // 1024} MiB"
                except (OSError, AssertionError):
                    rss = "restarting"
            self.note(f"{done - last} operations in the last period, {done} in all; "
                      f"switch RSS {rss}")
            last = done

    async def run(self) -> int:
        dsn, pans = await asyncio.to_thread(self.setup)
        assert self.proc is not None
        proxy = FaultProxy("127.0.0.1", self.proc.port, seed=self.args.seed,
                           plan=NO_FAULTS if self.args.no_network_faults else PLAN)
        await proxy.start()
        duration = self.args.duration_s
        config = BankConfig(cards=self.args.cards, opening=OPENING, host="127.0.0.1",
                            port=proxy.port, seed=self.args.seed, run_s=duration,
                            settle_s=SETTLE_S,
                            ops_max=int(duration * OPS_PER_ATM_PER_S_MAX) + 1)
        loop = asyncio.get_running_loop()
        atms = [SimAtm(f"SOAK{i:04d}", i, config, pans, self.t0)
                for i in range(1, self.args.atms + 1)]
        for sim in atms:
            sim.stop_at = loop.time() + duration
            sim.give_up_at = loop.time() + duration + SETTLE_S
        stop_at = time.monotonic() + duration
        self.note(f"soak: {self.args.atms} ATMs, {self.args.cards} cards, {duration:.0f}s, "
                  f"seed {self.args.seed}")
        try:
            workload = asyncio.gather(*(sim.run() for sim in atms))
            await asyncio.gather(self.faults(stop_at), self.monitor(atms, stop_at))
            proxy.heal()
            self.note("healed; settling reversals")
            await asyncio.wait_for(workload, SETTLE_S + 60)
        finally:
            for sim in atms:
                await sim.close()
            await proxy.stop()
        return await self.check(dsn, pans, atms, proxy)

    async def check(self, dsn: str, pans: list[str], atms: list[SimAtm],
                    proxy: FaultProxy) -> int:
        assert self.proc is not None
        final = await final_balances(self.proc.port, pans, f"SOAK{self.args.atms + 1:04d}")
        ops = [op for sim in atms for op in sim.withdrawals]
        rows = await asyncio.to_thread(read_ledger, dsn)
        violations: list[Violation] = check_repeats(ops)
        balance_violations, table = check_balances(ops, self.args.cards, OPENING, final)
        violations += balance_violations + check_ledger(ops, rows)
        self.proc.stop()
        verify = await asyncio.to_thread(run_cli, ["ledger", "verify"], dsn)
        print(summarize(ops, merge_counts(sim.inquiries for sim in atms)))
        print(f"proxy: {dict(sorted(proxy.stats.items()))}")
        print("\n".join(table))
        print(f"ledger verify: exit {verify.returncode}")
        for v in violations[:50]:
            print(v.render())
        if violations or verify.returncode != 0:
            print(f"SOAK FAILED: {len(violations)} violations", file=sys.stderr)
            return 1
        print("soak clean")
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="atm-switch-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    soak = Soak(args, workdir)
    try:
        return asyncio.run(soak.run())
    finally:
        if soak.proc is not None:
            soak.proc.kill()
        soak.pg.stop(mode="fast")
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
