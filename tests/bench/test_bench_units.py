"""The benchmark's pure pieces: workload, chooser rules, parsing, reporting, recording."""

from __future__ import annotations

import random
import subprocess
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import report
from benchmarks.harness import _errors_by_phase
from benchmarks.loadgen import Recorder, decode_histogram, encode_histogram, merge_results
from benchmarks.pgbench import PgbenchError, parse_output
from benchmarks.probes import (
    counter_delta,
    cpu_delta,
    histogram_means,
    ledger_functions,
    machine_cpu_s,
    parse_counters,
    wal_flush,
)
from benchmarks.workload import (
    EXPECTED_CODE,
    CardState,
    Dataset,
    Mix,
    Op,
    OpChooser,
    Withdrawn,
    mask_pan,
)
from messages.codec import IsoMessage
from messages.fields import luhn_complete, luhn_ok


def test_mix_parse_and_defaults() -> None:
    assert Mix().as_dict() == {"withdrawal": 70, "balance": 15, "wrong_pin": 5,
                               "insufficient": 5, "reversal": 5}
    mix = Mix.parse("withdrawal=50, balance=50, wrong-pin=0, insufficient=0, reversal=0")
    assert mix.weights()[Op.BALANCE] == 50 and mix.weights()[Op.WRONG_PIN] == 0
    # Operations not named are not sent: a subset is the whole mix.
    assert Mix.parse("withdrawal=80,balance=20").as_dict() == {
        "withdrawal": 80, "balance": 20, "wrong_pin": 0, "insufficient": 0, "reversal": 0}
    for bad in ("bogus=1", "withdrawal", "withdrawal=x",
                "withdrawal=0,balance=0,wrong_pin=0,insufficient=0,reversal=0"):
        with pytest.raises(ValueError):
            Mix.parse(bad)


def test_dataset_is_reproducible_valid_and_masked() -> None:
    a = Dataset.generate(50, 4, seed=7)
    assert a == Dataset.generate(50, 4, seed=7)
    assert all(luhn_ok(c.pan) and len(c.pan) == 16 for c in a.cards)
    assert len({c.pan for c in a.cards}) == 50
    assert all(len(t.tpk_hex) == 32 for t in a.atms)
    card = a.cards[0]
    assert card.pan not in repr(card) and card.pin not in repr(card)
    assert card.wrong_pin != card.pin
    assert mask_pan("4999990000000001") == "499999******0001"
    assert luhn_ok(luhn_complete("499999000000123"))
    prov = a.provisioning()
    assert len(prov["terminals"]) == 4 and len(prov["cards"]) == 50
    assert all("daily_limit" not in c for c in prov["cards"])


def test_partition_covers_every_connection() -> None:
    ds = Dataset.generate(10, 2)
    parts = ds.partition(4)
    assert sorted(i for p in parts for i in p) == list(range(10))
    wrapped = ds.partition(16)  # fewer cards than connections: cards are shared
    assert all(wrapped)


def _chooser(mix: Mix, cards: int = 20) -> OpChooser:
    return OpChooser(mix, list(range(cards)), random.Random(3))


def test_wrong_pin_only_on_a_card_whose_last_pin_was_good() -> None:
    chooser = _chooser(Mix(withdrawal=0, balance=0, wrong_pin=1, insufficient=0, reversal=0),
                       cards=3)
    seen_streaks = []
    for _ in range(30):
        op, state, _ = chooser.next()
        if op is Op.WRONG_PIN:
            seen_streaks.append(state.wrong_streak)
        chooser.done(op, state, EXPECTED_CODE[op])
    assert seen_streaks and all(s == 0 for s in seen_streaks)
    assert chooser.substituted > 0  # once every card had a wrong PIN, it turned to balance
    # A good PIN clears the streak again.
    chooser2 = _chooser(Mix(), cards=1)
    chooser2.states[0].wrong_streak = 1
    chooser2.done(Op.BALANCE, chooser2.states[0], "00")
    assert chooser2.states[0].wrong_streak == 0


def test_reversal_takes_an_approved_withdrawal_or_substitutes() -> None:
    chooser = _chooser(Mix(withdrawal=0, balance=0, wrong_pin=0, insufficient=0, reversal=1))
    op, state, original = chooser.next()
    assert op is Op.WITHDRAWAL and original is None and chooser.substituted == 1
    msg = IsoMessage("0200", {11: "000001"})
    chooser.done(op, state, "00", Withdrawn(state.index, msg, 5000))
    op, state2, original = chooser.next()
    assert op is Op.REVERSAL and original is not None and original.request is msg
    assert state2.index == state.index and state2.busy


def test_busy_cards_are_not_chosen_while_idle_ones_exist() -> None:
    chooser = _chooser(Mix(), cards=2)
    _, first, _ = chooser.next()
    _, second, _ = chooser.next()
    assert first.index != second.index or chooser.collisions == 1


def test_pgbench_output_parsing() -> None:
    text = ("transaction type: <builtin: simple update>\nscaling factor: 1\n"
            "number of clients: 8\nnumber of transactions actually processed: 9000\n"
            "number of failed transactions: 0 (0.000%)\nlatency average = 4.321 ms\n"
            "initial connection time = 12.3 ms\ntps = 1851.234567 (without initial connection "
            "time)\n")
    assert parse_output(text) == (1851.234567, 4.321, 9000, 0)
    with pytest.raises(PgbenchError):
        parse_output("nothing here")


