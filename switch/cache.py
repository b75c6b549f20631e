"""A small bounded time-to-live cache for terminal and card records.

The database stays authoritative (the ledger function rechecks card status and
counts PIN tries itself); the cache only saves a round trip for data that
changes rarely. Entries expire after `ttl_s`; at `entries_max` the oldest
entry goes first.

With ``spread`` an entry lives for a random part of the last ``spread`` of its
time-to-live (never longer than ``ttl_s``): entries put together, as after a start
or when load begins, then do not all expire together and come back as one burst
of database reads (measured in the benchmark: every card of a 60 s cache expiring
within a few seconds doubled the database transactions per request and slowed the
closed loop by a fifth while it lasted).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl_s: float, entries_max: int,
                 clock: Callable[[], float] = time.monotonic, *, spread: float = 0.0,
                 rng: random.Random | None = None) -> None:
        assert ttl_s >= 0 and entries_max > 0 and 0.0 <= spread < 1.0
        self._ttl_s = ttl_s
        self._spread_s = ttl_s * spread
        self._random = (rng or random.Random()).random
        self._entries_max = entries_max
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < self._clock():
            del self._data[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        life = self._ttl_s - self._spread_s * self._random() if self._spread_s else self._ttl_s
        self._data[key] = (self._clock() + life, value)
        self._data.move_to_end(key)
        while len(self._data) > self._entries_max:
            self._data.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
