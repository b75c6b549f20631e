"""Composition: database, ledger, HSM, pipeline, listeners, operator HTTP, jobs.

Start order: database (embedded or DSN) and schema check → secrets → ledger
pool → listeners → operator HTTP → background jobs. Stop order is the
reverse, staged: stop accepting, finish in-flight requests within
`shutdown_grace_s`, close connections, stop jobs, close the pool, stop the
embedded database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

from hsm.interface import AsyncSoftHsm
from ledger.database import resolve_dsn
from ledger.embedded import EmbeddedPostgres
from ledger.errors import LedgerError, SchemaOutdated
from ledger.migrations import schema_is_current, upgrade
from ledger.store import Ledger
from messages.compiled import state as codec_state
from switch.config import SwitchConfig
from switch.heap import GcPauseWatch, freeze_long_lived
from switch.keys import Secrets, load_secrets, warn_if_demo
from switch.metrics import Metrics
from switch.pipeline import Pipeline, PipelineSettings
from switch.server import ServerState, SwitchServer

log = logging.getLogger("atm_switch.app")


@dataclass
class Database:
    """A resolved database: its DSN and, when embedded, the server behind it.

    `owned` is True when this process started the embedded server (and so
    stops it); a server another process started (a running `serve`) is only
    borrowed.
    """

    dsn: str
    embedded: EmbeddedPostgres | None
    owned: bool = False

    def close(self) -> None:
        if self.embedded is not None and self.owned:
            self.embedded.stop()


def open_database(config: SwitchConfig, *, migrate: bool | None = None) -> Database:
    """Resolve the DSN (starting the embedded server when no DSN is configured) and
    make sure the schema is current.

    The embedded database is ours, so its schema is upgraded automatically; an
    external one must be upgraded by `atm-switch db upgrade` (migrate=True forces it).
    Raises SchemaOutdated, LedgerError.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    was_running = EmbeddedPostgres(config.pg_data_dir).is_running()
    dsn, embedded = resolve_dsn(config.database_url, config.pg_data_dir)
    db = Database(dsn, embedded, owned=embedded is not None and not was_running)
    try:
        if migrate or (migrate is None and embedded is not None):
            upgrade(dsn)
    except BaseException:
        db.close()
        raise
    return db


async def open_ledger(config: SwitchConfig, db: Database, secrets: Secrets,
                      metrics: Metrics | None = None) -> Ledger:
    def on_retry(reason: str) -> None:
        if metrics is not None:
            metrics.ledger_retries.labels(reason=reason).inc()

    ledger = await Ledger.open(
        db.dsn, data_key=secrets.data_key, pool_size_max=config.db_pool_size_max,
        retries_max=config.db_retries_max, on_retry=on_retry,
        on_batch=metrics.ledger_batch_size.observe if metrics is not None else None,
        on_set_wise=metrics.ledger_set_wise.inc if metrics is not None else None,
        on_commit=metrics.ledger_commit_seconds.observe if metrics is not None else None,
        business_tz=config.business_tz,
        call_timeout_s=config.authorize_timeout_s, batch_max=config.db_batch_max,
        batch_lanes=config.db_batch_lanes or None,
        batch_lane_open_min=config.db_batch_lane_open_min or None)
    if not await schema_is_current(db.dsn):
        await ledger.close()
        raise SchemaOutdated("database schema is out of date: run `atm-switch db upgrade`")
    return ledger


@dataclass
class SwitchApp:
    config: SwitchConfig
    reuse_port: bool = False
    worker_index: int = 0
    metrics: Metrics = field(default_factory=Metrics)
    bound: list[tuple[str, int]] = field(default_factory=list)
    metrics_bound: tuple[str, int] | None = None
    _db: Database | None = None
    _ledger: Ledger | None = None
    _server: SwitchServer | None = None
    _http: object | None = None
    _jobs: list[asyncio.Task[None]] = field(default_factory=list)
    _gc_watch: GcPauseWatch | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, db: Database | None = None) -> None:
        from switch.http import OperatorHttp

        config = self.config
        secrets = load_secrets(config)
        warn_if_demo(secrets)
        if db is None:
            db = await asyncio.to_thread(open_database, config)
        self._db = db
        self._ledger = await open_ledger(config, db, secrets, self.metrics)
        hsm = AsyncSoftHsm(secrets.hsm())
        pipeline = Pipeline(self._ledger, hsm, secrets.pvk, self.metrics, PipelineSettings(
            pin_tries_max=config.pin_tries_max,
            pin_format_error_counts=config.pin_format_error_counts,
            sign_on_required=config.sign_on_required,
            acknowledge_unmatched_reversals=config.unmatched_reversal_code == "00",
            issuer_bins=config.issuer_bins,
            hsm_timeout_s=config.hsm_timeout_s,
            cache_ttl_s=config.cache_ttl_s,
            card_cache_ttl_s=config.card_cache_ttl_s,
            ledger_deadline_s=config.authorize_timeout_s,
            terminal_wrong_pins_max=config.terminal_wrong_pins_max,
            terminal_wrong_pin_window_s=config.terminal_wrong_pin_window_s,
        ))
        state = ServerState(pipeline=pipeline, metrics=self.metrics,
                            in_flight_max=config.in_flight_max)
        self._server = SwitchServer(state, config.listeners, reuse_port=self.reuse_port)
        self.bound = await self._server.start()
        http = OperatorHttp(self.metrics, self._ready)
        self.metrics_bound = await http.start(config.metrics_host, config.metrics_port,
                                              reuse_port=self.reuse_port)
        self._http = http
        for host, port in self.bound:
            log.info("listening for ATMs on %s:%d", host, port)
        log.info("metrics on http://%s:%d/metrics", *self.metrics_bound)
        log.info("ISO 8583 codec: %s", codec_state())
        freeze_long_lived()  # start-up is done (switch.heap)
        self._gc_watch = GcPauseWatch(self.metrics.observe_gc_pause)
        self._gc_watch.install()
        loop = asyncio.get_running_loop()
        if self.worker_index != 0:
            return  # background jobs run in one worker only
        self._jobs.append(loop.create_task(self._every(config.fold_interval_s, "fold",
                                                       self._ledger.fold_hot_accounts)))
        self._jobs.append(loop.create_task(self._every(config.hold_expiry_interval_s, "holds",
                                                       self._ledger.expire_holds)))

    async def _ready(self) -> tuple[bool, str]:
        if self._ledger is None or self._db is None:
            return False, "starting"
        try:
            current = await asyncio.wait_for(schema_is_current(self._db.dsn), 2.0)
        except (LedgerError, TimeoutError, OSError):
            return False, "database unreachable"
        return (True, "") if current else (False, "schema out of date")

    async def _every(self, interval_s: float, name: str, job: object) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()  # type: ignore[operator]
            except LedgerError as exc:
                log.warning("background job %s failed: %s", name, type(exc).__name__)
            except Exception:
                log.exception("background job %s failed", name)

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self._stop.wait()
        log.info("stopping: no new connections; finishing requests in flight")
        await self.stop()

    async def stop(self) -> None:
        if self._gc_watch is not None:
            self._gc_watch.remove()
        if self._server is not None:
            await self._server.shutdown(self.config.shutdown_grace_s)
        for job in self._jobs:
            job.cancel()
        for job in self._jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        if self._http is not None:
            await self._http.stop()  # type: ignore[attr-defined]
        if self._ledger is not None:
            if self.worker_index == 0:
                with contextlib.suppress(Exception):
                    await self._ledger.fold_hot_accounts()
            await self._ledger.close()
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
        log.info("stopped")
