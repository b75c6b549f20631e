"""The bank test's checker catches what it claims to (no server needed)."""

from __future__ import annotations

from typing import Any

from messages.codec import IsoMessage
from tests.faults.bank import (
    LedgerRows,
    Withdrawal,
    check_balances,
    check_ledger,
    check_repeats,
)


def op(stan: str, amount: int = 1_000, *, code: str | None = "00", approval: str | None = "000001",
       reversal: str | None = None, acked: bool = False, dispensed: int | None = None,
       card: int = 0) -> Withdrawal:
    request = IsoMessage("0200", {4: f"{amount:012d}", 11: stan, 37: "2632800" + stan[-5:],
                                  41: "ATM00001"})
    w = Withdrawal("ATM00001", card, amount, request, "0.000s", code=code, approval=approval,
                   reversal=reversal, dispensed=dispensed)
    w.reversal_acked = acked
    return w


def auth(id_: int, w: Withdrawal, *, outcome: int = 0, journal: int | None = 1,
         reversal_id: int | None = None, reversed_amount: int = 0) -> dict[str, Any]:
    return {"id": id_, "terminal_id": w.atm, "rrn": w.rrn, "outcome": outcome,
            "approval_code": w.approval, "amount": w.amount, "journal_id": journal,
            "reversal_id": reversal_id, "reversed_amount": reversed_amount}


def rows(auths: list[dict[str, Any]], journals: dict[int, list[dict[str, Any]]],
         **extra: object) -> LedgerRows:
    by_rrn: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in auths:
        by_rrn.setdefault((str(a["terminal_id"]), str(a["rrn"])), []).append(a)
    base = LedgerRows(by_rrn, journals, {}, {}, [], [], [])
    for key, value in extra.items():
        setattr(base, key, value)
    return base


def test_charged_follows_the_atm_view() -> None:
    assert op("000001").charged() == 1_000
    assert op("000002", code="51", approval=None).charged() == 0
    assert op("000003", code=None, approval=None, reversal="timeout").charged() is None
    assert op("000004", code=None, approval=None, reversal="timeout", acked=True).charged() == 0
    assert op("000005", reversal="partial", acked=True, dispensed=400).charged() == 400
    assert op("000006", reversal="full", acked=True).charged() == 0


def test_balance_mismatch_and_unknown_outcomes_are_violations() -> None:
    ops = [op("000001", 1_000), op("000002", 500, code=None, reversal="timeout")]
    violations, _ = check_balances(ops, 1, 10_000, {0: 9_000})
    assert any("unknown outcome" in v.what for v in violations)
    violations, _ = check_balances(ops[:1], 1, 10_000, {0: 8_000})
    assert any("balance 8000" in v.what for v in violations)
    assert "STAN 000001" in violations[0].render()
    violations, _ = check_balances(ops[:1], 1, 10_000, {0: 9_000})
    assert violations == []


def test_ledger_violations() -> None:
    good = op("000001")
    declined_but_posted = op("000002", code="91", approval=None)
    double = op("000003", approval="000003")
    missing = op("000004", approval="000004")
    ledger = rows([auth(1, good, journal=11), auth(2, declined_but_posted, journal=12),
                   auth(3, double, journal=13)],
                  {1: [{"id": 11}], 2: [{"id": 12}], 3: [{"id": 13}, {"id": 14}]},
                  duplicate_auth_journals=[(3, 2)])
    found = [v.what for v in check_ledger([good, declined_but_posted, double, missing], ledger)]
    assert any("posted twice" in w for w in found)
    assert any("told 91" in w for w in found)
    assert any("2 journals" in w for w in found)
    assert any("no approved authorization" in w for w in found)
    assert not any("STAN 000001" in v.render() for v in
                   check_ledger([good, declined_but_posted, double, missing], ledger))


def test_acknowledged_reversal_must_have_been_applied_once() -> None:
    w = op("000001", 1_000, reversal="full", acked=True)
    ledger = rows([auth(1, w, journal=11)], {1: [{"id": 11}]})
    assert any("gave back" in v.what for v in check_ledger([w], ledger))


def test_a_repeat_must_replay_the_answer() -> None:
    w = op("000001")
    w.repeat_answers = [("00", "000001"), ("91", None)]
    assert check_repeats([w]) == []
    w.repeat_answers = [("51", None)]
    assert len(check_repeats([w])) == 1
