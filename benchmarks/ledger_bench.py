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
import itertools
import json
import random
import re
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
    sem = asyncio.Semaphore(16)

    async def one(n: int) -> int:
        async with sem:
            return await ledger.upsert_card(CardSpec(
                pan=_pan(n), expiry="9912", pvv="1234", pvki="1",
                accounts=[AccountSpec("20", f"bench-{n}", CURRENCY, 10**12, 0, True)]))

    return list(await asyncio.gather(*(one(n) for n in range(cards))))


async def _ledger_run(ledger: Ledger, card_ids: list[int], clients: int, duration_s: float,
                      stans: itertools.count[int]) -> LedgerRun:
    stop_at = 0.0
    counted = 0
    declined = 0
    measuring = False
    now = datetime.now(UTC).strftime("%m%d%H%M%S")

    async def client(n: int) -> None:
        nonlocal counted, declined
        terminal = f"BENCH{n:03d}"
        rng = random.Random(n)
        while time.monotonic() < stop_at:
            stan = next(stans)
            key = IdempotencyKey(ACQUIRER, terminal, f"{stan % 1_000_000:06d}",
                                 now if stan < 1_000_000 else f"{now[:-2]}{stan // 10**6:02d}")
            card = rng.choice(card_ids)
            result = await ledger.authorize(Operation(
                kind=OpKind.WITHDRAWAL, key=key, card_id=card,
                request_digest=stan.to_bytes(8, "big"), from_account_type="00",
                to_account_type="00", amount=2_000, currency=CURRENCY, rrn=f"{stan:012d}",
                pin_check="ok"))
            if measuring:
                counted += 1
                declined += result.outcome is not Outcome.APPROVED

    # Warm-up: connections opened, statements prepared, caches hot.
    stop_at = time.monotonic() + 2.0
    await asyncio.gather(*(client(n) for n in range(clients)))
    retries_before = ledger.retries_total
    measuring = True
    started = time.monotonic()
    stop_at = started + duration_s
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.monotonic() - started
    return LedgerRun(clients, counted / elapsed, counted,
                     ledger.retries_total - retries_before, declined)


def _pgbench(server: EmbeddedPostgres, database: str, clients: int, duration_s: float) -> float:
    argv = [str(server.pgbench_path()), "-N", "-n", "-c", str(clients), "-j", "2",
            "-T", str(max(1, round(duration_s))), database]
    out = subprocess.run(argv, env=server.client_env(), capture_output=True, text=True,
                         check=True, timeout=PGBENCH_TIMEOUT_S).stdout
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    assert match, out
    return float(match.group(1))


async def _bench(server: EmbeddedPostgres, args: argparse.Namespace) -> dict[str, object]:
    server.ensure_database("ledger_bench")
    dsn = server.dsn_for("ledger_bench")
    upgrade(dsn)
    ledger = await Ledger.open(dsn, data_key=DATA_KEY, pool_size_max=max(CLIENT_COUNTS),
                               retries_max=20)
    try:
        card_ids = await _provision(ledger, args.cards, max(CLIENT_COUNTS))
        stans = itertools.count(1)
        runs = [await _ledger_run(ledger, card_ids, clients, args.duration_s, stans)
                for clients in CLIENT_COUNTS]
        await ledger.fold_hot_accounts()
        report = await ledger.verify()
    finally:
        await ledger.close()

    server.ensure_database("pgbench")
    subprocess.run([str(server.pgbench_path()), "-i", "-q", "-s", str(args.pgbench_scale),
                    "pgbench"], env=server.client_env(), capture_output=True, check=True,
                   timeout=PGBENCH_TIMEOUT_S)
    pgbench = {clients: _pgbench(server, "pgbench", clients, args.duration_s)
               for clients in CLIENT_COUNTS}
    result: dict[str, object] = {"benchmark": "ledger_vs_pgbench_N",
                                 "duration_s": args.duration_s, "cards": args.cards,
                                 "verifier_clean": report.ok}
    for run in runs:
        c = run.clients
        result[f"ledger_tps_c{c}"] = round(run.tps, 1)
        result[f"pgbench_tps_c{c}"] = round(pgbench[c], 1)
        result[f"ratio_c{c}"] = round(run.tps / pgbench[c], 3)
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
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    server = EmbeddedPostgres(root)
    server.start()
    try:
        if not args.no_uvloop:
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
        result = asyncio.run(_bench(server, args))
    finally:
        server.stop()
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
