"""Prometheus metrics of the switch.

Names follow Prometheus conventions (`_total`, `_seconds`, base units). Labels
are bounded sets (MTI, response code, stage, listener name, reason): never a
PAN, card or per-terminal identifier.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025,
                     0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)

GC_PAUSE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5)

STAGES = ("decode", "terminal", "card", "mac", "pin", "ledger", "encode", "total")


class Metrics:
    """All metrics of one switch process, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "atm_switch_messages_total",
            "Requests answered, by request MTI and field 39 response code.",
            ["mti", "response_code"], registry=r)
        self.latency = Histogram(
            "atm_switch_authorization_duration_seconds",
            "Time spent per stage of the authorization pipeline.",
            ["stage"], buckets=LATENCY_BUCKETS_S, registry=r)
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
