"""Turning measurements into figures: percentiles, the JSON record, the PNG and
the markdown summary. Pure apart from writing the output files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

PERCENTILES = {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0, "p999_ms": 99.9}
# Keys every results file has (the smoke test checks them).
REQUIRED_KEYS = ("auth_tps", "pgbench_tps", "ratio", "p50_ms", "p95_ms", "p99_ms", "p999_ms",
                 "max_ms", "clients", "errors", "phases", "verify_ok", "machine")


def latency_summary(hist: HdrHistogram) -> dict[str, float | int]:
    """Percentiles and max in milliseconds (histogram values are microseconds)."""
    out: dict[str, float | int] = {"count": hist.get_total_count()}
    if hist.get_total_count() == 0:
        out.update(dict.fromkeys([*PERCENTILES, "max_ms", "mean_ms"], 0.0))
        return out
    for key, pct in PERCENTILES.items():
        out[key] = round(hist.get_value_at_percentile(pct) / 1000.0, 3)
    out["max_ms"] = round(hist.get_max_value() / 1000.0, 3)
    out["mean_ms"] = round(hist.get_mean_value() / 1000.0, 3)
    return out


def percentile_curve(hist: HdrHistogram, points: int = 60) -> list[tuple[float, float]]:
    """(percentile, latency ms) points on the usual HDR axis (log of 1/(1-p))."""
    if hist.get_total_count() == 0:
        return []
    curve: list[tuple[float, float]] = []
    for i in range(points + 1):
        # 0 .. 99.999 spaced evenly on log10(1/(1-p)) from 1 to 5 nines.
        nines = 5.0 * i / points
        pct = 100.0 * (1.0 - 10.0 ** (-nines))
        curve.append((round(pct, 5), hist.get_value_at_percentile(pct) / 1000.0))
    return curve


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "system": f"{platform.system()} {platform.release()}",
                            "machine": platform.machine()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "Hypervisor vendor", "Thread(s) per core"):
            info[key.strip().lower().replace(" ", "_").replace("(s)", "s")] = value.strip()
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            first = handle.readline().split()
        info["memory_gib"] = round(int(first[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def git_commit(repo: Path) -> str | None:
    """The short commit id, with "-dirty" when tracked files differ from it (earlier
    results in benchmarks/results excepted: they are the harness's output)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "-C", str(repo), "diff", "--quiet", "HEAD", "--", ".",
                                ":(exclude)benchmarks/results"],
                               capture_output=True, timeout=10, check=False).returncode == 1
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return (commit + "-dirty" if dirty else commit) or None


def write_json(results: dict[str, Any], out_dir: Path, stamp: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=True) + "\n"
    latest = out_dir / "latest.json"
    stamped = out_dir / f"run-{stamp}.json"
    latest.write_text(text, encoding="utf-8")
    stamped.write_text(text, encoding="utf-8")
    return latest, stamped


# A phase that lost this share of all cores to other guests is flagged in the summary.
STOLEN_WARN_PCT = 5.0


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pg_settings_text(results: dict[str, Any]) -> str:
    extra = (results.get("settings") or {}).get("pg_settings") or {}
    if not extra:
        return ""
    return (" PostgreSQL parameters set for this run on top of the project's: "
            + ", ".join(f"`{name} = {value}`" for name, value in sorted(extra.items())) + ".")


def _card_cache_text(results: dict[str, Any]) -> str:
    ttl = (results.get("settings") or {}).get("card_cache_ttl_s")
    if ttl is None:
        return ""
    return f" The switch's card cache kept a card for {ttl:g} s (`--card-cache-ttl`)."


def _wal_warm_text(results: dict[str, Any]) -> str:
    warm = (results.get("settings") or {}).get("wal_warm")
    if not warm:
        return ""
    return (f" Before loading, {warm['segments']} WAL segments were walked through and "
            f"checkpointed ({warm['seconds']:.1f} s), so {warm['wal_files']} WAL files were "
            "there to reuse.")


