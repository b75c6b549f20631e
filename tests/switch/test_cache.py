from __future__ import annotations

import gc

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
