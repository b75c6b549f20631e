"""Ledger-only benchmark: withdrawals/s through the ledger API vs ``pgbench -N``.

On one embedded PostgreSQL, in one run: the ledger path (one PL/pgSQL call per
withdrawal under SERIALIZABLE, synchronous commit on) at 8 and 32 concurrent
clients, then pgbench's simple-update workload (``-N``: update one account,
select it, insert a history row, at READ COMMITTED) at the same client counts.
Prints one JSON line with both rates, their ratio and the ledger's retry rate.

    python -m benchmarks.ledger_bench [--duration-s 10] [--cards 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ledger.embedded import EmbeddedPostgres
from ledger.migrations import upgrade
from ledger.model import (
    AccountSpec,
    CardSpec,
    IdempotencyKey,
    Operation,
    OpKind,
    Outcome,
    TerminalSpec,
)
from ledger.store import Ledger

CLIENT_COUNTS = (8, 32)
DATA_KEY = b"ledger-bench-data-key-not-secret"
CURRENCY = "840"
ACQUIRER = "100001"
PGBENCH_TIMEOUT_S = 600


@dataclass
class LedgerRun:
    clients: int
    tps: float
    operations: int
    retries: int
    declined: int
    client_cpu_us_per_op: float = 0.0
    server_cpu_us_per_op: float = 0.0

    @property
    def cpu_us_per_op(self) -> float:
        return self.client_cpu_us_per_op + self.server_cpu_us_per_op

    @property
    def retry_rate(self) -> float:
        return self.retries / self.operations if self.operations else 0.0


def _pan(n: int) -> str:
    body = f"400000{n:09d}"
    total = 0
    for i, ch in enumerate(reversed(body)):
        digit = int(ch) * (2 if i % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return body + str((10 - total % 10) % 10)


async def _provision(ledger: Ledger, cards: int, terminals: int) -> list[int]:
    for t in range(terminals):
        await ledger.upsert_terminal(TerminalSpec(
            terminal_id=f"BENCH{t:03d}", acquirer_id=ACQUIRER, currency=CURRENCY,
            cash_opening=10**12, sign_on_required=False))
    sem = asyncio.Semaphore(4)

    async def one(n: int) -> int:
        async with sem:
            return await ledger.upsert_card(CardSpec(
                pan=_pan(n), expiry="9912", pvv="1234", pvki="1",
                accounts=[AccountSpec("20", f"bench-{n}", CURRENCY, 10**12, 0, True)]))

    return list(await asyncio.gather(*(one(n) for n in range(cards))))


@dataclass(frozen=True)
class _Share:
    """One worker process's part of a run (pgbench's -j threads have the same role)."""

    dsn: str
    card_ids: list[int]
    clients: list[int]          # global client numbers: client n drives terminal BENCHn
    duration_s: float
    start_at: float             # wall clock: all workers measure the same window
    run: int                    # keeps STANs of successive runs apart


def _worker(share: _Share) -> tuple[int, int, int, int]:
    """Process entry: (operations, retries, declined) inside the measured window, and
    every operation including the warm-up (for CPU per operation)."""
    try:
        import uvloop

        return uvloop.run(_worker_async(share))
    except ImportError:
        return asyncio.run(_worker_async(share))


async def _worker_async(share: _Share) -> tuple[int, int, int, int]:
    ledger = await Ledger.open(share.dsn, data_key=DATA_KEY, pool_size_max=len(share.clients),
                               retries_max=20)
    counted = declined = every = 0
    retries_at_start = 0
    stop_at = share.start_at + share.duration_s
    dt = datetime.now(UTC).strftime("%m%d%H%M%S")

    async def client(n: int) -> None:
        nonlocal counted, declined, every
        terminal = f"BENCH{n:03d}"
        rng = random.Random(n * 1000 + share.run)
        for i in itertools.count(share.run * 300_000):
            now = time.time()
            if now >= stop_at:
                return
            stan = f"{i % 1_000_000:06d}"
            result = await ledger.authorize(Operation(
                kind=OpKind.WITHDRAWAL, key=IdempotencyKey(ACQUIRER, terminal, stan, dt),
                card_id=rng.choice(share.card_ids), request_digest=i.to_bytes(8, "big"),
                from_account_type="00", to_account_type="00", amount=2_000,
                currency=CURRENCY, rrn=f"{n:04d}{i:08d}", pin_check="ok"))
            every += 1
            if now >= share.start_at:   # before: warm-up (connections, prepared statements)
                counted += 1
                declined += result.outcome is not Outcome.APPROVED

    async def mark_retries() -> None:
        nonlocal retries_at_start
        await asyncio.sleep(max(0.0, share.start_at - time.time()))
        retries_at_start = ledger.retries_total

    try:
        await asyncio.gather(mark_retries(), *(client(n) for n in share.clients))
        return counted, ledger.retries_total - retries_at_start, declined, every
    finally:
        await ledger.close()


def _ledger_run(server: EmbeddedPostgres, dsn: str, card_ids: list[int], clients: int,
                duration_s: float, jobs: int, run: int) -> LedgerRun:
    cpu_before = _cpu_s(server)
    start_at = time.time() + 3.0 + jobs * 0.5   # process start-up and warm-up first
    shares = [_Share(dsn, card_ids[j::jobs], list(range(j, clients, jobs)), duration_s,
                     start_at, run) for j in range(jobs)]
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(jobs)
    try:
        parts = pool.map(_worker, shares)
    finally:
        pool.close()
        pool.join()
    operations = sum(p[0] for p in parts)
    client, db = _cpu_s(server)
    every = sum(p[3] for p in parts)
    return LedgerRun(clients, operations / duration_s, operations, sum(p[1] for p in parts),
                     sum(p[2] for p in parts), (client - cpu_before[0]) * 1e6 / every,
                     (db - cpu_before[1]) * 1e6 / every)


def _cpu_s(server: EmbeddedPostgres) -> tuple[float, float]:
    """CPU seconds used so far by our finished children (ledger workers, pgbench) and by
    the server (postmaster, its reaped backends and its live children): a measure that
    does not depend on what else the machine is doing."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = usage.ru_utime + usage.ru_stime
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    postmaster = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text()
        pids += [int(pid) for pid in children.split()]
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue   # exited meanwhile: counted in the postmaster's reaped time
        ticks = int(fields[11]) + int(fields[12])          # utime, stime
        if pid == postmaster:
            ticks += int(fields[13]) + int(fields[14])     # reaped children
        total += ticks / tick
    return client, total