def test_metrics_counters_parse_and_delta() -> None:
    page = ("# HELP atm_switch_ledger_retries_total Ledger retries.\n"
            "# TYPE atm_switch_ledger_retries_total counter\n"
            'atm_switch_ledger_retries_total{reason="serialization"} 3.0\n'
            'atm_switch_ledger_retries_total{reason="deadlock"} 1.0\n')
    counters = parse_counters(page)
    assert counters["atm_switch_ledger_retries_total"] == 4.0
    assert counters["atm_switch_load_shed_total"] == 0.0
    later = dict(counters, atm_switch_ledger_retries_total=10.0)
    delta = counter_delta(counters, later)
    assert delta is not None and delta["atm_switch_ledger_retries_total"] == 6.0
    assert counter_delta(None, later) is None


def test_stage_and_batch_means_from_histograms() -> None:
    def page(pin_sum: float, pin_count: int, batch_sum: float, batches: int,
             full_gcs: int = 0, full_gc_s: float = 0.0) -> str:
        return (
            "# HELP atm_switch_authorization_duration_seconds Stages.\n"
            "# TYPE atm_switch_authorization_duration_seconds histogram\n"
            'atm_switch_authorization_duration_seconds_bucket{stage="pin",le="+Inf"} '
            f"{pin_count}\n"
            f'atm_switch_authorization_duration_seconds_count{{stage="pin"}} {pin_count}\n'
            f'atm_switch_authorization_duration_seconds_sum{{stage="pin"}} {pin_sum}\n'
            'atm_switch_authorization_duration_seconds_count{stage="mac"} 0\n'
            'atm_switch_authorization_duration_seconds_sum{stage="mac"} 0\n'
            # Whole-request time: cumulative buckets (le in seconds).
            'atm_switch_authorization_duration_seconds_bucket{stage="total",le="0.005"} '
            f"{pin_count // 2}\n"
            'atm_switch_authorization_duration_seconds_bucket{stage="total",le="0.01"} '
            f"{pin_count - 1}\n"
            'atm_switch_authorization_duration_seconds_bucket{stage="total",le="0.05"} '
            f"{pin_count}\n"
            'atm_switch_authorization_duration_seconds_bucket{stage="total",le="+Inf"} '
            f"{pin_count}\n"
            "# HELP atm_switch_ledger_batch_operations Batches.\n"
            "# TYPE atm_switch_ledger_batch_operations histogram\n"
            f"atm_switch_ledger_batch_operations_count {batches}\n"
            f"atm_switch_ledger_batch_operations_sum {batch_sum}\n"
            "# HELP atm_switch_ledger_commit_seconds Commits.\n"
            "# TYPE atm_switch_ledger_commit_seconds histogram\n"
            f"atm_switch_ledger_commit_seconds_count {batches}\n"
            f"atm_switch_ledger_commit_seconds_sum {batches * 0.0025}\n"
            "# HELP atm_switch_ledger_set_wise_operations_total Set-wise.\n"
            "# TYPE atm_switch_ledger_set_wise_operations_total counter\n"
            f"atm_switch_ledger_set_wise_operations_total {batch_sum * 0.6}\n"
            "# HELP atm_switch_gc_pause_seconds GC.\n"
            "# TYPE atm_switch_gc_pause_seconds histogram\n"
            f'atm_switch_gc_pause_seconds_count{{generation="0"}} {900 + pin_count}\n'
            f'atm_switch_gc_pause_seconds_sum{{generation="0"}} {0.2 + pin_count / 10_000}\n'
            f'atm_switch_gc_pause_seconds_count{{generation="2"}} {full_gcs}\n'
            f'atm_switch_gc_pause_seconds_sum{{generation="2"}} {full_gc_s}\n')

    before = parse_counters(page(1.0, 100, 50.0, 20, 1, 0.5))
    after = parse_counters(page(1.5, 300, 400.0, 120, 1, 0.5))
    means = histogram_means(counter_delta(before, after))
    # 0.5 s over 200 PIN checks; 350 operations over 100 batches, 60% of them set-wise;
    # no MAC checked: no mean; no full collection in the window; of the window's 200
    # requests 100 took at most 5 ms and all at most 10 ms, so the 99th percentile is in
    # the 10 ms bucket; 200 young collections took 20 ms in all; the 100 commits came
    # back 2.5 ms after their statements were issued, on average.
    assert means == {"stage_ms:pin": 2.5, "batch_operations": 3.5, "set_wise_share": 0.6,
                     "gc_full": 0.0, "total_p99_le_ms": 10.0, "gc_young": 200.0,
                     "gc_young_pause_ms_total": 20.0, "commits": 100.0,
                     "commit_round_trip_ms": 2.5}
    assert report.stage_line({"switch_means": means, "ledger_transactions_per_auth": 0.25,
                              "duration_s": 0.4}) \
        == ("pin 2.5 ms; p99 of total <= 10 ms; 3.5 operations per group commit "
            "(60% of them set-wise); a group commit's round trip 2.50 ms, one every 4.00 ms; "
            "0.250 database transactions per request; 0 full GC; "
            "200 young GCs, 20 ms in all")
    later = parse_counters(page(1.5, 300, 400.0, 120, 3, 0.506))
    means = histogram_means(counter_delta(after, later))
    assert means is not None and means["gc_full"] == 2 and means["gc_full_pause_ms"] == 3.0
    assert "; 2 full GC of 3.0 ms mean; 0 young GCs" in report.stage_line({"switch_means": means})
    assert histogram_means(None) is None


