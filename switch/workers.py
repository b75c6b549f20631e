"""Several switch processes on one port (SO_REUSEPORT), so every core serves ATMs.

The parent resolves the database (starting the embedded server and migrating
it), then starts N worker processes. Each worker binds the same listener and
metrics addresses with SO_REUSEPORT and the kernel spreads connections across
them. Metrics are aggregated across workers by prometheus-client's multiprocess
mode (a shared directory of memory-mapped files), so any worker's /metrics
shows the whole host. SIGTERM to the parent is forwarded to every worker, each
drains its in-flight requests, then the parent stops the embedded database.

The switch is stateless apart from caches and per-connection sign-on, so a
connection's requests stay in its worker and nothing else needs sharing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from switch.config import SwitchConfig

log = logging.getLogger("atm_switch.workers")

WORKER_EXIT_WAIT_S = 60.0


def _worker_main(config: SwitchConfig, dsn: str, index: int) -> None:
    import asyncio

    from switch import logs
    from switch.app import Database, SwitchApp

    logs.configure(config.log_level, config.log_json)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop

    async def run() -> None:
        app = SwitchApp(config, reuse_port=True, worker_index=index)
        await app.start(Database(dsn, None))
        await app.run_until_stopped()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


def serve_workers(config: SwitchConfig, workers: int) -> int:
    """Run `workers` switch processes until SIGTERM/SIGINT. Returns an exit status."""
    from switch.app import open_database

    assert workers >= 2
    db = open_database(config)
    metrics_dir = Path(tempfile.mkdtemp(prefix="atm-switch-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(config, db.dsn, i), name=f"worker-{i}")
             for i in range(workers)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    try:
        for proc in procs:
            proc.start()
        log.info("started %d worker processes", workers)
        while not stopping:
            dead = [p for p in procs if not p.is_alive()]
            if dead:
                log.error("worker %s exited with %s: stopping the others", dead[0].name,
                          dead[0].exitcode)
                status = 1
                forward(signal.SIGTERM, None)
                break
            time.sleep(0.2)
        deadline = time.monotonic() + WORKER_EXIT_WAIT_S
        for proc in procs:
            proc.join(max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    finally:
        db.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status
