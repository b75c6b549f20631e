"""The verifier must be able to fail: tamper with the books and watch it notice."""

from __future__ import annotations

import asyncpg
import pytest
from ledger_helpers import next_key, provision_card, withdrawal

from ledger.model import Outcome
from ledger.store import Ledger
from ledger.verify import main_async

TAMPERING = {
    "balances": "UPDATE accounts SET posted_debits = posted_debits + 1 WHERE NOT hot",
    "journals_balance": "UPDATE postings SET amount = amount + 1 WHERE line = 1",
    "available": "UPDATE accounts SET overdraft_limit = 0, posted_debits = posted_debits "
                 "+ 10000000, posted_credits = posted_credits WHERE NOT hot; "
                 "UPDATE postings p SET amount = amount + 10000000 FROM accounts a "
                 "WHERE a.id = p.account_id AND NOT a.hot AND p.line = 1; "
                 "UPDATE postings p SET amount = amount - 10000000 FROM accounts a "
                 "WHERE a.id = p.account_id AND a.hot AND p.line = 2 "
                 "AND p.journal_id = (SELECT max(journal_id) FROM postings)",
    "authorization_journals": "UPDATE authorizations SET journal_id = NULL WHERE outcome = 0",
    "reversals": "UPDATE authorizations SET reversed_amount = 1 WHERE kind = 1",
    "pending": "UPDATE accounts SET pending_debits = 5 WHERE NOT hot",
}


async def test_clean_ledger_exits_zero(ledger: Ledger, fresh_dsn: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    card = await provision_card(ledger, 1)
    await ledger.authorize(withdrawal(card, 100))
    assert await main_async(fresh_dsn) == 0
    assert "CLEAN" in capsys.readouterr().out


@pytest.mark.parametrize("check", sorted(TAMPERING))
async def test_tampering_is_reported(ledger: Ledger, fresh_dsn: str, check: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    card = await provision_card(ledger, 2, balance=50_000)
    result = await ledger.authorize(withdrawal(card, 1_000, key=next_key()))
    assert result.outcome is Outcome.APPROVED
    conn = await asyncpg.connect(fresh_dsn)
    try:
        await conn.execute(TAMPERING[check])
    finally:
        await conn.close()
    report = await ledger.verify()
    failed = {c.name for c in report.checks if not c.ok}
    assert check in failed, report.render()
    assert await main_async(fresh_dsn) == 1
    assert "FAIL" in capsys.readouterr().out


async def test_unreachable_database_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert await main_async("postgresql://nobody@127.0.0.1:1/none") == 2
    assert "could not run" in capsys.readouterr().out
