"""Prometheus metrics of the switch.

Names follow Prometheus conventions (`_total`, `_seconds`, base units). Labels
are bounded sets (MTI, response code, stage, listener name, reason): never a
PAN, card or per-terminal identifier.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import HistogramMetricFamily

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025,
                     0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)

COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075, 0.01,
                    0.025, 0.05, 0.1, 0.5, 1.0, 5.0)

GC_PAUSE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5)

STAGES = ("decode", "terminal", "card", "mac", "pin", "ledger", "encode", "total")


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class LabelledHistogram(Protocol):
    def labels(self, stage: str) -> Observer: ...


class _Cell:
    """One label value of a :class:`LoopHistogram`: counts per bucket and the sum."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)   # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: the first bound >= amount, as Prometheus' le ("less or equal").
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.total += amount


class LoopHistogram:
    """A histogram with one label, for the request path of a single process.

    prometheus_client's Histogram takes two locks and scans the bounds on every
    observation (1.8 µs, six times per request); here an observation is a
    bisect and two additions. No lock: the event loop is the only writer and the
    metrics endpoint runs on the same loop. Exposed as an ordinary histogram
    (cumulative ``_bucket``, ``_count``, ``_sum``). With several worker processes
    the switch uses prometheus_client's Histogram instead, whose multiprocess
    files add up the workers.
    """

    def __init__(self, name: str, documentation: str, label: str,
                 buckets: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._bounds = tuple(float(b) for b in buckets)
        assert list(self._bounds) == sorted(set(self._bounds)), "bounds must increase"
        self._cells: dict[str, _Cell] = {}

    def labels(self, stage: str) -> _Cell:
        cell = self._cells.get(stage)
        if cell is None:
            cell = self._cells[stage] = _Cell(self._bounds)
        return cell

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=[self._label])]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, cell in self._cells.items():   # first observed first, as prometheus_client
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*map(_le, self._bounds), "+Inf"), cell.counts, strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric([value], buckets, cell.total)
        yield family


def _le(bound: float) -> str:
    # The le label as prometheus_client writes it (0.005, 1.0, 2.5).
    return repr(bound)


class Metrics:
    """All metrics of one switch process, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "atm_switch_messages_total",
            "Requests answered, by request MTI and field 39 response code.",
            ["mti", "response_code"], registry=r)
        latency_name = "atm_switch_authorization_duration_seconds"
        latency_help = "Time spent per stage of the authorization pipeline."
        self.latency: LabelledHistogram
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.latency = Histogram(latency_name, latency_help, ["stage"],
                                     buckets=LATENCY_BUCKETS_S, registry=r)
        else:
            loop_histogram = LoopHistogram(latency_name, latency_help, "stage",
                                           LATENCY_BUCKETS_S)
            r.register(loop_histogram)
            self.latency = loop_histogram
        # With several worker processes (PROMETHEUS_MULTIPROC_DIR set), gauges are
        # summed over the live workers.
        self.in_flight = Gauge(
            "atm_switch_in_flight_requests", "Requests being processed now.", registry=r,
            multiprocess_mode="livesum")
        self.connections = Gauge(
            "atm_switch_connections", "Open ATM/acquirer connections.", ["listener"], registry=r,
            multiprocess_mode="livesum")
        self.connections_opened = Counter(
            "atm_switch_connections_opened_total", "Connections accepted.", ["listener"],
            registry=r)
        self.connections_refused = Counter(
            "atm_switch_connections_refused_total",
            "Connections closed at once because the listener was at its limit.",
            ["listener"], registry=r)
        self.ledger_retries = Counter(
            "atm_switch_ledger_retries_total",
            "Ledger transactions retried after a serialization failure or deadlock.",
            ["reason"], registry=r)
        self.ledger_batch_size = Histogram(
            "atm_switch_ledger_batch_operations",
            "Authorizations per group-commit statement (one SERIALIZABLE transaction).",
            buckets=BATCH_BUCKETS, registry=r)
        self.ledger_commit_seconds = Histogram(
            "atm_switch_ledger_commit_seconds",
            "Round trip of one group commit (or one operation alone) as the switch sees it: "
            "from the switch issuing its statement until its rows are back, PostgreSQL's work "
            "and the WAL flush included.", buckets=COMMIT_BUCKETS_S, registry=r)
        self.ledger_set_wise = Counter(
            "atm_switch_ledger_set_wise_operations_total",
            "Authorizations decided and posted set-wise inside a group commit (runs of plain "
            "withdrawals and balance inquiries; the others are one function call each).",
            registry=r)
        self.ledger_errors = Counter(
            "atm_switch_ledger_errors_total", "Ledger calls that failed.", ["kind"], registry=r)
        self.hsm_errors = Counter(
            "atm_switch_hsm_errors_total", "HSM calls that failed.", ["result"], registry=r)
        self.pin_failures = Counter(
            "atm_switch_pin_failures_total", "PIN verifications that did not match.", registry=r)
        self.pin_key_stale = Counter(
            "atm_switch_pin_key_stale_total",
            "Wrong PINs verified under a terminal PIN key that had just been changed: "
            "not counted, verified again under the current key.", registry=r)
        self.mac_failures = Counter(
            "atm_switch_mac_failures_total", "Messages whose MAC did not verify.", registry=r)
        self.decode_errors = Counter(
            "atm_switch_decode_errors_total", "Frames or messages that could not be decoded.",
            ["kind"], registry=r)
        self.load_shed = Counter(
            "atm_switch_load_shed_total",
            "Requests answered 91 without processing because a bound was reached.",
            ["reason"], registry=r)
        self.cache_misses = Counter(
            "atm_switch_cache_misses_total",
            "Lookups the switch's caches could not answer, each a database read on the "
            "request path (cache: card or terminal).", ["cache"], registry=r)
        self.replays = Counter(
            "atm_switch_replays_total",
            "Repeats answered with the stored response of the original.", registry=r)
        self.gc_pauses = Histogram(
            "atm_switch_gc_pause_seconds",
            "Collections of Python's cyclic garbage collector, by generation: the event "
            "loop stands still for each one.",
            ["generation"], buckets=GC_PAUSE_BUCKETS_S, registry=r)
        self._gc_pause_children = {g: self.gc_pauses.labels(generation=str(g))
                                   for g in (0, 1, 2)}
        self.network = Counter(
            "atm_switch_network_management_total", "0800 messages by function (field 70).",
            ["function"], registry=r)

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        """One collection of the cycle collector (``switch.heap.GcPauseWatch``'s callback)."""
        self._gc_pause_children[generation].observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)
