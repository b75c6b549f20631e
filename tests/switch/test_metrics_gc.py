from __future__ import annotations

import gc

from switch.heap import GcPauseWatch
from switch.metrics import Metrics


def _full_collections(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "atm_switch_gc_pause_seconds_count", {"generation": "2"})
    return value or 0.0


def test_gc_pauses_are_counted_only_while_the_watch_is_installed() -> None:
    metrics = Metrics()
    watch = GcPauseWatch(metrics.observe_gc_pause)
    watch.install()
    watch.install()  # idempotent: one callback, one observation per collection
    try:
        gc.collect()
        gc.collect()
        assert _full_collections(metrics) == 2
        assert (metrics.registry.get_sample_value(
            "atm_switch_gc_pause_seconds_sum", {"generation": "2"}) or 0.0) > 0
    finally:
        watch.remove()
    gc.collect()
    assert _full_collections(metrics) == 2
    assert all(getattr(cb, "__self__", None) is not watch for cb in gc.callbacks)
