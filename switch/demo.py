"""Demo issuer: a few ATMs and a dozen cards with published PINs and balances.

Everything here is public demo data under the DEMO keys, for trying the host.
"""

from __future__ import annotations

from typing import Any

from messages.fields import luhn_complete

DEMO_TPK = "89ABCDEF01234567FEDCBA9876543210"
DEMO_TMK = "FEDCBA98765432100123456789ABCDEF"
DEMO_TAK = "0123456789ABCDEF89ABCDEF01234567"
DEMO_ACQUIRER = "123456"
DEMO_CURRENCY = "840"


def demo_pan(n: int) -> str:
    return luhn_complete(f"476173900101{n:03d}")


def demo_data(atms: int = 3, cards: int = 12) -> dict[str, Any]:
    terminals = [
        {"id": f"ATM{i:05d}", "tpk": DEMO_TPK, "tmk": DEMO_TMK, "acquirer": DEMO_ACQUIRER,
         "currency": DEMO_CURRENCY, "location": f"Demo branch {i}", "cash": 10_000_000}
        for i in range(1, atms + 1)
    ]
    card_list: list[dict[str, Any]] = []
    for i in range(1, cards + 1):
        card: dict[str, Any] = {
            "pan": demo_pan(i), "expiry": "3012", "pin": f"{1000 + i * 111 % 9000:04d}",
            "balance": 50_000 * i, "currency": DEMO_CURRENCY, "daily_limit": 100_000,
            "daily_count": 10, "transaction_limit": 80_000,
        }
        if i % 3 == 0:
            card["savings_balance"] = 250_000
        if i == 11:
            card["status"] = "lost"
        if i == 12:
            card["expiry"] = "2001"
        card_list.append(card)
    return {"terminals": terminals, "cards": card_list}
