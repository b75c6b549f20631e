"""pgbench on the same PostgreSQL server: the database's own limit, for the ratio.

`pgbench -N` (simple-update: one UPDATE of pgbench_accounts, a SELECT and an
INSERT into pgbench_history per transaction, no branch/teller hot rows) runs
in a separate database (`PGBENCH_DB`) initialised once with `pgbench -i`.
The comparison: authorizations/s of the whole switch ÷ pgbench -N tps at the
same client count. Both commit durably (synchronous_commit stays on).
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PGBENCH_DB = "atm_switch_pgbench"
INIT_TIMEOUT_S = 600.0
RUN_SLACK_S = 120.0

_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without initial connection time|excluding "
                  r"connections establishing)\)", re.MULTILINE)
_LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: ([0-9]+)", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: ([0-9]+)", re.MULTILINE)


class PgbenchError(RuntimeError):
    """pgbench failed or printed nothing we can read."""


@dataclass(frozen=True)
class PgbenchResult:
    clients: int
    threads: int
    duration_s: float
    tps: float
    latency_avg_ms: float | None
    transactions: int | None
    failed: int
    command: str

    def as_dict(self) -> dict[str, object]:
        return {"clients": self.clients, "threads": self.threads, "duration_s": self.duration_s,
                "tps": self.tps, "latency_avg_ms": self.latency_avg_ms,
                "transactions": self.transactions, "failed": self.failed,
                "command": self.command}


def parse_output(text: str) -> tuple[float, float | None, int | None, int]:
    """(tps, average latency ms, transactions, failed) from pgbench's report.

    Raises PgbenchError when there is no tps line.
    """
    tps = _TPS.search(text)
    if tps is None:
        raise PgbenchError("pgbench printed no tps line")
    lat = _LAT.search(text)
    processed = _PROCESSED.search(text)
    failed = _FAILED.search(text)
    return (float(tps.group(1)), float(lat.group(1)) if lat else None,
            int(processed.group(1)) if processed else None,
            int(failed.group(1)) if failed else 0)


@dataclass(frozen=True)
class Pgbench:
    binary: Path
    env: dict[str, str]   # libpq environment: PGHOST, PGPORT, PGUSER, PGPASSWORD
    database: str = PGBENCH_DB

    def initialise(self, scale: int, admin_dsn: str) -> None:
        """Create the database when missing and load it with `pgbench -i -s scale`.

        Raises PgbenchError.
        """
        import psycopg

        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.database,)).fetchone()
            if exists is None:
                # The name is our constant, not input.
                conn.execute(f'CREATE DATABASE "{self.database}"')  # type: ignore[arg-type]
        self._run([str(self.binary), "-i", "-q", "-s", str(scale), self.database],
                  INIT_TIMEOUT_S)

    def run(self, clients: int, duration_s: float, *, threads: int | None = None,
            protocol: str = "simple") -> PgbenchResult:
        """`pgbench -N -c clients -j threads -T duration` against the initialised database.

        Raises PgbenchError.
        """
        assert clients >= 1 and duration_s >= 1
        threads = max(1, min(clients, threads or clients))
        argv = [str(self.binary), "-N", "-n", "-c", str(clients), "-j", str(threads),
                "-T", str(int(duration_s)), "-M", protocol, self.database]
        out = self._run(argv, duration_s + RUN_SLACK_S)
        tps, lat, processed, failed = parse_output(out)
        shown = " ".join(["pgbench", *argv[1:]])
        return PgbenchResult(clients, threads, duration_s, tps, lat, processed, failed, shown)

    def tidy(self) -> float:
        """VACUUM (ANALYZE) pgbench's tables after a run; return the seconds it took.

        `run` passes `-n` (pgbench's own pre-run vacuum would fall inside its timed
        window), so without this the dead rows of one run are left to autovacuum, which
        then cleans them up during the switch's next phase, on the same cores.
        Raises PgbenchError.
        """
        import psycopg

        started = time.monotonic()
        try:
            with psycopg.connect(host=self.env.get("PGHOST"), port=self.env.get("PGPORT"),
                                 user=self.env.get("PGUSER"),
                                 password=self.env.get("PGPASSWORD"), dbname=self.database,
                                 autocommit=True, connect_timeout=10) as conn:
                conn.execute("VACUUM (ANALYZE) pgbench_accounts, pgbench_branches, "
                             "pgbench_tellers, pgbench_history")
        except psycopg.Error as exc:
            raise PgbenchError(f"vacuum after pgbench failed: {type(exc).__name__}") from None
        return time.monotonic() - started

    def _run(self, argv: list[str], timeout_s: float) -> str:
        try:
            done = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PgbenchError(f"pgbench did not finish: {type(exc).__name__}") from None
        if done.returncode != 0:
            raise PgbenchError(f"pgbench exited {done.returncode}: {done.stderr.strip()[-800:]}")
        return done.stdout + done.stderr