def _pgbench_init(server: EmbeddedPostgres, scale: int) -> None:
    server.ensure_database("pgbench")
    subprocess.run([str(server.pgbench_path()), "-i", "-q", "-s", str(scale), "pgbench"],
                   env=server.client_env(), capture_output=True, check=True,
                   timeout=PGBENCH_TIMEOUT_S)


def _pgbench(server: EmbeddedPostgres, database: str, clients: int, duration_s: float,
             jobs: int) -> tuple[float, float, float]:
    """(tps, client and server CPU µs per transaction)."""
    cpu_before = _cpu_s(server)
    argv = [str(server.pgbench_path()), "-N", "-n", "-c", str(clients), "-j", str(jobs),
            "-T", str(max(1, round(duration_s))), database]
    out = subprocess.run(argv, env=server.client_env(), capture_output=True, text=True,
                         check=True, timeout=PGBENCH_TIMEOUT_S).stdout
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    done = re.search(r"number of transactions actually processed: ([0-9]+)", out)
    assert match and done, out
    time.sleep(0.2)   # let the postmaster reap the backends
    client, db = _cpu_s(server)
    txns = int(done.group(1))
    return (float(match.group(1)), (client - cpu_before[0]) * 1e6 / txns,
            (db - cpu_before[1]) * 1e6 / txns)


async def _bench(server: EmbeddedPostgres, args: argparse.Namespace) -> dict[str, object]:
    server.ensure_database("ledger_bench")
    dsn = server.dsn_for("ledger_bench")
    upgrade(dsn)
    await asyncio.to_thread(_pgbench_init, server, args.pgbench_scale)
    ledger = await Ledger.open(dsn, data_key=DATA_KEY, pool_size_max=max(CLIENT_COUNTS),
                               retries_max=20)
    runs: list[LedgerRun] = []
    pgbench: dict[int, tuple[float, float, float]] = {}
    try:
        card_ids = await _provision(ledger, args.cards, max(CLIENT_COUNTS))
        # Interleaved (ledger, pgbench) per client count, so that a change in the
        # machine's load between measurements hits both sides of a ratio alike.
        for run, clients in enumerate(CLIENT_COUNTS):
            runs.append(await asyncio.to_thread(_ledger_run, server, dsn, card_ids, clients,
                                                args.duration_s, args.jobs, run))
            pgbench[clients] = await asyncio.to_thread(_pgbench, server, "pgbench", clients,
                                                       args.duration_s, args.jobs)
        await ledger.fold_hot_accounts()
        report = await ledger.verify()
    finally:
        await ledger.close()
    result: dict[str, object] = {"benchmark": "ledger_vs_pgbench_N",
                                 "duration_s": args.duration_s, "cards": args.cards,
                                 "jobs": args.jobs,
                                 "cpus": os.cpu_count(), "verifier_clean": report.ok}
    for run in runs:
        c = run.clients
        result[f"ledger_tps_c{c}"] = round(run.tps, 1)
        pg_tps, pg_client_us, pg_server_us = pgbench[c]
        pg_cpu_us = pg_client_us + pg_server_us
        result[f"pgbench_tps_c{c}"] = round(pg_tps, 1)
        result[f"ratio_c{c}"] = round(run.tps / pg_tps, 3)
        result[f"ledger_cpu_us_per_op_c{c}"] = {"client": round(run.client_cpu_us_per_op, 1),
                                                "server": round(run.server_cpu_us_per_op, 1)}
        result[f"pgbench_cpu_us_per_txn_c{c}"] = {"client": round(pg_client_us, 1),
                                                  "server": round(pg_server_us, 1)}
        # What the ratio would be on a machine doing nothing else (CPU-bound case).
        result[f"cpu_ratio_c{c}"] = round(pg_cpu_us / run.cpu_us_per_op, 3)
        result[f"retry_rate_c{c}"] = round(run.retry_rate, 5)
        result[f"declined_c{c}"] = run.declined
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--pgbench-scale", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="embedded server data dir (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="client processes for the ledger, threads for pgbench (-j)")
    args = parser.parse_args(argv)
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    server = EmbeddedPostgres(root)
    server.start()
    try:
        result = asyncio.run(_bench(server, args))
    finally:
        server.stop()
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
