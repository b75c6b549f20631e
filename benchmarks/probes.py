"""What the harness samples around a measurement window: the switch's Prometheus
counters, the CPU time of the switch and PostgreSQL processes, and the number
of transactions the ledger database ran."""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 5.0
REAP_WAIT_S = 3.0  # how long to wait for exited backends to be reaped before sampling CPU
# Counters whose increase over a window the report shows (sums over all labels).
COUNTERS = (
    "atm_switch_ledger_retries_total",
    "atm_switch_ledger_errors_total",
    "atm_switch_load_shed_total",
    "atm_switch_decode_errors_total",
    "atm_switch_hsm_errors_total",
    "atm_switch_ledger_set_wise_operations_total",
)
# Histograms whose mean over a window the report shows, per label value (stage) or whole.
STAGE_HISTOGRAM = "atm_switch_authorization_duration_seconds"
BATCH_HISTOGRAM = "atm_switch_ledger_batch_operations"
GC_HISTOGRAM = "atm_switch_gc_pause_seconds"
COMMIT_HISTOGRAM = "atm_switch_ledger_commit_seconds"
SET_WISE_COUNTER = "atm_switch_ledger_set_wise_operations_total"
CACHE_MISSES = "atm_switch_cache_misses_total"
_HISTOGRAMS = (STAGE_HISTOGRAM, BATCH_HISTOGRAM, GC_HISTOGRAM, COMMIT_HISTOGRAM)


def parse_counters(text: str, names: Iterable[str] = COUNTERS) -> dict[str, float]:
    """Sum of every sample of each named counter (absent counters are 0).

    Also the `_sum` and `_count` of the stage, batch and GC-pause histograms, keyed
    `<histogram>_sum[:label]` / `<histogram>_count[:label]` (label: the stage or the
    GC generation), for `histogram_means`.
    """
    wanted = set(names)
    totals = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                totals[sample.name] += sample.value
            elif sample.name == CACHE_MISSES:
                key = f"{CACHE_MISSES}:{sample.labels.get('cache', '')}"
                totals[key] = totals.get(key, 0.0) + sample.value
            elif family.name in _HISTOGRAMS and (
                    sample.name.endswith("_sum") or sample.name.endswith("_count")):
                label = sample.labels.get("stage") or sample.labels.get("generation")
                key = f"{sample.name}:{label}" if label else sample.name
                totals[key] = totals.get(key, 0.0) + sample.value
            elif (family.name == STAGE_HISTOGRAM and sample.name.endswith("_bucket")
                    and sample.labels.get("stage") == "total"):
                key = f"{sample.name}:total:{sample.labels['le']}"
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def histogram_means(delta: dict[str, float] | None) -> dict[str, float] | None:
    """From a counter delta: mean milliseconds per pipeline stage (`stage_ms`), mean
    operations per group-commit batch (`batch_operations`), the share of those
    operations decided set-wise (`set_wise_share`), the share of card lookups its
    cache could not answer (`card_miss_share`), the group commits (`commits`) with
    the mean of their round trips from the switch (`commit_round_trip_ms`), the switch's full
    (generation 2) garbage collections with their mean pause (`gc_full`,
    `gc_full_pause_ms`) and its young ones (generations 0 and 1) with their total
    pause (`gc_young`, `gc_young_pause_ms_total`) over the window."""
    if delta is None:
        return None
    means: dict[str, float] = {}
    if (p99 := _total_p99_bound_ms(delta)) is not None:
        means["total_p99_le_ms"] = p99
    for key, total in delta.items():
        name, _, stage = key.partition(":")
        if name == f"{STAGE_HISTOGRAM}_sum" and stage:
            count = delta.get(f"{STAGE_HISTOGRAM}_count:{stage}", 0.0)
            if count > 0:
                means[f"stage_ms:{stage}"] = round(total * 1000.0 / count, 3)
        elif name == f"{BATCH_HISTOGRAM}_sum":
            count = delta.get(f"{BATCH_HISTOGRAM}_count", 0.0)
            if count > 0:
                means["batch_operations"] = round(total / count, 2)
            if total > 0 and SET_WISE_COUNTER in delta:
                means["set_wise_share"] = round(delta[SET_WISE_COUNTER] / total, 3)
        elif name == f"{COMMIT_HISTOGRAM}_sum":
            count = delta.get(f"{COMMIT_HISTOGRAM}_count", 0.0)
            means["commits"] = count
            if count > 0:
                means["commit_round_trip_ms"] = round(total * 1000.0 / count, 3)
        elif name == CACHE_MISSES and stage == "card":
            lookups = delta.get(f"{STAGE_HISTOGRAM}_count:card", 0.0)
            if lookups > 0:
                means["card_miss_share"] = round(total / lookups, 4)
        elif name == f"{GC_HISTOGRAM}_sum" and stage == "2":
            count = delta.get(f"{GC_HISTOGRAM}_count:2", 0.0)
            means["gc_full"] = count
            if count > 0:
                means["gc_full_pause_ms"] = round(total * 1000.0 / count, 3)
        elif name == f"{GC_HISTOGRAM}_sum" and stage in ("0", "1"):
            # Young collections: frequent and short; their sum is CPU the switch spent.
            means["gc_young"] = means.get("gc_young", 0.0) + delta.get(
                f"{GC_HISTOGRAM}_count:{stage}", 0.0)
            means["gc_young_pause_ms_total"] = round(
                means.get("gc_young_pause_ms_total", 0.0) + total * 1000.0, 3)
    return means


