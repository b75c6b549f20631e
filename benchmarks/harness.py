"""End-to-end benchmark: ATMs over TCP → switch → soft-HSM → PostgreSQL, next to
pgbench -N on the same database server.

    atm-switch bench [--quick | --scale] [options]      (or python -m benchmarks.harness)

What one run does (see BENCHMARKS.md for the figures and how to read them):

1. Starts an embedded PostgreSQL in the data directory (a temporary one by
   default) unless `--target` points at a running switch, and walks it through
   128 WAL segments and a checkpoint so the phases reuse WAL files (`--wal-segments`).
2. Provisions N cards and M ATMs through `atm-switch provision FILE`.
3. Starts `atm-switch serve` as a separate process (`--workers` processes
   sharing the port when asked).
4. Closed loop at each concurrency of the sweep (1, 8, 32, 128; `--quick`: 8),
   each followed by `pgbench -N` at the same client count on the same server;
   at 32 ATMs three such pairs, the median ratio the headline (`--ratio-rounds`).
5. Open loop at a fixed arrival rate (default half the best closed-loop rate),
   three rounds, the median p99 the headline (`--open-rounds`).
6. `--scale`: pre-loads the ledger to 1 million and then 10 million postings
   and measures again, to show whether latency stays flat as history grows.
7. Stops the switch and runs `atm-switch ledger verify`: a dirty ledger fails
   the run (exit 1), as do errors or timeouts seen by the ATMs.

Writes benchmarks/results/latest.json (+ a timestamped copy), a PNG and a
markdown summary. Load stays on 127.0.0.1. PANs, PINs and keys are never printed.
Ctrl-C or SIGTERM stops a run at once, with the switch and the embedded PostgreSQL
it started (exit status 130; nothing is written).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.loadgen import LoadSpec, merge_results, process_main
from benchmarks.pgbench import Pgbench, PgbenchError
from benchmarks.probes import (
    COUNTERS,
    CpuProbe,
    counter_delta,
    cpu_delta,
    histogram_means,
    ledger_functions,
    postmaster_pid,
    scrape,
    wal_flush,
)
from benchmarks.workload import Dataset, Mix
from messages.compiled import state as codec_state

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results"
READY_TIMEOUT_S = 120.0
PROVISION_TIMEOUT_S = 3600.0
VERIFY_TIMEOUT_S = 1800.0
STOP_TIMEOUT_S = 60.0
LOADGEN_READY_TIMEOUT_S = 180.0
PROGRESS_TICK_S = 0.5
# WAL files made ready before loading (warm_wal): 2 GB, enough that no phase of a
# full run created a WAL file (BENCHMARKS, item 15); a few for --quick.
WAL_SEGMENTS = 128
WAL_SEGMENTS_QUICK = 4
WAL_SEGMENTS_MAX = 128   # the harness's server keeps 2 GB (min_wal_size): no more
# The harness's own embedded server keeps those files (min_wal_size) and starts no
# checkpoint for WAL volume within a run (max_wal_size): every phase then runs
# between checkpoints on recycled files, as the first ones always did, instead of
# the last ones paying for a checkpoint's full-page images and for new WAL files
# (BENCHMARKS, item 15). The server also times the ledger's PL/pgSQL functions
# (track_functions), so every phase reports what PostgreSQL spent per group commit and
# per call (`ledger_functions`). --pg-set overrides any of them.
BENCH_PG_SETTINGS = (("min_wal_size", "2GB"), ("max_wal_size", "8GB"),
                     ("track_functions", "pl"))

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports a process stopped by SIGINT


# The switch configuration a benchmark run uses unless --switch-config is given.
BENCH_SWITCH_CONFIG = """\
# Written by the benchmark harness (benchmarks/harness.py).
[security]
# A benchmark ATM sends one request every few milliseconds, 5% of them with a
# wrong PIN: 100x a real ATM's traffic. The per-terminal wrong-PIN fraud limit
# (default 20 per 300 s, then 39=58) would turn the mix into refusals, so it
# is lifted here. Per-card try counters (55, then 75) still apply.
terminal_wrong_pins_max = 100000000

