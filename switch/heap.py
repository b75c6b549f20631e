"""Python's cyclic garbage collector, kept from stalling an event loop.

A full (generation 2) collection stops the whole process for as long as it
scans every tracked object. Two things keep that short, in the switch and in
the benchmark's load generator alike (which, being bounded in time, also turns
the collector off while its load runs):

- ``freeze_long_lived()`` once start-up is done: what is alive then (modules,
  classes, functions, library internals; ~90,000 objects in the switch) lives
  as long as the process, so the collector need not scan it again. Frozen
  objects are still freed by reference counting; a reference cycle among them
  is never reclaimed, which is why only start-up's survivors are frozen, once.
- ``GcPauseWatch``: times every collection, so a pause shows up as a figure
  (the switch's ``atm_switch_gc_pause_seconds``) instead of as unexplained tail
  latency.

Measured on the 2-core machine under load: the switch's full collections took
20-98 ms before freezing (and before caching cards as plain tuples, see
``ledger.model.CardRecord.packed``), about 2 ms after.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

OnPause = Callable[[int, float], None]


def freeze_long_lived() -> None:
    """Collect once, then move every surviving object out of the collector's reach."""
    gc.collect()
    gc.freeze()


class GcPauseWatch:
    """Calls ``on_pause(generation, seconds)`` after each collection while installed.

    ``install``/``remove`` are idempotent; also a context manager.
    """

    def __init__(self, on_pause: OnPause) -> None:
        self._on_pause = on_pause
        self._started = 0.0

    def install(self) -> None:
        if self._note not in gc.callbacks:
            gc.callbacks.append(self._note)

    def remove(self) -> None:
        if self._note in gc.callbacks:
            gc.callbacks.remove(self._note)

    def __enter__(self) -> GcPauseWatch:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _note(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._on_pause(info["generation"], time.perf_counter() - self._started)