def _total_p99_bound_ms(delta: dict[str, float]) -> float | None:
    """The upper bound of the bucket holding the 99th percentile of the switch's
    whole-request time over the window (the histogram's resolution, no finer)."""
    prefix = f"{STAGE_HISTOGRAM}_bucket:total:"
    buckets = sorted((float(key[len(prefix):]), count) for key, count in delta.items()
                     if key.startswith(prefix))
    if not buckets or buckets[-1][1] <= 0:
        return None
    wanted = 0.99 * buckets[-1][1]
    bound = next(le for le, cumulative in buckets if cumulative >= wanted)
    return bound * 1000.0 if math.isfinite(bound) else None


def scrape(url: str | None) -> dict[str, float] | None:
    """The counters from `url` (…/metrics), or None when it cannot be read."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as resp:  # noqa: S310 - our URL
            text = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, TimeoutError):
        return None
    return parse_counters(text)


def counter_delta(before: dict[str, float] | None, after: dict[str, float] | None
                  ) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


def _tree_processes(pids: Iterable[int]) -> Iterator[psutil.Process]:
    """Each process of the trees rooted at ``pids``, once (gone ones are skipped)."""
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            if proc.pid not in seen:
                seen.add(proc.pid)
                yield proc


def _tree_cpu_s(pids: Iterable[int]) -> float:
    total = 0.0
    for proc in _tree_processes(pids):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        # children_*: children already exited and reaped (a PostgreSQL backend
        # that closed keeps its CPU time in the postmaster's figure this way).
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _tree_preempted(pids: Iterable[int]) -> float:
    """Times the main threads (the switch's event loop) of these trees were taken
    off a core while they could still run (involuntary context switches): how often
    another process, often a PostgreSQL backend or the load generator it had just
    woken, got the core instead."""
    total = 0
    for proc in _tree_processes(pids):
        try:
            total += proc.num_ctx_switches().involuntary
        except psutil.Error:
            continue
    return float(total)


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds since boot, all cores: (busy, stolen).

    Busy is everything this machine ran (not idle, I/O wait or steal); stolen is the
    time a virtual machine's cores were ready to run but the hypervisor ran another
    guest instead (``steal`` in /proc/stat). Stolen time is latency nobody on this
    machine caused, so it is counted apart from the other processes' load.
    """
    t = psutil.cpu_times()
    steal = float(getattr(t, "steal", 0.0))
    busy = (sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0)
            - getattr(t, "guest_nice", 0.0) - steal)
    return float(busy), steal


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None


# The ledger's functions whose time `ledger_functions` reports (track_functions),
# by the short name of their keys, and the other way round.
LEDGER_FUNCTIONS = {"batch": "ledger_authorize_batch", "authorize": "ledger_authorize",
                    "reverse": "ledger_reverse"}
_SHORT_NAME = {name: short for short, name in LEDGER_FUNCTIONS.items()}
_FUNCTION_KEYS = tuple(f"fn_{short}_{what}" for short in LEDGER_FUNCTIONS
                       for what in ("calls", "ms", "self_ms"))