[logging]
level = "WARNING"
"""


class BenchError(RuntimeError):
    """The benchmark could not run (setup, switch, load generator, pgbench)."""


# -- options -----------------------------------------------------------------------


def bench_switch_config(settings: Settings) -> str:
    """BENCH_SWITCH_CONFIG, with the card cache's lifetime when the run sets it."""
    if settings.card_cache_ttl_s is None:
        return BENCH_SWITCH_CONFIG
    return BENCH_SWITCH_CONFIG + f"\n[server]\ncard_cache_ttl_s = {settings.card_cache_ttl_s!r}\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atm-switch bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: few cards, one short phase per mode (< 90 s)")
    p.add_argument("--scale", action="store_true",
                   help="also measure with 1M and 10M postings pre-loaded")
    p.add_argument("--cards", type=int, help="cards to provision (default 10000; quick 300)")
    p.add_argument("--atms", type=int, default=50,
                   help="ATMs to provision (at least the largest concurrency; default 50)")
    p.add_argument("--concurrency", help="closed-loop sweep, comma separated "
                                         "(default 1,8,32,128; quick 8)")
    p.add_argument("--headline-clients", type=int, default=32,
                   help="concurrency whose figures are the headline (default 32)")
    p.add_argument("--ratio-rounds", type=int,
                   help="paired rounds at the headline concurrency, each the closed loop and "
                        "then pgbench -N; the headline is the round of median ratio "
                        "(default 3; quick 1)")
    p.add_argument("--open-rounds", type=int,
                   help="open-loop rounds at the same rate, one after the other; the headline "
                        "is the round of median p99 (default 3; quick 1)")
    p.add_argument("--duration", type=float, help="measured seconds per phase (default 20; "
                                                  "quick 5)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds first (default 5; quick 3)")
    p.add_argument("--open-rate", type=float,
                   help="open-loop arrivals/s (default: --open-fraction x best closed-loop)")
    p.add_argument("--open-fraction", type=float, default=0.5)
    p.add_argument("--open-connections", type=int,
                   help="ATM connections carrying the open loop (default: headline clients)")
    p.add_argument("--no-open", action="store_true", help="skip the open-loop phase")
    p.add_argument("--mix", default="", help="e.g. withdrawal=70,balance=15,wrong_pin=5,"
                                             "insufficient=5,reversal=5 (the default); "
                                             "an operation not named is not sent")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per answer")
    p.add_argument("--workers", type=int, default=1,
                   help="switch processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--card-cache-ttl", type=float, metavar="SECONDS",
                   help="the switch's card cache lifetime (default: the switch's, 60 s); "
                        "0.001 reads every card from the database, as on a real network "
                        "where a card is used a few times a day")
    p.add_argument("--switch-config", type=Path,
                   help="TOML config for the switch (default: one written by the harness that "
                        "lifts the per-terminal wrong-PIN limit; see BENCH_SWITCH_CONFIG)")
    p.add_argument("--loadgen-procs", type=int, default=1, help="load-generator processes")
    p.add_argument("--pgbench-scale", type=int, help="pgbench -i -s (default 10; quick 1)")
    p.add_argument("--pgbench-protocol", default="simple",
                   choices=("simple", "extended", "prepared"))
    p.add_argument("--no-pgbench", action="store_true")
    p.add_argument("--scale-postings", default="1000000,10000000",
                   help="--scale targets: total postings in the ledger")
    p.add_argument("--data-dir", type=Path,
                   help="state directory (PostgreSQL in DIR/pg); default: a temporary one")
    p.add_argument("--keep-data", action="store_true", help="keep a temporary data dir")
    p.add_argument("--pg-set", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter of the embedded PostgreSQL on top of the project's, for "
                        "diagnosis (e.g. shared_preload_libraries=pg_stat_statements); "
                        "repeatable; written into the results")
    p.add_argument("--wal-segments", type=int,
                   help="WAL segments of the embedded server walked through and recycled before "
                        f"loading (default {WAL_SEGMENTS}; quick {WAL_SEGMENTS_QUICK}; 0: none; "
                        "none with --no-provision)")
    p.add_argument("--target", metavar="HOST:PORT", help="drive a running switch instead")
    p.add_argument("--metrics", metavar="URL", help="its /metrics URL (with --target)")
    p.add_argument("--switch-pid", type=int, help="its process id, for CPU (with --target)")
    p.add_argument("--no-provision", action="store_true",
                   help="cards and ATMs are already provisioned (same --seed, --cards, --atms)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    p.add_argument("--seed", type=int, default=8583)
    p.add_argument("--allow-errors", action="store_true",
                   help="exit 0 even when ATMs saw errors (verify must still be clean)")
    return p


@dataclass(frozen=True)
class Settings:
    profile: str
    cards: int
    atms: int
    sweep: tuple[int, ...]
    headline_clients: int
    ratio_rounds: int
    open_rounds: int
    duration_s: float
    warmup_s: float
    pgbench_scale: int
    scale_postings: tuple[int, ...]
    mix: Mix
    pg_settings: tuple[tuple[str, str], ...] = ()
    wal_segments: int = 0
    card_cache_ttl_s: float | None = None

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Settings:
        """Raises ValueError for inconsistent options."""
        sweep_text = a.concurrency or ("8" if a.quick else "1,8,32,128")
        sweep = tuple(sorted({int(x) for x in sweep_text.split(",") if x.strip()}))
        if not sweep or sweep[0] < 1 or sweep[-1] > 4096:
            raise ValueError("--concurrency: positive integers up to 4096")
        scale_postings = tuple(int(x) for x in a.scale_postings.split(",") if x.strip())
        settings = cls(
            profile="quick" if a.quick else ("scale" if a.scale else "full"),
            cards=a.cards or (300 if a.quick else 10_000),
            atms=a.atms,
            sweep=sweep,
            headline_clients=a.headline_clients,
            ratio_rounds=a.ratio_rounds if a.ratio_rounds is not None else (1 if a.quick else 3),
            open_rounds=a.open_rounds if a.open_rounds is not None else (1 if a.quick else 3),
            duration_s=a.duration or (5.0 if a.quick else 20.0),
            warmup_s=a.warmup if a.warmup is not None else (3.0 if a.quick else 5.0),
            pgbench_scale=a.pgbench_scale or (1 if a.quick else 10),
            scale_postings=scale_postings if a.scale else (),
            mix=Mix.parse(a.mix) if a.mix else Mix(),
            pg_settings=_pg_settings(a.pg_set),
            wal_segments=(a.wal_segments if a.wal_segments is not None
                          else (WAL_SEGMENTS_QUICK if a.quick else WAL_SEGMENTS)),
            card_cache_ttl_s=a.card_cache_ttl,
        )
        if settings.cards < 1 or settings.atms < 1 or settings.duration_s < 1:
            raise ValueError("--cards, --atms and --duration must be positive")
        if settings.pg_settings and a.target:
            raise ValueError("--pg-set sets the PostgreSQL the harness starts, not --target's")
        if settings.card_cache_ttl_s is not None and (
                a.switch_config is not None or a.target or not settings.card_cache_ttl_s > 0):
            raise ValueError("--card-cache-ttl: seconds above 0, for the switch the harness "
                             "starts with its own config (not with --switch-config or --target)")
        if not 0 <= settings.wal_segments <= WAL_SEGMENTS_MAX:
            raise ValueError(f"--wal-segments: 0 to {WAL_SEGMENTS_MAX}")
        if not 1 <= settings.ratio_rounds <= 9:
            raise ValueError("--ratio-rounds: 1 to 9")
        if not 1 <= settings.open_rounds <= 9:
            raise ValueError("--open-rounds: 1 to 9")
        if a.workers < 1 or a.loadgen_procs < 1 or a.timeout <= 0:
            raise ValueError("--workers, --loadgen-procs and --timeout must be positive")
        return settings

    @property
    def pg_settings_dict(self) -> dict[str, str]:
        return dict(BENCH_PG_SETTINGS + self.pg_settings)

    @property
    def atms_needed(self) -> int:
        return max(self.atms, *self.sweep)


def _pg_settings(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``--pg-set NAME=VALUE`` options, checked as the embedded server checks them."""
    from ledger.embedded import check_settings

    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--pg-set {item!r}: expected NAME=VALUE")
        pairs[name.strip()] = value.strip()
    return tuple(check_settings(pairs).items())


# -- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(dsn: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ATM_SWITCH_LOG_LEVEL", "WARNING")
    env["PYTHONUNBUFFERED"] = "1"
    if dsn is not None:
        env["ATM_SWITCH_DATABASE_URL"] = dsn
    return env


def run_cli(args: list[str], env: dict[str, str], timeout_s: float
            ) -> subprocess.CompletedProcess[str]:
    """`python -m switch.cli ARGS`; raises BenchError when it cannot run at all."""
    try:
        return subprocess.run([sys.executable, "-m", "switch.cli", *args], env=env,
                              capture_output=True, text=True, timeout=timeout_s, check=False,
                              cwd=str(REPO))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"atm-switch {args[0]} did not finish: {type(exc).__name__}") from None


@dataclass
class SwitchProcess:
    """`atm-switch serve` in its own process group, on loopback ports."""

    data_dir: Path
    workers: int
    env: dict[str, str]
    config: Path | None = None
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        """Raises BenchError when the switch does not become ready."""
        argv = [sys.executable, "-m", "switch.cli", "serve", "--data-dir", str(self.data_dir),
                "--listen", f"127.0.0.1:{self.port}",
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        self.log_path = self.data_dir / "switch.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=str(REPO),
                                         start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready_url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the switch exited ({self.proc.returncode}) while starting; "
                                 f"see {self.log_path.name} in the data dir:\n{self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(ready_url, timeout=2) as resp:
                    if resp.status == 200 and self._accepts():
                        return
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"the switch was not ready within {READY_TIMEOUT_S:.0f}s")

    def _accepts(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 2):
            return True
        return False

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def stop(self) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after STOP_TIMEOUT_S. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


# -- one measured phase --------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    settings: Settings
    dataset: Dataset
    host: str
    port: int
    metrics_url: str | None
    cpu: CpuProbe
    pgbench: Pgbench | None
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [chunk for chunk in (items[i::parts] for i in range(parts)) if chunk]


def run_phase(ctx: Context, *, name: str, group: str, mode: str, clients: int,
              rate_tps: float = 0.0) -> dict[str, Any]:
    """Drive one load phase from separate process(es) and measure it. Raises BenchError."""
    s, a = ctx.settings, ctx.args
    assert clients <= len(ctx.dataset.atms)
    parts = ctx.dataset.partition(clients)
    connections = [(ctx.dataset.atms[c], tuple(ctx.dataset.cards[i] for i in parts[c]))
                   for c in range(clients)]
    shares = _split(connections, min(a.loadgen_procs, clients))
    mp = multiprocessing.get_context("spawn")
    procs: list[tuple[Any, Any, Any]] = []
    for n, share in enumerate(shares):
        spec = LoadSpec(host=ctx.host, port=ctx.port, mode=mode, connections=tuple(share),
                        mix=s.mix, rate_tps=rate_tps * len(share) / clients,
                        timeout_s=a.timeout, seed=a.seed * 1000 + n + int(time.time()))
        parent, child = mp.Pipe()
        counter = mp.RawValue("q", 0)
        proc = mp.Process(target=process_main, args=(spec, child, counter), daemon=True,
                          name=f"loadgen-{n}")
        proc.start()
        child.close()
        procs.append((proc, parent, counter))
    try:
        ready = [_expect(parent, "ready", LOADGEN_READY_TIMEOUT_S) for _, parent, _ in procs]
        t_begin = time.monotonic() + 0.3
        t_measure = t_begin + s.warmup_s
        t_end = t_measure + s.duration_s
        # The window on the wall clock, to line its per-second figures up with other
        # logs (PostgreSQL's autovacuum and checkpoint lines, the switch's).
        window_started = dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=t_measure - time.monotonic())
        for _, parent, _ in procs:
            parent.send(("go", t_begin, t_measure, t_end))
        before, after = _watch(ctx, name, procs, t_begin, t_measure, t_end)
        results = [_expect(parent, "result", a.timeout + 60.0) for _, parent, _ in procs]
    except BaseException:  # a failure or an interrupt: the load stops now, not at t_end
        for proc, _, _ in procs:
            if proc.is_alive():
                proc.terminate()
        raise
    finally:
        for proc, parent, _ in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
            parent.close()
    merged = merge_results(results)
    record = _phase_record(ctx, name, group, mode, clients, rate_tps, merged, ready, before,
                           after)
    record["window_started_at"] = window_started.isoformat(timespec="milliseconds")
    return record


def _expect(pipe: Any, tag: str, timeout_s: float) -> Any:
    if not pipe.poll(timeout_s):
        raise BenchError(f"load generator sent no {tag!r} within {timeout_s:.0f}s")
    try:
        got, payload = pipe.recv()
    except EOFError:
        raise BenchError(f"load generator exited before {tag!r}") from None
    if got == "failed":
        raise BenchError(f"load generator failed: {payload}")
    assert got == tag, (got, tag)
    return payload


def _watch(ctx: Context, name: str, procs: list[tuple[Any, Any, Any]], t_begin: float,
           t_measure: float, t_end: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Progress bar until t_end; samples CPU and counters at t_measure and t_end."""
    from tqdm import tqdm

    total_s = t_end - t_begin
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    last_count, last_t = 0, time.monotonic()
    with tqdm(total=round(total_s, 1), desc=f"{name:>18}", unit="s", leave=True,
              bar_format="{desc} |{bar}| {n:.0f}/{total:.0f}s {postfix}",
              file=sys.stderr) as bar:
        for _ in range(int(total_s / PROGRESS_TICK_S) + 10):  # bounded by the phase length
            now = time.monotonic()
            if not before and now >= t_measure:
                before = {"cpu": ctx.cpu.sample(), "counters": scrape(ctx.metrics_url)}
            if now >= t_end:
                after = {"cpu": ctx.cpu.sample(), "counters": scrape(ctx.metrics_url)}
                bar.n = round(total_s, 1)
                bar.refresh()
                break
            count = sum(c.value for _, _, c in procs)
            rate = (count - last_count) / max(1e-3, now - last_t)
            last_count, last_t = count, now
            bar.n = round(min(total_s, max(0.0, now - t_begin)), 1)
            bar.set_postfix_str(f"{rate:,.0f} req/s, {count:,} done"
                                + ("" if now >= t_measure else " (warm-up)"))
            time.sleep(max(0.0, min(PROGRESS_TICK_S, (t_measure if not before else t_end) - now)
                           ) or 0.01)
    if not after:  # the loop bound ran out first (it should not): sample at t_end anyway
        time.sleep(max(0.0, t_end - time.monotonic()))
        after = {"cpu": ctx.cpu.sample(), "counters": scrape(ctx.metrics_url)}
    if not before:
        before = after
    return before, after


def _phase_record(ctx: Context, name: str, group: str, mode: str, clients: int,
                  rate_tps: float, merged: dict[str, Any], ready: list[dict[str, Any]],
                  before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    duration = ctx.settings.duration_s
    completed = merged["completed"]
    auth_tps = completed / duration
    cpu = cpu_delta(before.get("cpu", {}), after.get("cpu", {}))
    counters = counter_delta(before.get("counters"), after.get("counters"))
    errors = sum(merged["errors"].values())
    latency = report.latency_summary(merged["hist"])
    ctx.curves[name] = curve = report.percentile_curve(merged["hist"])

    def per_auth_ms(seconds: float | None) -> float | None:
        return None if seconds is None or completed == 0 else seconds * 1000.0 / completed

    return {
        "name": name, "group": group, "mode": mode, "clients": clients,
        "rate_tps": rate_tps or None, "duration_s": duration,
        "auth_tps": round(auth_tps, 1), "completed": completed, "latency": latency,
        "latency_curve": [[pct, round(ms, 3)] for pct, ms in curve],
        "per_op_latency": {op: report.latency_summary(h)
                           for op, h in sorted(merged["op_hists"].items())},
        "codes": merged["codes"], "errors": errors, "error_kinds": merged["errors"],
        "unexpected_codes": merged["unexpected"],
        "ledger_retries": None if counters is None
        else counters["atm_switch_ledger_retries_total"],
        "switch_counters": None if counters is None
        else {k: v for k, v in counters.items() if k in COUNTERS},
        # Mean ms per pipeline stage and mean operations per group commit, in the window.
        "switch_means": histogram_means(counters),
        "switch_cpu_s": cpu.get("switch"), "postgres_cpu_s": cpu.get("postgres"),
        "loadgen_cpu_s": round(merged["loadgen_cpu_s"], 3),
        "machine_busy_cpu_s": cpu.get("machine_busy"),
        # CPU used by anything else on the machine in the window (other users' jobs):
        # a large figure means the run shared the cores and its numbers are pessimistic.
        "other_cpu_s": _other_cpu(cpu, merged["loadgen_cpu_s"]),
        # CPU the hypervisor gave other guests while this machine's cores were ready to
        # run (steal): on a shared virtual machine, the first suspect of a latency spike.
        "stolen_cpu_s": None if cpu.get("machine_stolen") is None
        else round(cpu["machine_stolen"], 2),
        # How often the switch's event loop lost its core while it could still run:
        # on shared cores, time it waits for a backend it has just woken.
        "switch_preempted_per_s": None if cpu.get("switch_preempted") is None
        else round(cpu["switch_preempted"] / duration, 1),
        "switch_processes": ctx.args.workers,
        "switch_cpu_ms_per_auth": per_auth_ms(cpu.get("switch")),
        "postgres_cpu_ms_per_auth": per_auth_ms(cpu.get("postgres")),
        "loadgen_cpu_ms_per_auth": per_auth_ms(merged["loadgen_cpu_s"]),
        # Ledger database transactions (group commits, reversals alone, reads) per
        # authorization: unlike CPU time, it does not move with the machine's speed.
        "ledger_transactions_per_auth": None
        if cpu.get("ledger_transactions") is None or completed == 0
        else round(cpu["ledger_transactions"] / completed, 4),
        # The server's WAL flushes in the window (PostgreSQL's own timing): every
        # commit waits for one, so a disk slower than usual shows here.
        "wal_flush": wal_flush(cpu, completed),
        # PostgreSQL's time in the ledger's functions in the window (track_functions).
        "ledger_functions": ledger_functions(cpu, completed),
        "cpu_bound_tps_estimate": _cpu_bound_tps(cpu, merged["loadgen_cpu_s"], completed,
                                                 ctx.args.workers),
        "throughput_per_s": merged["per_second"][: int(duration) + 1],
        "max_ms_per_s": [round(us / 1000.0, 1)
                         for us in merged["per_second_max_us"][: int(duration) + 1]],
        # Open loop: how late the load generator sent against the intended times (its
        # own delay, counted in the latency above, which runs from the intended time).
        "send_late": None if mode != "open" or merged["late_hist"].get_total_count() == 0
        else report.latency_summary(merged["late_hist"]),
        "send_late_max_ms_per_s": None if mode != "open"
        else [round(us / 1000.0, 1) for us in merged["per_second_late_max_us"][: int(duration)]],
        "signon": merged["signon"], "connections": sum(r["connections"] for r in ready),
        "substituted_ops": merged["substituted"], "card_collisions": merged["card_collisions"],
        # The load generator's own collector pauses (latency the switch did not cause).
        "loadgen_gc": merged["loadgen_gc"],
        "loadgen_max_rss_mb": merged.get("loadgen_max_rss_mb"),
    }


def _cpu_bound_tps(cpu: dict[str, float | None], loadgen_s: float, completed: int,
                   switch_processes: int) -> float | None:
    """Authorizations/s if switch, PostgreSQL and load generator had every core to
    themselves and were CPU-bound: cores / CPU seconds per authorization, and no more
    than the switch's processes can do with a core each (one event loop apiece)."""
    sw, pg = cpu.get("switch"), cpu.get("postgres")
    if sw is None or pg is None or completed == 0:
        return None
    per_auth_s = (sw + pg + loadgen_s) / completed
    if per_auth_s <= 0:
        return None
    bound = (os.cpu_count() or 1) / per_auth_s
    if sw > 0:
        bound = min(bound, switch_processes * completed / sw)
    return round(bound, 1)


def _other_cpu(cpu: dict[str, float | None], loadgen_s: float) -> float | None:
    busy = cpu.get("machine_busy")
    if busy is None:
        return None
    ours = (cpu.get("switch") or 0.0) + (cpu.get("postgres") or 0.0) + loadgen_s
    return round(max(0.0, busy - ours), 2)


def with_pgbench(ctx: Context, phase: dict[str, Any]) -> dict[str, Any]:
    if ctx.pgbench is None:
        phase["pgbench"], phase["ratio"] = None, None
        return phase
    threads = min(phase["clients"], os.cpu_count() or 1)
    children = ctx.cpu.postgres_children()
    before = ctx.cpu.sample()
    kids_before = os.times()
    try:
        res = ctx.pgbench.run(phase["clients"], ctx.settings.duration_s, threads=threads,
                              protocol=ctx.args.pgbench_protocol)
    except PgbenchError as exc:
        raise BenchError(str(exc)) from None
    ctx.cpu.wait_reaped(children)  # pgbench's backends count once reaped
    used = cpu_delta(before, ctx.cpu.sample())
    kids_after = os.times()
    phase["pgbench"] = res.as_dict()
    try:  # outside both measured windows: pgbench's garbage is not the switch's
        phase["pgbench"]["tidy_s"] = round(ctx.pgbench.tidy(), 2)
    except PgbenchError as exc:
        raise BenchError(str(exc)) from None
    # CPU per pgbench transaction: PostgreSQL's and pgbench's own (our reaped child).
    pg_s = used.get("postgres")
    client_s = (kids_after.children_user + kids_after.children_system
                - kids_before.children_user - kids_before.children_system)
    done = res.transactions or 0
    pg_ms = None if pg_s is None or done == 0 else pg_s * 1000.0 / done
    client_ms = None if done == 0 else client_s * 1000.0 / done
    phase["pgbench"]["postgres_cpu_ms_per_txn"] = None if pg_ms is None else round(pg_ms, 4)
    phase["pgbench"]["client_cpu_ms_per_txn"] = None if client_ms is None else round(client_ms, 4)
    # Steal during pgbench's own window: the ratio compares two windows, and the
    # hypervisor may have taken more from one than from the other.
    stolen_s = used.get("machine_stolen")
    phase["pgbench"]["wal_flush"] = wal_flush(used, done)
    phase["pgbench"]["stolen_pct"] = None if stolen_s is None else round(
        report.cores_pct(stolen_s, ctx.settings.duration_s, os.cpu_count() or 1), 1)
    # What the ratio would be if both sides were CPU-bound on the same dedicated cores:
    # (CPU per pgbench transaction) / (CPU per authorization: switch + PG + load generator).
    # Far less sensitive to other load on a shared machine than the measured ratio.
    auth_ms = [phase.get(k) for k in ("switch_cpu_ms_per_auth", "postgres_cpu_ms_per_auth",
                                      "loadgen_cpu_ms_per_auth")]
    if pg_ms is not None and client_ms is not None and all(v is not None for v in auth_ms):
        per_auth = sum(v for v in auth_ms if v is not None)
        phase["cpu_ratio_estimate"] = round((pg_ms + client_ms) / per_auth, 3)
    phase["ratio"] = round(phase["auth_tps"] / res.tps, 3) if res.tps > 0 else None
    print(f"{'':>18}   pgbench -N -c {phase['clients']}: {res.tps:,.0f} tps; switch "
          f"{phase['auth_tps']:,.0f} auth/s; ratio {phase['ratio']}; stolen by the "
          f"hypervisor {phase['pgbench']['stolen_pct']}% (pgbench) and "
          f"{_share_pct(phase, 'stolen_cpu_s')}% (switch)", file=sys.stderr)
    return phase


def _say(ph: dict[str, Any]) -> None:
    lat = ph["latency"]
    print(f"{'':>18}   {ph['auth_tps']:,.0f} auth/s  p50 {lat['p50_ms']:.2f} ms  "
          f"p99 {lat['p99_ms']:.2f} ms  p99.9 {lat['p999_ms']:.2f} ms  errors {ph['errors']}"
          f"  retries {ph['ledger_retries']}", file=sys.stderr)
    other, stolen = _other_pct(ph), _share_pct(ph, "stolen_cpu_s")
    if other is not None and stolen is not None:
        busy = report.busy_line(ph, os.cpu_count() or 1)
        print(f"{'':>18}   cores {busy}; other processes {other:.0f}% of all cores, "
              f"stolen by the hypervisor {stolen:.0f}%", file=sys.stderr)
    if stages := report.stage_line(ph):
        print(f"{'':>18}   in the switch: {stages}", file=sys.stderr)
    if gc_pauses := ph.get("loadgen_gc"):
        print(f"{'':>18}   load generator: {gc_pauses['collections']} GC pauses, longest "
              f"{gc_pauses['pause_max_ms']:.1f} ms; {ph.get('loadgen_max_rss_mb')} MB at most",
              file=sys.stderr)


# -- the run ---------------------------------------------------------------------------


@contextlib.contextmanager
def _data_dir(args: argparse.Namespace) -> Iterator[Path]:
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        yield args.data_dir.resolve()
        return
    tmp = Path(tempfile.mkdtemp(prefix="atm-switch-bench-"))
    try:
        yield tmp
    finally:
        if not args.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)


def provision(dataset: Dataset, data_dir: Path, env: dict[str, str]) -> None:
    """Load cards and ATMs through `atm-switch provision` (the normal path).

    The file holds clear PINs and keys (test data): written 0600, removed after.
    Raises BenchError.
    """
    path = data_dir / "bench-provision.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(dataset.provisioning(), handle)
    try:
        t0 = time.monotonic()
        done = run_cli(["provision", str(path), "--data-dir", str(data_dir)], env,
                       PROVISION_TIMEOUT_S)
    finally:
        path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise BenchError(f"provisioning failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    print(f"provisioned {len(dataset.atms)} ATMs and {len(dataset.cards)} cards in "
          f"{time.monotonic() - t0:.1f}s", file=sys.stderr)


_LONG_DIGITS = re.compile(r"\d{10,}")


def mask_digits(text: str) -> str:
    """Hide all but the last 4 of any run of 10+ digits: the verifier names accounts
    by a code that embeds the card number's last 10 digits (counts stay readable)."""
    return _LONG_DIGITS.sub(lambda m: "*" * (len(m.group()) - 4) + m.group()[-4:], text)


def verify(data_dir: Path, env: dict[str, str]) -> tuple[bool, str]:
    """`atm-switch ledger verify --data-dir DIR`: (exit status 0, its output, masked)."""
    done = run_cli(["ledger", "verify", "--data-dir", str(data_dir)], env, VERIFY_TIMEOUT_S)
    text = mask_digits((done.stdout + done.stderr).strip())
    return done.returncode == 0, text[-4000:]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_args(args)
    except ValueError as exc:
        print(f"atm-switch bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.target and not args.data_dir and not os.environ.get("ATM_SWITCH_DATABASE_URL"):
        print("atm-switch bench: --target needs --data-dir (or ATM_SWITCH_DATABASE_URL) "
              "for provisioning, pgbench and verify", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _sigterm_interrupts(), _data_dir(args) as data_dir:
            return _run(args, settings, data_dir)
    except BenchError as exc:
        print(f"atm-switch bench: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # The switch and the embedded PostgreSQL this run started were stopped on
        # the way out (the finally blocks), and a temporary data directory removed.
        print("atm-switch bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a run lasts, SIGTERM (a CI job's timeout, `kill`) stops it as Ctrl-C
    does, through the same clean-up: without this the switch and the embedded
    PostgreSQL it started were left running. The caller's handler is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, settings: Settings, data_dir: Path) -> int:
    from ledger.embedded import EmbeddedPostgres

    started = dt.datetime.now(dt.UTC)
    # The code measured is the code at the start (a commit made during a long run
    # must not be named as what ran).
    commit = report.git_commit(REPO)
    t_start = time.monotonic()
    dsn_env = os.environ.get("ATM_SWITCH_DATABASE_URL")
    env = cli_env(None)
    pg: EmbeddedPostgres | None = None
    pg_was_running = False
    prep: dict[str, Any] = {}
    if dsn_env is None:
        pg = EmbeddedPostgres(data_dir / "pg", settings.pg_settings_dict)
        pg_was_running = pg.is_running()
        pg.start()
        print(f"PostgreSQL on 127.0.0.1:{pg.port}", file=sys.stderr)
    try:
        phases, curves, failure = _load_and_measure(args, settings, data_dir, env, pg, dsn_env,
                                                    prep)
        verify_ok, verify_text = verify(data_dir, env)
    finally:
        if pg is not None and not pg_was_running:
            pg.stop()
    print(f"ledger verify: {'clean' if verify_ok else 'FAILED'}", file=sys.stderr)
    if not verify_ok:
        print(verify_text, file=sys.stderr)
    if failure is not None:
        raise BenchError(failure)
    results = _results(args, settings, phases, started, time.monotonic() - t_start,
                       verify_ok, verify_text, commit, prep)
    _write(args, results, curves)
    if not verify_ok:
        return EXIT_FAILED
    if results["errors"] and not args.allow_errors:
        print(f"atm-switch bench: the ATMs saw {results['errors']} errors "
              f"({_errors_by_phase(phases)})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _load_and_measure(args: argparse.Namespace, settings: Settings, data_dir: Path,
                      env: dict[str, str], pg: Any, dsn_env: str | None,
                      prep: dict[str, Any]
                      ) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """Provision, start the switch, run every phase, stop the switch.

    Returns (phases, latency curves, failure text or None); a failure after the
    switch started still lets the caller verify the ledger. What was done to the
    server before the phases goes into `prep`.
    """
    dataset = Dataset.generate(settings.cards, settings.atms_needed, seed=args.seed)
    if pg is not None and settings.wal_segments and not args.no_provision:
        # Before anything is loaded: the checkpoint that recycles the files then
        # precedes every page the phases touch, so none of them owes a full-page
        # image to it (a checkpoint after loading made the phases write one for
        # every card, account and index page they touched first, hint bits too).
        # With --no-provision the data is there already (and so are the files the
        # run that loaded it recycled): no warm-up.
        prep["wal_warm"] = warm_wal(pg.dsn, settings.wal_segments)
        print(f"WAL warmed: {prep['wal_warm']['wal_files']} files ready in "
              f"{prep['wal_warm']['seconds']:.1f}s", file=sys.stderr)
    if not args.no_provision:
        provision(dataset, data_dir, env)
    pgbench = None if args.no_pgbench else _pgbench(pg, settings)
    switch: SwitchProcess | None = None
    phases: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    try:
        if args.target:
            from switch.config import parse_hostport

            host, port = parse_hostport(args.target, "--target")
            metrics_url = args.metrics
            pids = [args.switch_pid] if args.switch_pid else []
        else:
            config = args.switch_config
            if config is None:
                config = data_dir / "bench-switch.toml"
                config.write_text(bench_switch_config(settings), encoding="utf-8")
            switch = SwitchProcess(data_dir, args.workers, env, config)
            switch.start()
            assert switch.proc is not None
            host, port, metrics_url = "127.0.0.1", switch.port, switch.metrics_url
            pids = [switch.proc.pid]
        from ledger.database import EMBEDDED_DATABASE

        ledger_dsn = dsn_env or (pg.dsn_for(EMBEDDED_DATABASE) if pg is not None else None)
        cpu = CpuProbe(pids, postmaster_pid(pg.pgdata) if pg is not None else None, ledger_dsn)
        ctx = Context(args, settings, dataset, host, port, metrics_url, cpu, pgbench, curves)
        _measure(ctx, phases, pg, dsn_env)
    except BenchError as exc:
        tail = "" if switch is None else "\nswitch log (tail):\n" + switch.log_tail()
        return phases, curves, str(exc) + tail
    finally:
        if switch is not None:
            code = switch.stop()
            if code not in (0, None, -signal.SIGTERM):
                print(f"the switch exited with status {code}", file=sys.stderr)
    return phases, curves, None


def _pgbench(pg: Any, settings: Settings) -> Pgbench:
    if pg is None:
        raise BenchError("pgbench needs the embedded server (run without "
                         "ATM_SWITCH_DATABASE_URL, or pass --no-pgbench)")
    bench = Pgbench(pg.pgbench_path(), pg.client_env())
    t0 = time.monotonic()
    try:
        bench.initialise(settings.pgbench_scale, pg.dsn)
    except PgbenchError as exc:
        raise BenchError(str(exc)) from None
    print(f"pgbench database initialised (scale {settings.pgbench_scale}) in "
          f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
    return bench


def warm_wal(dsn: str, segments: int) -> dict[str, Any]:
    """Have `segments` WAL files ready for reuse before anything is measured.

    A fresh cluster has no spare WAL files: every 16 MB of WAL, the backend whose
    commit crosses into a new segment creates and zero-fills it while holding the
    WAL write lock (`WalInitWrite`, 12-30 ms on this project's machines), and every
    commit waits behind it: about every 5 s at 2,000 authorizations/s. A server that
    has run for a while reuses the files its checkpoints release (`min_wal_size`,
    ledger.embedded). This walks the insert position through `segments` new files
    (a tiny non-transactional WAL message, then a segment switch) and checkpoints,
    which recycles them as the next ones. Raises BenchError.
    """
    import psycopg

    started = time.monotonic()
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            for _ in range(segments):
                conn.execute("SELECT pg_logical_emit_message(false, 'atm-switch-bench', '')")
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT count(*) FROM pg_ls_waldir() "
                               "WHERE name ~ '^[0-9A-F]{24}$'").fetchone()
    except psycopg.Error as exc:
        raise BenchError(f"warming the WAL failed: {type(exc).__name__}") from None
    return {"segments": segments, "wal_files": int(row[0]) if row else 0,
            "seconds": round(time.monotonic() - started, 2)}


def _measure(ctx: Context, phases: list[dict[str, Any]], pg: Any, dsn_env: str | None) -> None:
    s, a = ctx.settings, ctx.args
    head_clients = report.headline_clients(s.sweep, s.headline_clients)
    for clients in s.sweep:
        ph = run_phase(ctx, name=f"closed-{clients}", group="sweep", mode="closed",
                       clients=clients)
        _say(ph)
        phases.append(with_pgbench(ctx, ph))
        if clients != head_clients or ctx.pgbench is None:
            continue
        # More rounds of the same pair straight after: the machine's speed drifts
        # between windows (other guests), and one pair can catch its two halves at
        # different speeds. The headline is the round of median ratio.
        for n in range(2, s.ratio_rounds + 1):
            ph = run_phase(ctx, name=f"closed-{clients}#{n}", group="ratio", mode="closed",
                           clients=clients)
            _say(ph)
            phases.append(with_pgbench(ctx, ph))
    best = max(ph["auth_tps"] for ph in phases)
    open_clients = min(a.open_connections or s.headline_clients, len(ctx.dataset.atms))
    rate = a.open_rate or round(best * a.open_fraction, 1)
    if not a.no_open and rate > 0:
        # Several rounds for the same reason as the ratio's: one 20 s window's p99 moves
        # with the machine (8 to 64 ms for the same code within half an hour).
        for n in range(1, s.open_rounds + 1):
            ph = run_phase(ctx, name=f"open-{rate:.0f}tps" + (f"#{n}" if n > 1 else ""),
                           group="open", mode="open", clients=open_clients, rate_tps=rate)
            _say(ph)
            phases.append(ph)
    for target in s.scale_postings:
        from benchmarks.preload import preload_postings
        from ledger.database import EMBEDDED_DATABASE

        dsn = dsn_env or pg.dsn_for(EMBEDDED_DATABASE)
        added, total, seconds = preload_postings(dsn, target)
        print(f"pre-loaded {added:,} postings ({total:,} in the ledger) in {seconds:.0f}s",
              file=sys.stderr)
        label = f"{total / 1e6:.0f}M" if total >= 1e6 else f"{total / 1e3:.0f}k"
        clients = min(s.headline_clients, len(ctx.dataset.atms))
        ph = run_phase(ctx, name=f"closed-{clients}@{label}", group="scale", mode="closed",
                       clients=clients)
        ph["postings_before"] = total
        _say(ph)
        phases.append(ph)
        if not a.no_open and rate > 0:
            ph = run_phase(ctx, name=f"open-{rate:.0f}tps@{label}", group="scale", mode="open",
                           clients=open_clients, rate_tps=rate)
            ph["postings_before"] = total
            _say(ph)
            phases.append(ph)


def _results(args: argparse.Namespace, settings: Settings, phases: list[dict[str, Any]],
             started: dt.datetime, elapsed_s: float, verify_ok: bool,
             verify_text: str, commit: str | None,
             prep: dict[str, Any] | None = None) -> dict[str, Any]:
    head = report.headline(phases, settings.headline_clients)
    open_phases = [ph for ph in phases if ph["group"] == "open"]
    open_head = report.open_headline(open_phases)
    out: dict[str, Any] = {
        "auth_tps": head["auth_tps"],
        "pgbench_tps": (head.get("pgbench") or {}).get("tps"),
        "ratio": head.get("ratio"),
        "clients": head["clients"],
        **{k: head["latency"][k] for k in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms")},
        "errors": sum(ph["errors"] for ph in phases),
        "ledger_retries": head.get("ledger_retries"),
        "switch_cpu_ms_per_auth": head.get("switch_cpu_ms_per_auth"),
        "postgres_cpu_ms_per_auth": head.get("postgres_cpu_ms_per_auth"),
        "loadgen_cpu_ms_per_auth": head.get("loadgen_cpu_ms_per_auth"),
        "cpu_ratio_estimate": head.get("cpu_ratio_estimate"),
        "cpu_bound_tps_estimate": head.get("cpu_bound_tps_estimate"),
        "other_load_pct": _other_pct(head),
        "stolen_pct": _share_pct(head, "stolen_cpu_s"),
        "open_loop": None if open_head is None else {
            "rate_tps": open_head["rate_tps"], "clients": open_head["clients"],
            "auth_tps": open_head["auth_tps"], **open_head["latency"],
            "phase": open_head["name"],
            "rounds_p99_ms": [ph["latency"]["p99_ms"] for ph in open_phases]},
        "headline_phase": head["name"],
        "ratio_rounds": [ph.get("ratio") for ph in report.ratio_round_phases(
            phases, settings.headline_clients)],
        "targets": _targets(head, open_head),
        "phases": phases,
        "verify_ok": verify_ok,
        "verify_output": verify_text,
        "profile": settings.profile,
        "settings": {"cards": settings.cards, "atms": settings.atms_needed,
                     "sweep": list(settings.sweep), "duration_s": settings.duration_s,
                     "ratio_rounds": settings.ratio_rounds,
                     "open_rounds": settings.open_rounds,
                     "warmup_s": settings.warmup_s, "mix": settings.mix.as_dict(),
                     "switch_workers": args.workers, "loadgen_procs": args.loadgen_procs,
                     "pgbench_scale": settings.pgbench_scale,
                     "pgbench_protocol": args.pgbench_protocol, "timeout_s": args.timeout,
                     "target": bool(args.target),
                     "pg_settings": settings.pg_settings_dict,
                     "wal_warm": (prep or {}).get("wal_warm"),
                     "card_cache_ttl_s": settings.card_cache_ttl_s},
        "machine": report.machine_info(),
        "codec": codec_state(),
        "commit": commit,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "elapsed_s": round(elapsed_s, 1),
    }
    return out


def _other_pct(phase: dict[str, Any]) -> float | None:
    return _share_pct(phase, "other_cpu_s")


def _share_pct(phase: dict[str, Any], key: str) -> float | None:
    share = report.share_pct(phase, key, os.cpu_count() or 1)
    return None if share is None else round(share, 1)


def _errors_by_phase(phases: list[dict[str, Any]]) -> str:
    """Where the errors were, with the other processes' share of the machine then: a
    busy neighbour (or a command run meanwhile) is the first thing to rule out."""
    parts = []
    for phase in phases:
        if phase.get("errors"):
            other = _other_pct(phase)
            load = "" if other is None else f", other processes {other:.0f}% of all cores"
            stolen = _share_pct(phase, "stolen_cpu_s")
            if stolen:
                load += f", {stolen:.0f}% stolen by the hypervisor"
            parts.append(f"{phase['name']}: {phase['errors']}{load}")
    return "; ".join(parts) or "no phase counted them"


def _targets(head: dict[str, Any], open_head: dict[str, Any] | None) -> dict[str, Any]:
    ratio = head.get("ratio")
    open_p99 = open_head["latency"]["p99_ms"] if open_head is not None else None
    return {
        "ratio_ge_1": None if ratio is None else ratio >= 1.0,
        "ratio_ge_0_5": None if ratio is None else ratio >= 0.5,
        "open_p99_le_25ms": None if open_p99 is None else open_p99 <= 25.0,
    }


def _write(args: argparse.Namespace, results: dict[str, Any],
           curves: dict[str, list[tuple[float, float]]]) -> None:
    stamp = results["started_at"].replace(":", "").replace("-", "")
    latest, _ = report.write_json(results, args.out, stamp)
    png = report.plot(results, curves, args.out / "latest.png")
    shutil.copyfile(png, args.out / f"run-{stamp}.png")
    md = report.markdown_summary(results)
    (args.out / "latest.md").write_text(md, encoding="utf-8")
    (args.out / f"run-{stamp}.md").write_text(md, encoding="utf-8")
    print(md, file=sys.stderr)
    print(f"results: {latest.relative_to(REPO) if latest.is_relative_to(REPO) else latest}",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