def test_recorder_window_and_merge() -> None:
    rec = Recorder(t_measure=10.0, t_end=20.0)
    ok = IsoMessage("0210", {39: "00"})
    rec.record(Op.WITHDRAWAL, 9.0, 9.5, ok, None, window_by=9.5)      # warm-up: not counted
    rec.record(Op.WITHDRAWAL, 10.0, 10.004, ok, None, window_by=10.004)
    rec.record(Op.BALANCE, 11.0, 11.010, ok, None, window_by=11.010)
    rec.record(Op.WRONG_PIN, 12.0, 12.0, ok, None, window_by=12.0)    # 00 where 55 expected
    rec.record(Op.WITHDRAWAL, 13.0, 23.0, None, "timeout", window_by=13.0)
    result = rec.result()
    assert result["completed"] == 3
    assert result["errors"] == {"unexpected_code": 1, "timeout": 1}
    assert result["unexpected"] == {"wrong_pin:00": 1}
    result["loadgen_gc"] = {"collections": 4, "pause_total_ms": 2.0, "pause_max_ms": 1.5}
    other = dict(result, loadgen_gc={"collections": 1, "pause_total_ms": 3.0,
                                     "pause_max_ms": 3.0})
    merged = merge_results([result, other])
    assert merged["completed"] == 6 and merged["errors"]["timeout"] == 2
    assert merged["loadgen_gc"] == {"collections": 5, "pause_total_ms": 5.0,
                                    "pause_max_ms": 3.0}
    assert merged["hist"].get_total_count() == 6
    summary = report.latency_summary(merged["hist"])
    assert 3.9 <= summary["p50_ms"] <= 4.1 and 9.9 <= summary["max_ms"] <= 10.1
    assert decode_histogram(encode_histogram(merged["hist"])).get_total_count() == 6


def test_report_headline_and_markdown() -> None:
    def phase(name: str, clients: int, tps: float) -> dict[str, object]:
        lat = {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "p999_ms": 4.0, "max_ms": 5.0}
        return {"name": name, "group": "sweep", "mode": "closed", "clients": clients,
                "auth_tps": tps, "latency": lat, "errors": 0, "ledger_retries": 0,
                "pgbench": {"tps": 2 * tps}, "ratio": 0.5}
    phases = [phase("closed-8", 8, 100.0), phase("closed-32", 32, 300.0),
              phase("closed-128", 128, 200.0)]
    phases[1]["loadgen_gc"] = {"collections": 7, "pause_total_ms": 9.0, "pause_max_ms": 2.4}
    assert report.headline(phases, 32)["clients"] == 32
    assert report.headline(phases, 16)["clients"] == 8
    results = {"machine": {"cpus": 2}, "clients": 32, "auth_tps": 300.0, "pgbench_tps": 600.0,
               "ratio": 0.5, "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 4.0, "errors": 0,
               "phases": phases, "verify_ok": True}
    text = report.markdown_summary(results)
    assert "closed-32" in text and "ratio **0.50**" in text and "clean" in text
    assert "- closed-32: 7 collections, longest 2.4 ms" in text
    assert "hypervisor took" not in text
    # A phase that lost 5% of the cores or more to other guests is named as such.
    phases[1].update(duration_s=20.0, other_cpu_s=0.4, stolen_cpu_s=8.0)
    phases[2].update(duration_s=20.0, other_cpu_s=0.0, stolen_cpu_s=1.0,
                     pgbench={"tps": 400.0, "stolen_pct": 31.0})
    text = report.markdown_summary(results)
    assert "| 1% / 20% | 600.0 | 0.50 |" in text
    assert "| 0% / 2% | 400.0 (31% stolen) | 0.50 |" in text
    assert "(steal, as a share of all cores): closed-32 20%." in text
    # A phase with the machine's figures says how busy the cores were, who kept them
    # busy, how much of one core the switch used and how often it lost it.
    assert "How busy the cores were" not in text
    phases.append(dict(phase("open-150tps", 32, 150.0), mode="open", duration_s=20.0,
                       machine_busy_cpu_s=30.0, switch_cpu_s=14.0, postgres_cpu_s=10.0,
                       loadgen_cpu_s=5.0, switch_preempted_per_s=212.4))
    text = report.markdown_summary(results)
    assert ("open-150tps 75% busy (switch 35%, PostgreSQL 25%, load generator 12%), "
            "the switch 0.70 of one core, preempted 212/s." in text)
    phases[-1]["switch_processes"] = 2
    assert "the switch 0.70 of 2 cores (2 processes), preempted 212/s." in (
        report.markdown_summary(results))


def test_verifier_output_is_masked() -> None:
    from benchmarks.harness import mask_digits

    text = mask_digits("account CH:9001010028-20: available -10199000; journals 300000")
    assert "9001010028" not in text and "CH:******0028-20" in text
    assert "300000" in text  # short numbers (counts) stay readable


def test_git_commit_names_local_changes(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=bench",
                        "-c", "user.email=bench@example.invalid", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("one\n")
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "latest.md").write_text("run 1\n")
    git("add", "f.txt", "benchmarks")
    git("commit", "-q", "-m", "one")
    clean = report.git_commit(tmp_path)
    assert clean is not None and not clean.endswith("-dirty")
    (results / "latest.md").write_text("run 2\n")
    assert report.git_commit(tmp_path) == clean, "a new result is not a code change"
    (tmp_path / "f.txt").write_text("two\n")
    assert report.git_commit(tmp_path) == f"{clean}-dirty"


