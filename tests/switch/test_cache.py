from __future__ import annotations

import gc
import itertools
import random

from ledger.model import CardLimits, CardRecord, CardStatus, PackedCard
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


def test_cached_card_form_round_trips_and_is_invisible_to_the_cycle_collector() -> None:
    records = [
        CardRecord(card_id=7, expiry="3012", status=CardStatus.ACTIVE, pin_method="pvv",
                   pvv="4821", pvki="1", pin_offset=None, pin_tries=2,
                   account_types=("10", "20"), default_account_type="20",
                   limits=CardLimits(txn_amount_max=50_000, daily_amount_max=None,
                                     daily_count_max=9)),
        CardRecord(card_id=8, expiry="2801", status=CardStatus.BLOCKED, pin_method="ibm3624",
                   pvv=None, pvki=None, pin_offset="0417", pin_tries=0, account_types=()),
    ]
    cache: TtlCache[int, PackedCard] = TtlCache(ttl_s=60.0, entries_max=10)
    for record in records:
        cache.put(record.card_id, record.packed())
    gc.collect()  # untracks tuples that hold only plain values
    for record in records:
        packed = cache.get(record.card_id)
        assert packed is not None
        assert CardRecord.unpacked(packed) == record
        # A full collection pauses the event loop for as long as it scans tracked
        # objects; the cached form of a card must not be one of them.
        assert not gc.is_tracked(packed)


def test_spread_entries_put_together_expire_apart_within_their_ttl() -> None:
    now = [100.0]
    cache: TtlCache[int, int] = TtlCache(ttl_s=60.0, entries_max=1000, clock=lambda: now[0],
                                         spread=0.25, rng=random.Random(7))
    for key in range(1000):
        cache.put(key, key)
    now[0] = 100.0 + 45.0 - 1e-6  # nothing expires before 75% of the time-to-live
    assert len([k for k in range(1000) if cache.get(k) is not None]) == 1000
    alive = []
    for step in range(1, 16):  # then a share of them each second, the last by 60 s
        now[0] = 100.0 + 45.0 + step
        alive.append(sum(1 for k in range(1000) if cache.get(k) is not None))
    assert alive[-1] == 0
    assert all(later < earlier for earlier, later in itertools.pairwise(alive))
    assert max(earlier - later for earlier, later in itertools.pairwise(alive)) < 150
    # Without a spread every entry lives exactly its time-to-live.
    plain: TtlCache[int, int] = TtlCache(ttl_s=60.0, entries_max=10, clock=lambda: now[0])
    now[0] = 0.0
    plain.put(1, 1)
    now[0] = 60.0
    assert plain.get(1) == 1
    now[0] = 60.0 + 1e-6
    assert plain.get(1) is None