# What `database_counters` reads. The WAL keys are cluster-wide: in pgbench's window
# they are pgbench's flushes, in a phase's the ledger's.
DATABASE_KEYS = ("ledger_transactions", "wal_syncs", "wal_sync_ms", "wal_writes",
                 "wal_write_ms", "wal_inits", "wal_bytes", "wal_fpi", "checkpoints",
                 *_FUNCTION_KEYS)
_TRANSACTIONS_SQL = ("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                     "WHERE datname = current_database()")
# pg_stat_io counts WAL I/O from PostgreSQL 18 on; its times only with
# track_wal_io_timing on (the embedded server's setting). NULL sums: no such rows.
_WAL_IO_SQL = ("SELECT sum(fsyncs)::float8, sum(fsync_time)::float8, "
               "sum(writes) FILTER (WHERE context = 'normal')::float8, "
               "sum(write_time) FILTER (WHERE context = 'normal')::float8, "
               "current_setting('track_wal_io_timing')::bool, "
               "sum(writes) FILTER (WHERE context = 'init')::float8 "
               "FROM pg_stat_io WHERE object = 'wal'")
# WAL volume and full-page images (a page's first change after a checkpoint writes
# its whole image), and checkpoints started: what makes a window's commits heavier.
_WAL_VOLUME_SQL = ("SELECT w.wal_bytes::float8, w.wal_fpi::float8, "
                   "(c.num_timed + c.num_requested)::float8 "
                   "FROM pg_stat_wal w, pg_stat_checkpointer c")


_FUNCTIONS_SQL = ("SELECT funcname, sum(calls)::float8, sum(total_time)::float8, "
                  "sum(self_time)::float8 FROM pg_stat_user_functions "
                  "WHERE funcname = ANY (%s) GROUP BY funcname")


def database_counters(dsn: str) -> dict[str, float | None]:
    """From PostgreSQL's statistics (backends publish theirs within about a second):
    the transactions committed or rolled back in the DSN's database so far, and the
    server's WAL writes and flushes with the milliseconds they took. A key is None
    when the server cannot say (no pg_stat_io WAL rows before PostgreSQL 18, no
    times with track_wal_io_timing off, or no connection)."""
    import psycopg

    out: dict[str, float | None] = dict.fromkeys(DATABASE_KEYS)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(_TRANSACTIONS_SQL).fetchone()
            if row is not None:
                out["ledger_transactions"] = float(row[0])
            try:
                wal = conn.execute(_WAL_IO_SQL).fetchone()
                volume = conn.execute(_WAL_VOLUME_SQL).fetchone()
            except psycopg.Error:  # an older server: no WAL figures
                wal = volume = None
            if conn.execute("SELECT current_setting('track_functions')").fetchone() \
                    in (("pl",), ("all",)):
                # A function never called has no row: 0.
                out.update(dict.fromkeys(_FUNCTION_KEYS, 0.0))
                for name, calls, total_ms, self_ms in conn.execute(
                        _FUNCTIONS_SQL, (list(LEDGER_FUNCTIONS.values()),)).fetchall():
                    short = _SHORT_NAME[name]
                    out[f"fn_{short}_calls"], out[f"fn_{short}_ms"] = calls, total_ms
                    out[f"fn_{short}_self_ms"] = self_ms
    except psycopg.Error:
        return out
    if wal is not None and wal[0] is not None:
        syncs, sync_ms, writes, write_ms, timed, inits = wal
        out["wal_syncs"], out["wal_writes"], out["wal_inits"] = syncs, writes, inits or 0.0
        if timed:
            out["wal_sync_ms"], out["wal_write_ms"] = sync_ms, write_ms
    if volume is not None:
        out["wal_bytes"], out["wal_fpi"], out["checkpoints"] = volume
    return out


def wal_flush(delta: dict[str, float | None], completed: int) -> dict[str, float | None] | None:
    """A window's WAL flushes from a `CpuProbe` delta: how many, per authorization (or
    transaction), and the mean milliseconds of a flush and of a write. A commit waits
    for its flush, so a slow disk shows here before anywhere else. None: not known."""
    syncs = delta.get("wal_syncs")
    if syncs is None:
        return None
    sync_ms, writes, write_ms, volume, fpi, inits, checkpoints = (delta.get(k) for k in (
        "wal_sync_ms", "wal_writes", "wal_write_ms", "wal_bytes", "wal_fpi", "wal_inits",
        "checkpoints"))
    return {
        "syncs": round(syncs),
        "syncs_per_auth": round(syncs / completed, 4) if completed else None,
        "sync_ms_mean": None if sync_ms is None or syncs <= 0 else round(sync_ms / syncs, 4),
        "write_ms_mean": None if write_ms is None or not writes
        else round(write_ms / writes, 4),
        # Bytes of WAL and full-page images per authorization (or transaction), WAL
        # segment writes made while creating a segment (none while recycled files
        # last), and checkpoints started in the window.
        "bytes_per_auth": None if volume is None or not completed
        else round(volume / completed, 1),
        "fpi_per_auth": None if fpi is None or not completed else round(fpi / completed, 4),
        "segment_init_writes": None if inits is None else round(inits),
        "checkpoints": None if checkpoints is None else round(checkpoints),
    }


def ledger_functions(delta: dict[str, float | None], completed: int
                     ) -> dict[str, float | None] | None:
    """PostgreSQL's time in the ledger's functions over a window, from a `CpuProbe`
    delta: group commits (``ledger_authorize_batch`` calls) per authorization, the
    milliseconds of one (and of that its own, without the calls it makes), and the
    calls of ``ledger_reverse`` and ``ledger_authorize`` per group commit with the
    milliseconds of one. None when the server did not time them (track_functions off)."""
    commits = delta.get("fn_batch_calls")
    if commits is None:
        return None

    def per(ms_key: str, calls: float | None) -> float | None:
        ms = delta.get(ms_key)
        return None if ms is None or not calls else round(ms / calls, 4)

    out: dict[str, float | None] = {
        "commits": round(commits),
        "commits_per_auth": round(commits / completed, 4) if completed else None,
        "commit_ms": per("fn_batch_ms", commits),
        "commit_self_ms": per("fn_batch_self_ms", commits),
    }
    for short in ("reverse", "authorize"):
        calls = delta.get(f"fn_{short}_calls")
        out[f"{short}_calls_per_commit"] = (None if calls is None or not commits
                                            else round(calls / commits, 3))
        out[f"{short}_ms"] = per(f"fn_{short}_ms", calls)
    return out


@dataclass
class CpuProbe:
    """CPU seconds (user + system) of process trees: the switch and PostgreSQL;
    with ``database_dsn``, also the ledger database's transaction count and the
    server's WAL flushes (`database_counters`).

    Exited, reaped children count through their parent's children_* times, so
    pgbench's backends, which exit at the end of its run, are included.
    """

    switch_pids: list[int] = field(default_factory=list)
    postgres_pid: int | None = None
    database_dsn: str | None = None

    def postgres_children(self) -> int | None:
        """How many processes the postmaster has now (backends and helpers)."""
        if self.postgres_pid is None:
            return None
        try:
            return len(psutil.Process(self.postgres_pid).children())
        except psutil.Error:
            return None

    def wait_reaped(self, children_max: int | None, timeout_s: float = REAP_WAIT_S) -> None:
        """Wait (bounded) until the postmaster is down to ``children_max`` processes: a
        backend's CPU time reaches the postmaster's children_* figures only once it
        has exited and been reaped, so sampling right after a client disconnects
        can miss it (pgbench's backends at one client went missing that way)."""
        if children_max is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            count = self.postgres_children()
            if count is None or count <= children_max:
                return
            time.sleep(0.02)

    def sample(self) -> dict[str, float | None]:
        busy, stolen = machine_cpu_s()
        return {
            "switch": _tree_cpu_s(self.switch_pids) if self.switch_pids else None,
            "switch_preempted": (_tree_preempted(self.switch_pids)
                                 if self.switch_pids else None),
            "postgres": (_tree_cpu_s([self.postgres_pid])
                         if self.postgres_pid is not None else None),
            "machine_busy": busy,
            "machine_stolen": stolen,
            **(database_counters(self.database_dsn) if self.database_dsn is not None
               else dict.fromkeys(DATABASE_KEYS)),
        }


def cpu_delta(before: dict[str, float | None], after: dict[str, float | None]
              ) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in after.items():
        prior = before.get(key)
        out[key] = None if value is None or prior is None else value - prior
    return out
