"""A small bounded time-to-live cache for terminal and card records.

The database stays authoritative (the ledger function rechecks card status and
counts PIN tries itself); the cache only saves a round trip for data that
changes rarely. Entries expire after `ttl_s`; at `entries_max` the oldest
entry goes first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl_s: float, entries_max: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert ttl_s >= 0 and entries_max > 0
        self._ttl_s = ttl_s
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
        self._data[key] = (self._clock() + self._ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self._entries_max:
            self._data.popitem(last=False)

    def invalidate(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