def test_a_failed_run_says_where_its_errors_were_and_how_busy_the_machine_was() -> None:
    phases = [
        {"name": "closed-32", "errors": 0, "other_cpu_s": 0.1, "duration_s": 20.0},
        {"name": "open-862tps@1M", "errors": 906, "other_cpu_s": 12.7, "duration_s": 20.0},
    ]
    text = _errors_by_phase(phases)
    assert text.startswith("open-862tps@1M: 906, other processes ")
    assert "closed-32" not in text
    assert _errors_by_phase(phases[:1]) == "no phase counted them"


def test_time_stolen_by_the_hypervisor_is_told_apart_from_other_load(
        monkeypatch: pytest.MonkeyPatch) -> None:
    times = namedtuple("times", "user nice system idle iowait irq softirq steal guest guest_nice")
    monkeypatch.setattr("benchmarks.probes.psutil.cpu_times",
                        lambda: times(10.0, 1.0, 4.0, 50.0, 2.0, 0.0, 1.0, 3.0, 0.5, 0.0))
    busy, stolen = machine_cpu_s()
    # Guest time is already inside user time; steal is neither this machine's work nor idle.
    assert (busy, stolen) == (pytest.approx(16.0), 3.0)  # user, nice, system, softirq
    phase = {"name": "open-900tps", "errors": 12, "other_cpu_s": 0.4, "stolen_cpu_s": 6.0,
             "duration_s": 20.0}
    assert _errors_by_phase([phase]) == (
        "open-900tps: 12, other processes 1% of all cores, 15% stolen by the hypervisor")
    assert report._other(phase, 2) == "1% / 15%"
    assert report._other({"duration_s": 20.0, "other_cpu_s": 0.4}, 2) == "1% / n/a"


@pytest.mark.parametrize("op", [Op.WITHDRAWAL, Op.BALANCE, Op.WRONG_PIN, Op.INSUFFICIENT])
def test_the_load_generators_requests_are_what_the_atm_client_builds(op: Op) -> None:
    from benchmarks.loadgen import AtmSession, LoadSpec
    from hsm.terminal import encrypt_pin_block
    from switch.atm import CardData

    data = Dataset.generate(cards=3, atms=1, seed=7)
    atm = data.atms[0]
    spec = LoadSpec(host="127.0.0.1", port=1, mode="closed",
                    connections=((atm, data.cards),), mix=Mix())
    session = AtmSession(atm, data.cards, Mix(), random.Random(3), spec)
    state = CardState(index=1)
    out, withdrawn = session.build(op, state, None)
    sent = out.message()
    card = data.cards[1]
    pin = card.wrong_pin if op is Op.WRONG_PIN else card.pin
    expected = session.builder.financial_fields(
        CardData(card.pan, card.expiry), processing=sent.fields[3], amount=int(sent.fields[4]),
        pin=None, stan=out.stan,
        extra={52: encrypt_pin_block(atm.tpk_hex, pin, card.pan, 0)})
    assert sent.mti == "0200" and dict(sent.fields) == expected
    assert sent.fields[3] == ("310000" if op is Op.BALANCE else "010000")
    assert (withdrawn is not None) == (op is Op.WITHDRAWAL)
    # The next request of the same card carries the next STAN, the same card fields.
    again = session.build(op, state, None)[0].message()
    assert again.fields[11] != sent.fields[11] and again.fields[2] == card.pan


def test_cpu_of_exited_backends_is_counted_once_they_are_reaped() -> None:
    import sys
    import time

    from benchmarks.probes import CpuProbe, _tree_cpu_s

    # A stand-in postmaster: starts a child that burns ~0.3 s of CPU, reaps it, lingers.
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "subprocess.run([sys.executable, '-c', "
        "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass'])\n"
        "time.sleep(30)\n")])
    try:
        probe = CpuProbe(postgres_pid=parent.pid)
        deadline = time.monotonic() + 10
        while probe.postgres_children() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the child has started
        assert probe.postgres_children() == 1
        probe.wait_reaped(0, timeout_s=10.0)
        assert probe.postgres_children() == 0
        assert _tree_cpu_s([parent.pid]) >= 0.25  # the child's CPU, through the parent
    finally:
        parent.kill()
        parent.wait()


def test_preemptions_of_processes_sharing_a_core_are_counted() -> None:
    import os
    import sys

    from benchmarks.probes import _tree_preempted

    # Two processes that both want the same core for 0.6 s: the scheduler has to take
    # it from each of them many times while they could still run.
    cpu = min(os.sched_getaffinity(0))
    spin = (f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\nprint(flush=True)\n"
            "t = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
            "print(flush=True)\ntime.sleep(30)\n")
    procs = [subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE)
             for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.readline()  # pinned, about to spin
        before = _tree_preempted([proc.pid for proc in procs])
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.readline()  # done spinning, still alive
        assert _tree_preempted([proc.pid for proc in procs]) - before >= 10
        assert _tree_preempted([]) == 0.0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def test_the_request_path_benchmark_runs_the_pipeline_to_an_approval() -> None:
    from benchmarks import request_path

    result = request_path.run(requests=20, rounds=2)
    # The 20 requests once as warm-up, then 2 rounds of them: each reached the ledger.
    assert result["ledger_operations"] == 60
    assert 0 < result["us_per_request_min"] <= result["us_per_request_median"]  # type: ignore[operator]


