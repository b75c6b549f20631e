from __future__ import annotations

from switch.cache import TtlCache


def test_entries_expire_and_are_bounded() -> None:
    now = [0.0]
    cache: TtlCache[str, int] = TtlCache(ttl_s=5.0, entries_max=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None  # evicted: oldest first
    assert cache.get("b") == 2
    now[0] = 6.0
    assert cache.get("b") is None  # expired
    assert len(cache) == 1
    cache.invalidate("c")
    assert len(cache) == 0