def markdown_summary(results: dict[str, Any]) -> str:
    """A short human summary: headline, every phase, verification."""
    lines = [
        f"# atm-switch benchmark ({results.get('started_at', '')})",
        "",
        f"Machine: {results['machine'].get('cpus')} CPUs "
        f"({results['machine'].get('model_name', 'unknown model')}), "
        f"commit {results.get('commit') or 'unknown'}; mode: {results.get('profile')}; "
        f"ISO 8583 codec: {results.get('codec') or 'unknown'}."
        + _pg_settings_text(results) + _wal_warm_text(results) + _card_cache_text(results),
        "",
        f"**Headline (closed loop, {results['clients']} ATMs):** "
        f"{_fmt(results['auth_tps'])} authorizations/s vs pgbench -N {_fmt(results['pgbench_tps'])}"
        f" tps: ratio **{_fmt(results['ratio'], 2)}**; p50 {_fmt(results['p50_ms'], 2)} ms, "
        f"p99 {_fmt(results['p99_ms'], 2)} ms, p99.9 {_fmt(results['p999_ms'], 2)} ms; "
        f"errors {results['errors']}.",
        "",
        *_rounds_lines(results),
        *_open_rounds_lines(results),
        "CPU per authorization at that point: switch "
        f"{_fmt(results.get('switch_cpu_ms_per_auth'), 3)} ms, PostgreSQL "
        f"{_fmt(results.get('postgres_cpu_ms_per_auth'), 3)} ms, load generator "
        f"{_fmt(results.get('loadgen_cpu_ms_per_auth'), 3)} ms; CPU-bound estimate on these "
        f"cores alone (a core at most for each switch process): "
        f"{_fmt(results.get('cpu_bound_tps_estimate'), 0)} auth/s; CPU ratio "
        f"estimate (pgbench CPU per transaction / CPU per authorization): "
        f"{_fmt(results.get('cpu_ratio_estimate'), 2)}. Other load on the machine during the "
        f"window: {_fmt(results.get('other_load_pct'), 0)}% of all cores; stolen by the "
        f"hypervisor: {_fmt(results.get('stolen_pct'), 0)}%.",
        "",
        "| phase | mode | ATMs | rate | auth/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms |"
        " errors | retries | CPU ms/auth switch / PG / loadgen | other load / stolen |"
        " pgbench tps |"
        " ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cpus = results["machine"].get("cpus") or 1
    for ph in results["phases"]:
        lat = ph["latency"]
        lines.append(
            f"| {ph['name']} | {ph['mode']} | {ph['clients']} | "
            f"{_fmt(ph.get('rate_tps'), 0) if ph.get('rate_tps') else '-'} | "
            f"{_fmt(ph['auth_tps'])} | {_fmt(lat['p50_ms'], 2)} | {_fmt(lat['p95_ms'], 2)} | "
            f"{_fmt(lat['p99_ms'], 2)} | {_fmt(lat['p999_ms'], 2)} | {_fmt(lat['max_ms'], 2)} | "
            f"{ph['errors']} | {_fmt(ph.get('ledger_retries'), 0)} | "
            f"{_fmt(ph.get('switch_cpu_ms_per_auth'), 2)} / "
            f"{_fmt(ph.get('postgres_cpu_ms_per_auth'), 2)} / "
            f"{_fmt(ph.get('loadgen_cpu_ms_per_auth'), 2)} | {_other(ph, cpus)} | "
            f"{_pgbench_cell(ph.get('pgbench'))} | {_fmt(ph.get('ratio'), 2)} |")
    lines += ["", "CPU ms/auth: CPU time of the switch process(es), of PostgreSQL and of the "
              "load generator per measured authorization. Other load: CPU used by other "
              "processes on the machine during the window, as a share of all cores (a shared "
              "machine makes every figure pessimistic). Stolen: time the cores were ready "
              "but the hypervisor ran another guest (steal), same scale; a phase with "
              "stolen time has latency that nothing on this machine caused."]
    stolen = [(ph["name"], share) for ph in results["phases"]
              if (share := share_pct(ph, "stolen_cpu_s", cpus)) is not None
              and share >= STOLEN_WARN_PCT]
    if stolen:
        lines += ["", "**The hypervisor took CPU time from this run** (steal, as a share of "
                  "all cores): " + ", ".join(f"{name} {share:.0f}%" for name, share in stolen)
                  + ". Those phases' throughput and latency are pessimistic; their CPU per "
                  "authorization (process time, which steal does not count) and the CPU "
                  "ratio are the figures to compare."]
    busy = [(ph["name"], line) for ph in results["phases"]
            if (line := busy_line(ph, cpus))]
    if busy:
        lines += ["", "How busy the cores were (shares of all cores; the switch's request "
                  "path runs on one event loop, so its CPU as a share of one core is how "
                  "close it is to its own limit; preempted: how often the loop lost its core "
                  "while it could still run, mostly to a process it had just woken). The "
                  "open loop's rate is a share of the best closed-loop throughput, but "
                  "smaller group commits and processes idling between requests cost more CPU "
                  "per authorization there: "
                  + "; ".join(f"{name} {line}" for name, line in busy) + "."]
    stages = [(ph["name"], stage_line(ph)) for ph in results["phases"]]
    if any(text for _, text in stages):
        lines += ["", "Inside the switch (its own histograms, mean per request in the window):",
                  ""]
        lines += [f"- {name}: {text}" for name, text in stages if text]
    pauses = [(ph["name"], ph.get("loadgen_gc")) for ph in results["phases"]]
    if any(p for _, p in pauses):
        lines += ["", "The load generator's own garbage-collector pauses (latency the switch "
                      "did not cause):", ""]
        lines += [f"- {name}: {p['collections']} collections, longest {p['pause_max_ms']:.1f} ms"
                  for name, p in pauses if p]
    late = [(ph["name"], ph.get("send_late")) for ph in results["phases"] if ph.get("send_late")]
    if late:
        lines += ["", "How late the load generator sent in the open loop, against the intended "
                      "times (its own delay, inside the latency above):", ""]
        lines += [f"- {name}: p50 {x['p50_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms, "
                  f"max {x['max_ms']:.1f} ms" for name, x in late]
    flushes = [(ph["name"], text) for ph in results["phases"] if (text := wal_flush_text(ph))]
    if flushes:
        lines += ["", "WAL flushes in each window (PostgreSQL's own timing, `pg_stat_io`; every "
                      "commit waits for one, so a disk slower than usual shows here first):", ""]
        lines += [f"- {name}: {text}" for name, text in flushes]
    functions = [(ph["name"], text) for ph in results["phases"]
                 if (text := ledger_functions_text(ph))]
    if functions:
        lines += ["", "PostgreSQL's time in the ledger's functions in each window "
                      "(`track_functions`; the group commit's cycle is this, its WAL flush "
                      "and the switch's answers):", ""]
        lines += [f"- {name}: {text}" for name, text in functions]
    verdict = "clean" if results["verify_ok"] else "FAILED"
    lines += ["", f"Ledger verify after the run: **{verdict}**."]
    return "\n".join(lines) + "\n"


def _rounds_lines(results: dict[str, Any]) -> list[str]:
    ratios = [r for r in results.get("ratio_rounds") or [] if r is not None]
    if len(ratios) < 2:
        return []
    return [f"Ratio in {len(ratios)} paired rounds at {results['clients']} ATMs (each the "
            "closed loop, then pgbench -N at the same client count, one after the other): "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f"; the headline is the median round ({results.get('headline_phase')}).", ""]


def _open_rounds_lines(results: dict[str, Any]) -> list[str]:
    head = results.get("open_loop")
    if not head:
        return []
    rounds = head.get("rounds_p99_ms") or []
    text = (f"**Open loop at {_fmt(head.get('rate_tps'), 0)}/s over {head.get('clients')} ATM "
            f"connections:** p99 {_fmt(head.get('p99_ms'), 2)} ms (target 25), p99.9 "
            f"{_fmt(head.get('p999_ms'), 2)} ms")
    if len(rounds) > 1:
        text += (f"; p99 in {len(rounds)} rounds one after the other: "
                 + ", ".join(f"{r:.1f}" for r in rounds)
                 + f" ms, the headline is the median round ({head.get('phase')})")
    return [text + ".", ""]


def stage_line(phase: dict[str, Any]) -> str:
    """"decode 0.02 · … · total 9.1 ms; 3.5 per group commit; …" from a phase's
    `switch_means` (see `histogram_means`) and its ledger transactions."""
    means = phase.get("switch_means")
    if not means:
        return ""
    parts = [f"{key.partition(':')[2]} {value:.3g}" for key, value in means.items()
             if key.startswith("stage_ms:")]
    text = " · ".join(parts) + " ms" if parts else ""
    if "card_miss_share" in means:
        text += f"; {means['card_miss_share']:.1%} of card lookups read from the database"
    if "total_p99_le_ms" in means:
        text += f"; p99 of total <= {means['total_p99_le_ms']:g} ms"
    if "batch_operations" in means:
        text += f"; {means['batch_operations']:.1f} operations per group commit"
        if "set_wise_share" in means:
            text += f" ({means['set_wise_share']:.0%} of them set-wise)"
    if means.get("commit_round_trip_ms") is not None:
        text += f"; a group commit's round trip {means['commit_round_trip_ms']:.2f} ms"
        if phase.get("duration_s") and means.get("commits"):
            text += f", one every {phase['duration_s'] * 1000.0 / means['commits']:.2f} ms"
    if phase.get("ledger_transactions_per_auth") is not None:
        text += f"; {phase['ledger_transactions_per_auth']:.3f} database transactions per request"
    if "gc_full" in means:
        text += f"; {means['gc_full']:.0f} full GC"
        if means["gc_full"]:
            text += f" of {means['gc_full_pause_ms']:.1f} ms mean"
    if "gc_young" in means:
        text += (f"; {means['gc_young']:.0f} young GCs, "
                 f"{means['gc_young_pause_ms_total']:.0f} ms in all")
    return text


def wal_flush_text(ph: dict[str, Any]) -> str:
    """A phase's WAL flushes, and pgbench's in its own window; "" when not measured."""
    def one(flush: dict[str, Any] | None, per: str) -> str:
        if not flush:
            return ""
        text = f"{flush['syncs']:,} flushes"
        if flush.get("syncs_per_auth") is not None:
            text += f" ({flush['syncs_per_auth']:.3f} per {per})"
        if flush.get("sync_ms_mean") is not None:
            text += f", {flush['sync_ms_mean']:.3f} ms each on average"
        if flush.get("write_ms_mean") is not None:
            text += f", WAL writes {flush['write_ms_mean']:.3f} ms"
        if flush.get("bytes_per_auth") is not None:
            text += (f"; {flush['bytes_per_auth'] / 1000:.2f} kB of WAL per {per}"
                     f" ({flush.get('fpi_per_auth') or 0:.3f} full-page images)")
        if flush.get("segment_init_writes"):
            text += f"; **{flush['segment_init_writes']:,} write(s) creating new WAL files**"
        if flush.get("checkpoints"):
            text += f"; **{flush['checkpoints']} checkpoint(s) started**"
        return text

    text = one(ph.get("wal_flush"), "authorization")
    pgbench = one((ph.get("pgbench") or {}).get("wal_flush"), "transaction")
    if text and pgbench:
        return f"{text}; pgbench -N's window: {pgbench}"
    return text


def ledger_functions_text(ph: dict[str, Any]) -> str:
    """"9,536 group commits, 1.090 ms each (0.983 ms its own); ledger_reverse 0.830 a
    commit, 0.128 ms each; ledger_authorize 0.050 a commit, 0.227 ms each"; "" when the
    phase has no such figures."""
    fn = ph.get("ledger_functions")
    if not fn or not fn.get("commits"):
        return ""
    text = f"{fn['commits']:,} group commits"
    if fn.get("commit_ms") is not None:
        text += f", {fn['commit_ms']:.3f} ms each"
        if fn.get("commit_self_ms") is not None:
            text += f" ({fn['commit_self_ms']:.3f} ms its own)"
    for short in ("reverse", "authorize"):
        calls, ms = fn.get(f"{short}_calls_per_commit"), fn.get(f"{short}_ms")
        if calls:
            text += f"; ledger_{short} {calls:.3f} a commit"
            if ms is not None:
                text += f", {ms:.3f} ms each"
    return text


def busy_line(ph: dict[str, Any], cpus: int) -> str:
    """"84% busy (switch 39%, PostgreSQL 30%, load generator 15%), the switch 0.78 of
    one core, preempted 180/s": shares of all cores over the phase's window, then the
    switch's CPU per second of the window (out of a core per switch process) and how
    often its event loop lost its core; "" when the machine's figure is missing."""
    busy = share_pct(ph, "machine_busy_cpu_s", cpus)
    if busy is None:
        return ""
    parts = [(label, share_pct(ph, key, cpus)) for label, key in (
        ("switch", "switch_cpu_s"), ("PostgreSQL", "postgres_cpu_s"),
        ("load generator", "loadgen_cpu_s"))]
    shown = ", ".join(f"{label} {share:.0f}%" for label, share in parts if share is not None)
    text = f"{busy:.0f}% busy" + (f" ({shown})" if shown else "")
    if ph.get("switch_cpu_s") is not None:
        processes = ph.get("switch_processes") or 1
        cores = "one core" if processes == 1 else f"{processes} cores ({processes} processes)"
        text += f", the switch {ph['switch_cpu_s'] / ph['duration_s']:.2f} of {cores}"
        if ph.get("switch_preempted_per_s") is not None:
            text += f", preempted {ph['switch_preempted_per_s']:.0f}/s"
    return text


def _pgbench_cell(pgbench: dict[str, Any] | None) -> str:
    """pgbench's tps, with the share of the cores stolen during its window."""
    if not pgbench:
        return "n/a"
    stolen = pgbench.get("stolen_pct")
    tps = _fmt(pgbench.get("tps"))
    return tps if stolen is None else f"{tps} ({stolen:.0f}% stolen)"


def cores_pct(seconds: float, duration_s: float, cpus: int) -> float:
    """CPU seconds as a percentage of all cores over a window of `duration_s`."""
    return 100.0 * seconds / (duration_s * cpus)


def share_pct(ph: dict[str, Any], key: str, cpus: int) -> float | None:
    """A phase's CPU seconds under `key` as a percentage of all cores over its window."""
    seconds = ph.get(key)
    if seconds is None or not ph.get("duration_s"):
        return None
    return cores_pct(seconds, ph["duration_s"], cpus)


def _other(ph: dict[str, Any], cpus: int) -> str:
    shares = (share_pct(ph, key, cpus) for key in ("other_cpu_s", "stolen_cpu_s"))
    return " / ".join("n/a" if share is None else f"{share:.0f}%" for share in shares)


def plot(results: dict[str, Any], curves: dict[str, list[tuple[float, float]]],
         path: Path) -> Path:
    """Latency distribution (percentile curves) and throughput against concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import math

    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, curve in curves.items():
        if not curve:
            continue
        xs = [1.0 / max(1e-6, 1.0 - p / 100.0) for p, _ in curve]
        ax1.plot(xs, [ms for _, ms in curve], label=name)
    ax1.set_xscale("log")
    ax1.set_yscale("log")  # tails span 1 ms .. seconds
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    ax1.set_xticks(ticks)
    ax1.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax1.set_xlabel("percentile")
    ax1.set_ylabel("latency (ms, log scale)")
    ax1.set_title("End-to-end latency distribution")
    ax1.grid(True, which="both", alpha=0.3)
    if any(curves.values()):
        ax1.legend(fontsize=8)

    sweep = [ph for ph in results["phases"] if ph["mode"] == "closed" and ph["group"] == "sweep"]
    clients = [ph["clients"] for ph in sweep]
    ax2.plot(clients, [ph["auth_tps"] for ph in sweep], "o-", label="switch authorizations/s")
    pg = [(ph["clients"], ph["pgbench"]["tps"]) for ph in sweep if ph.get("pgbench")]
    if pg:
        ax2.plot([c for c, _ in pg], [t for _, t in pg], "s--", label="pgbench -N tps")
    rounds = [ph for ph in results["phases"] if ph["mode"] == "closed" and ph["group"] == "ratio"]
    if rounds:  # the further paired rounds at the headline concurrency, as points
        ax2.plot([ph["clients"] for ph in rounds], [ph["auth_tps"] for ph in rounds], "o",
                 color="C0", alpha=0.5, label="authorizations/s, further rounds")
        pg_rounds = [ph for ph in rounds if ph.get("pgbench")]
        ax2.plot([ph["clients"] for ph in pg_rounds], [ph["pgbench"]["tps"] for ph in pg_rounds],
                 "s", color="C1", alpha=0.5, label="pgbench -N tps, further rounds")
    if clients and max(clients) > 1:
        ax2.set_xscale("log", base=2)
    ax2.set_xticks(clients or [1])
    ax2.set_xticklabels([str(c) for c in clients] or ["1"])
    ax2.set_xlabel("concurrency (ATM connections / pgbench clients)")
    ax2.set_ylabel("transactions per second")
    ax2.set_title("Throughput against concurrency (closed loop)")
    ax2.grid(True, alpha=0.3)
    if sweep:
        p99 = ax2.twinx()
        p99.plot(clients, [ph["latency"]["p99_ms"] for ph in sweep], "x:", color="grey",
                 label="switch p99 (ms)")
        p99.set_ylabel("p99 latency (ms)")
        top = max([ph["latency"]["p99_ms"] for ph in sweep] + [1.0])
        p99.set_ylim(0, math.ceil(top * 1.2))
        p99.legend(loc="lower right", fontsize=8)
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def headline_clients(sweep: Sequence[int], clients: int) -> int:
    """The sweep's concurrency the headline is taken at: `clients`, or the nearest
    below it (the smallest of the sweep when none is)."""
    return max([c for c in sweep if c <= clients] or [min(sweep)])


def ratio_round_phases(phases: Sequence[dict[str, Any]], clients: int) -> list[dict[str, Any]]:
    """The closed-loop phases at the headline concurrency, in the order they ran: the
    sweep's, then the further paired rounds (group "ratio")."""
    sweep = [ph for ph in phases if ph["mode"] == "closed" and ph["group"] == "sweep"]
    assert sweep, "no closed-loop phase"
    at = headline_clients([ph["clients"] for ph in sweep], clients)
    return [ph for ph in phases if ph["mode"] == "closed" and ph["clients"] == at
            and ph["group"] in ("sweep", "ratio")]


def open_headline(open_phases: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Of the open loop's rounds (same rate, one after the other), the one whose p99
    is the median: the higher one of an even count. None without an open loop."""
    if not open_phases:
        return None
    ranked = sorted(open_phases, key=lambda ph: ph["latency"]["p99_ms"])
    return ranked[len(ranked) // 2]


def headline(phases: Sequence[dict[str, Any]], clients: int) -> dict[str, Any]:
    """The closed-loop phase at `clients` ATMs (or the nearest below it); with several
    paired rounds there, the round whose ratio is the median (the lower one of an
    even count, and the sweep's phase when a round has no ratio)."""
    rounds = ratio_round_phases(phases, clients)
    ratios = [ph.get("ratio") for ph in rounds]
    if len(rounds) == 1 or any(r is None for r in ratios):
        return rounds[0]
    ranked = sorted(rounds, key=lambda ph: ph["ratio"])
    return ranked[(len(ranked) - 1) // 2]