def test_the_cpu_bound_estimate_allows_each_switch_process_one_core(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.harness import _cpu_bound_tps

    monkeypatch.setattr("benchmarks.harness.os.cpu_count", lambda: 2)
    cpu: dict[str, float | None] = {"switch": 10.0, "postgres": 4.0}
    # 16 CPU seconds for 20,000 authorizations: 2,500/s on two cores, but one event
    # loop that needs 0.5 ms per authorization does 2,000/s at most.
    assert _cpu_bound_tps(cpu, 2.0, 20_000, 1) == 2000.0
    assert _cpu_bound_tps(cpu, 2.0, 20_000, 2) == 2500.0
    assert _cpu_bound_tps({"switch": None, "postgres": 4.0}, 2.0, 20_000, 1) is None


def test_headline_is_the_round_of_median_ratio() -> None:
    def phase(name: str, group: str, clients: int, tps: float, ratio: float | None
              ) -> dict[str, object]:
        lat = {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "p999_ms": 4.0, "max_ms": 5.0}
        return {"name": name, "group": group, "mode": "closed", "clients": clients,
                "auth_tps": tps, "latency": lat, "errors": 0, "ledger_retries": 0,
                "pgbench": None if ratio is None else {"tps": tps / ratio}, "ratio": ratio}
    phases = [phase("closed-8", "sweep", 8, 100.0, 0.2), phase("closed-32", "sweep", 32, 300.0,
                                                                0.55),
              phase("closed-32#2", "ratio", 32, 280.0, 0.41),
              phase("closed-32#3", "ratio", 32, 290.0, 0.47),
              phase("closed-128", "sweep", 128, 320.0, 0.7),
              phase("closed-32@1M", "scale", 32, 250.0, None)]
    assert [ph["name"] for ph in report.ratio_round_phases(phases, 32)] == [
        "closed-32", "closed-32#2", "closed-32#3"]
    assert report.headline(phases, 32)["name"] == "closed-32#3"
    # An even count takes the lower median; one round without pgbench: the sweep's phase.
    assert report.headline(phases[:3], 32)["name"] == "closed-32#2"
    phases[2]["ratio"] = None
    assert report.headline(phases, 32)["name"] == "closed-32"
    assert report.headline(phases, 8)["name"] == "closed-8"
    assert report.headline_clients((8, 32, 128), 4) == 8
    assert report.headline_clients((8, 32, 128), 64) == 32
    results = {"machine": {"cpus": 2}, "clients": 32, "auth_tps": 290.0, "pgbench_tps": 617.0,
               "ratio": 0.47, "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 4.0, "errors": 0,
               "phases": phases, "verify_ok": True, "ratio_rounds": [0.55, 0.41, 0.47],
               "headline_phase": "closed-32#3"}
    text = report.markdown_summary(results)
    assert ("Ratio in 3 paired rounds at 32 ATMs (each the closed loop, then pgbench -N at the "
            "same client count, one after the other): 0.55, 0.41, 0.47; the headline is the "
            "median round (closed-32#3).") in text
    results["ratio_rounds"] = [0.55]
    assert "paired rounds" not in report.markdown_summary(results)


def test_ratio_rounds_option() -> None:
    from benchmarks.harness import Settings, build_parser

    def settings(*argv: str) -> Settings:
        return Settings.from_args(build_parser().parse_args(list(argv)))
    assert settings().ratio_rounds == 3
    assert settings("--quick").ratio_rounds == 1
    assert settings("--ratio-rounds", "5").ratio_rounds == 5
    with pytest.raises(ValueError, match="ratio-rounds"):
        settings("--ratio-rounds", "10")
    with pytest.raises(ValueError, match="ratio-rounds"):
        settings("--ratio-rounds", "0")


def test_wal_segments_option_and_its_line_in_the_summary() -> None:
    from benchmarks.harness import WAL_SEGMENTS, WAL_SEGMENTS_QUICK, Settings, build_parser

    def settings(*argv: str) -> Settings:
        return Settings.from_args(build_parser().parse_args(list(argv)))

    assert settings().wal_segments == WAL_SEGMENTS
    assert settings("--quick").wal_segments == WAL_SEGMENTS_QUICK
    assert settings("--wal-segments", "0").wal_segments == 0
    for bad in ("-1", "129"):
        with pytest.raises(ValueError, match="wal-segments"):
            settings("--wal-segments", bad)
    results = {"machine": {"cpus": 2}, "clients": 32, "auth_tps": 1.0, "pgbench_tps": 2.0,
               "ratio": 0.5, "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 4.0, "errors": 0,
               "phases": [], "verify_ok": True, "settings": {"wal_warm": None}}
    assert "WAL" not in report.markdown_summary(results).split("**Headline")[0]
    results["settings"] = {"wal_warm": {"segments": 64, "wal_files": 66, "seconds": 3.71}}
    assert ("Before loading, 64 WAL segments were walked through and checkpointed "
            "(3.7 s), so 66 WAL files were there to reuse." in report.markdown_summary(results))


def test_pg_settings_for_a_diagnosis_are_checked_and_reported() -> None:
    from benchmarks.harness import Settings, build_parser

    def settings(*argv: str) -> Settings:
        return Settings.from_args(build_parser().parse_args(list(argv)))

    assert settings().pg_settings == ()
    chosen = settings("--pg-set", "shared_preload_libraries=pg_stat_statements,auto_explain",
                      "--pg-set", "auto_explain.log_min_duration = 300ms")
    # The harness's own WAL room and function timing, then what the run asks for
    # (which may override them).
    assert settings().pg_settings_dict == {"min_wal_size": "2GB", "max_wal_size": "8GB",
                                           "track_functions": "pl"}
    assert chosen.pg_settings_dict == {
        "min_wal_size": "2GB", "max_wal_size": "8GB", "track_functions": "pl",
        "shared_preload_libraries": "pg_stat_statements,auto_explain",
        "auto_explain.log_min_duration": "300ms"}
    assert settings("--pg-set", "max_wal_size=4GB").pg_settings_dict["max_wal_size"] == "4GB"
    for bad in ("fsync", "Fsync=off", "a;b=1", "x=1\nfsync=off"):
        with pytest.raises(ValueError):
            settings("--pg-set", bad)
    with pytest.raises(ValueError, match="--target"):
        settings("--pg-set", "fsync=off", "--target", "127.0.0.1:8583")
    results = {"machine": {"cpus": 2}, "clients": 32, "auth_tps": 1.0, "pgbench_tps": 2.0,
               "ratio": 0.5, "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 4.0, "errors": 0,
               "phases": [], "verify_ok": True, "settings": {"pg_settings": {}}}
    assert "on top of the project's" not in report.markdown_summary(results)
    results["settings"] = {"pg_settings": chosen.pg_settings_dict}
    assert ("PostgreSQL parameters set for this run on top of the project's: "
            "`auto_explain.log_min_duration = 300ms`, `max_wal_size = 8GB`, "
            "`min_wal_size = 2GB`, "
            "`shared_preload_libraries = pg_stat_statements,auto_explain`, "
            "`track_functions = pl`."
            in report.markdown_summary(results))


def test_the_open_loop_count_is_not_lost_to_clock_rounding() -> None:
    from benchmarks.loadgen import open_loop_count

    begin = 8228.405492408  # a begin where (begin + 0.3 - begin) * 3000 is 899.99999...
    assert int((begin + 0.3 - begin) * 3000) == 899
    assert open_loop_count(begin, begin + 0.3, 3000.0) == 900
    assert open_loop_count(begin, begin + 0.3003, 3000.0) == 900
    assert open_loop_count(begin, begin + 0.2999, 3000.0) == 899


def test_the_open_loop_waits_whole_ticks_and_sends_what_fell_due(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The event loop's timers count whole milliseconds: a shorter wait returns at once,
    so the scheduler must never ask for one (it spun on a core the switch needed)."""
    import asyncio
    import time

    from benchmarks import loadgen

    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(loadgen.asyncio, "sleep", sleep)
    sent: list[float] = []
    lates: list[float] = []

    class Conn:
        def send(self, msg: object, done: Any, timeout_s: float) -> None:
            sent.append(time.monotonic())
            done(None, None, time.monotonic())

    class Chooser:
        def next(self) -> tuple[object, object, None]:
            return object(), object(), None

        def done(self, *args: object) -> None:
            pass

    class Session:
        conn = Conn()
        chooser = Chooser()

        def build(self, op: object, state: object, original: object) -> tuple[bytes, None]:
            return b"", None

    class Rec:
        def __init__(self, t_end: float) -> None:
            self.t_end = t_end
            self.errors: dict[str, int] = {}

        def record(self, *args: object, **kwargs: object) -> str:
            return "00"

        def record_late(self, intended: float, sent: float) -> None:
            lates.append(sent - intended)

    rate, seconds = 3_000.0, 0.3
    spec = SimpleNamespace(rate_tps=rate, in_flight_max=100, timeout_s=1.0)

    async def run() -> None:
        begin = time.monotonic()
        await loadgen._open_scheduler([Session()], Rec(begin + seconds),  # type: ignore[list-item]
                                      spec, begin)  # type: ignore[arg-type]

    asyncio.run(run())
    assert len(sent) == int(rate * seconds)
    # Each send's delay against its intended time is recorded, never early.
    assert len(lates) == len(sent) and min(lates) >= 0
    assert all(w == 0 or w >= loadgen.SEND_TICK_S for w in waits), min(waits)
    # Arrivals 0.33 ms apart go out several to a wait, not one wait each.
    assert sum(1 for w in waits if w > 0) < len(sent) / 2


def test_open_rounds_headline_is_the_median_p99_and_the_summary_lists_every_round() -> None:
    from benchmarks.harness import Settings, build_parser

    def settings(*argv: str) -> Settings:
        return Settings.from_args(build_parser().parse_args(list(argv)))

    assert settings().open_rounds == 3
    assert settings("--quick").open_rounds == 1
    for bad in ("0", "10"):
        with pytest.raises(ValueError, match="open-rounds"):
            settings("--open-rounds", bad)

    def phase(name: str, p99: float) -> dict[str, Any]:
        return {"name": name, "latency": {"p99_ms": p99}}

    assert report.open_headline([]) is None
    rounds = [phase("open-2000tps", 41.0), phase("open-2000tps#2", 9.5),
              phase("open-2000tps#3", 20.0)]
    assert report.open_headline(rounds)["name"] == "open-2000tps#3"
    # Of an even count, the higher of the middle two: the target is an upper bound.
    assert report.open_headline(rounds[:2])["name"] == "open-2000tps"
    assert report.open_headline(rounds[1:2])["name"] == "open-2000tps#2"
    results = {"machine": {"cpus": 2}, "clients": 32, "auth_tps": 1.0, "pgbench_tps": 2.0,
               "ratio": 0.5, "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 4.0, "errors": 0,
               "phases": [], "verify_ok": True,
               "open_loop": {"rate_tps": 2000.0, "clients": 32, "p99_ms": 20.0,
                             "p999_ms": 31.5, "phase": "open-2000tps#3",
                             "rounds_p99_ms": [41.0, 9.5, 20.0]}}
    text = report.markdown_summary(results)
    assert ("**Open loop at 2,000/s over 32 ATM connections:** p99 20.00 ms (target 25), "
            "p99.9 31.50 ms; p99 in 3 rounds one after the other: 41.0, 9.5, 20.0 ms, the "
            "headline is the median round (open-2000tps#3).") in text
    results["open_loop"]["rounds_p99_ms"] = [20.0]
    assert "rounds one after the other" not in report.markdown_summary(results)


def test_send_lateness_is_counted_in_the_window_by_intended_second_and_merged() -> None:
    def recorder(*lates: tuple[float, float]) -> dict[str, Any]:
        rec = Recorder(t_measure=10.0, t_end=20.0)
        for intended, sent in lates:
            rec.record_late(intended, sent)
        return rec.result()

    # Times in 1/1024 s, exact in binary: 0.0048828125 s late is 4,882 µs.
    one = recorder((9.5, 9.75), (10.25, 10.25 + 5 / 1024), (11.5, 11.5 + 1 / 1024),
                   (20.0, 20.5))
    assert decode_histogram(one["late_hist"]).get_total_count() == 2   # outside: not counted
    assert one["per_second_late_max_us"] == [4882, 976]
    other = recorder((10.75, 10.75 + 2 / 1024), (12.125, 12.125 + 30 / 1024))
    merged = merge_results([one, other])
    assert merged["late_hist"].get_total_count() == 4
    assert merged["per_second_late_max_us"] == [4882, 976, 29296]


def test_card_miss_share_from_the_cache_counter_and_the_card_stage() -> None:
    def page(misses: float, terminal_misses: float, lookups: int) -> str:
        return ("# HELP atm_switch_cache_misses_total Misses.\n"
                "# TYPE atm_switch_cache_misses_total counter\n"
                f'atm_switch_cache_misses_total{{cache="card"}} {misses}\n'
                f'atm_switch_cache_misses_total{{cache="terminal"}} {terminal_misses}\n'
                "# HELP atm_switch_authorization_duration_seconds Stages.\n"
                "# TYPE atm_switch_authorization_duration_seconds histogram\n"
                f'atm_switch_authorization_duration_seconds_count{{stage="card"}} {lookups}\n'
                f'atm_switch_authorization_duration_seconds_sum{{stage="card"}} {lookups / 1e4}\n')

    # 400 lookups in the window, 30 of them card misses (terminal misses apart).
    means = histogram_means(counter_delta(parse_counters(page(10, 2, 100)),
                                          parse_counters(page(40, 9, 500))))
    assert means is not None and means["card_miss_share"] == 0.075
    assert "7.5% of card lookups read from the database" in report.stage_line(
        {"switch_means": means})
    assert "card_miss_share" not in (histogram_means(counter_delta(
        parse_counters(page(10, 2, 100)), parse_counters(page(10, 2, 100)))) or {})


def test_card_cache_ttl_option_reaches_the_switch_config_and_the_summary(
        tmp_path: Path) -> None:
    from benchmarks.harness import BENCH_SWITCH_CONFIG, Settings, bench_switch_config, build_parser
    from switch.config import load_config

    def settings(*argv: str) -> Settings:
        return Settings.from_args(build_parser().parse_args(list(argv)))

    assert bench_switch_config(settings()) == BENCH_SWITCH_CONFIG
    path = tmp_path / "bench-switch.toml"
    path.write_text(bench_switch_config(settings("--card-cache-ttl", "0.001")), encoding="utf-8")
    config = load_config(path)
    assert config.card_cache_ttl_s == 0.001
    assert config.terminal_wrong_pins_max == 100_000_000   # the rest of the bench config
    for bad in (("--card-cache-ttl", "0"), ("--card-cache-ttl", "5", "--target", "127.0.0.1:1"),
                ("--card-cache-ttl", "5", "--switch-config", str(path))):
        with pytest.raises(ValueError, match="card-cache-ttl"):
            settings(*bad)
    results = {"machine": {"cpus": 2}, "clients": 32, "auth_tps": 1.0, "pgbench_tps": 2.0,
               "ratio": 0.5, "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 4.0, "errors": 0,
               "phases": [], "verify_ok": True, "settings": {"card_cache_ttl_s": 0.001}}
    assert ("The switch's card cache kept a card for 0.001 s (`--card-cache-ttl`)."
            in report.markdown_summary(results))
    results["settings"] = {"card_cache_ttl_s": None}
    assert "card cache kept" not in report.markdown_summary(results)


def test_a_windows_wal_flushes_come_from_the_probe_delta_and_say_what_is_unknown() -> None:
    before = {"wal_syncs": 1000.0, "wal_sync_ms": 200.0, "wal_writes": 1500.0,
              "wal_write_ms": 30.0, "wal_inits": 10.0, "wal_bytes": 5e6, "wal_fpi": 40.0,
              "checkpoints": 2.0}
    after = {"wal_syncs": 1400.0, "wal_sync_ms": 400.0, "wal_writes": 2300.0,
             "wal_write_ms": 38.0, "wal_inits": 10.0, "wal_bytes": 7.8e6, "wal_fpi": 60.0,
             "checkpoints": 2.0}
    # 400 flushes for 2,000 authorizations took 200 ms: 0.5 ms each; 800 writes 8 ms;
    # 2.8 MB of WAL, 20 full-page images; no file created, no checkpoint.
    assert wal_flush(cpu_delta(before, after), 2000) == {
        "syncs": 400, "syncs_per_auth": 0.2, "sync_ms_mean": 0.5, "write_ms_mean": 0.01,
        "bytes_per_auth": 1400.0, "fpi_per_auth": 0.01, "segment_init_writes": 0,
        "checkpoints": 0}
    # Times not tracked (track_wal_io_timing off): the counts alone.
    untimed = {**after, "wal_sync_ms": None, "wal_write_ms": None}
    assert wal_flush(cpu_delta(before, untimed), 2000) == {
        "syncs": 400, "syncs_per_auth": 0.2, "sync_ms_mean": None, "write_ms_mean": None,
        "bytes_per_auth": 1400.0, "fpi_per_auth": 0.01, "segment_init_writes": 0,
        "checkpoints": 0}
    # An older server (no WAL rows in pg_stat_io) or no database: nothing to say.
    assert wal_flush(cpu_delta(before, {**after, "wal_syncs": None}), 2000) is None
    assert wal_flush({"wal_syncs": 0.0, "wal_sync_ms": 0.0}, 0) == {
        "syncs": 0, "syncs_per_auth": None, "sync_ms_mean": None, "write_ms_mean": None,
        "bytes_per_auth": None, "fpi_per_auth": None, "segment_init_writes": None,
        "checkpoints": None}


def test_a_windows_ledger_function_times_come_from_the_probe_delta() -> None:
    before = {"fn_batch_calls": 100.0, "fn_batch_ms": 110.0, "fn_batch_self_ms": 95.0,
              "fn_reverse_calls": 80.0, "fn_reverse_ms": 10.0, "fn_reverse_self_ms": 10.0,
              "fn_authorize_calls": 5.0, "fn_authorize_ms": 1.0,
              "fn_authorize_self_ms": 1.0}
    after = {"fn_batch_calls": 1100.0, "fn_batch_ms": 1210.0, "fn_batch_self_ms": 1095.0,
             "fn_reverse_calls": 880.0, "fn_reverse_ms": 110.0, "fn_reverse_self_ms": 110.0,
             "fn_authorize_calls": 55.0, "fn_authorize_ms": 11.0,
             "fn_authorize_self_ms": 11.0}
    # 1,000 group commits for 16,000 authorizations took 1,100 ms (1,000 of it their
    # own); 800 reversal calls 100 ms; 50 single calls 10 ms.
    assert ledger_functions(cpu_delta(before, after), 16_000) == {
        "commits": 1000, "commits_per_auth": 0.0625, "commit_ms": 1.1,
        "commit_self_ms": 1.0, "reverse_calls_per_commit": 0.8, "reverse_ms": 0.125,
        "authorize_calls_per_commit": 0.05, "authorize_ms": 0.2}
    # Not timed (track_functions off, or no database): nothing to say.
    assert ledger_functions(cpu_delta(before, {**after, "fn_batch_calls": None}), 10) is None
    # No group commit in the window (every operation alone): no per-commit figures.
    idle = ledger_functions({k: 0.0 for k in after}, 0)
    assert idle is not None and idle["commits"] == 0 and idle["commit_ms"] is None
    assert report.ledger_functions_text({"ledger_functions": idle}) == ""
    text = report.ledger_functions_text(
        {"ledger_functions": ledger_functions(cpu_delta(before, after), 16_000)})
    assert text == ("1,000 group commits, 1.100 ms each (1.000 ms its own); "
                    "ledger_reverse 0.800 a commit, 0.125 ms each; "
                    "ledger_authorize 0.050 a commit, 0.200 ms each")


def test_the_summary_lists_each_windows_wal_flushes_beside_pgbenchs() -> None:
    phase = {"name": "closed-32",
             "wal_flush": {"syncs": 6000, "syncs_per_auth": 0.0625, "sync_ms_mean": 0.25,
                           "write_ms_mean": 0.015},
             "pgbench": {"wal_flush": {"syncs": 90000, "syncs_per_auth": 0.9,
                                       "sync_ms_mean": 0.3, "write_ms_mean": None}}}
    assert report.wal_flush_text(phase) == (
        "6,000 flushes (0.062 per authorization), 0.250 ms each on average, WAL writes "
        "0.015 ms; pgbench -N's window: 90,000 flushes (0.900 per transaction), 0.300 ms "
        "each on average")
    assert report.wal_flush_text({"name": "open", "wal_flush": None}) == ""
    # What made a window's commits heavier is called out.
    heavy = {"wal_flush": {"syncs": 10, "syncs_per_auth": None, "sync_ms_mean": None,
                           "write_ms_mean": None, "bytes_per_auth": 2500.0,
                           "fpi_per_auth": 0.25, "segment_init_writes": 4096,
                           "checkpoints": 1}}
    assert report.wal_flush_text(heavy) == (
        "10 flushes; 2.50 kB of WAL per authorization (0.250 full-page images); "
        "**4,096 write(s) creating new WAL files**; **1 checkpoint(s) started**")
