"""The bank workload (in the spirit of Jepsen's bank test) and its checker.

Simulated ATMs, each one request at a time like a real terminal, run random
withdrawals, balance inquiries and reversals against the switch (through a
fault proxy). Every ATM keeps a history of what it sent and what it saw.

The ATM's rules are those of a real terminal:

- an answer is final: 00 dispenses, anything else does not;
- no answer in time (or the connection failed) means "unknown": the ATM
  dispenses nothing and sends a 0420 reversal advice, repeated as 0421 until
  a 0430 with 39=00 comes back;
- a dispense failure after an approval is reversed the same way (full, or
  partial with field 95 = the amount actually dispensed);
- some requests are deliberately re-sent as repeats (0201): either pipelined
  right behind the original (the answer to whichever comes first counts) or
  after the answer, to check that a repeat replays it.

So after the run, what each card was charged "as the ATMs saw it" is known
exactly, and the checker compares it with the switch's final balances and the
ledger's tables (read-only). Histories never carry a clear PAN: cards are
named by their index.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from messages.codec import IsoMessage, encode
from messages.fields import AmountType, parse_additional_amounts
from messages.framing import LengthHeader, encode_frame
from messages.profiles import ASCII
from switch.atm import AtmClient, AtmConfig, AtmError, CardData

PIN = "1234"
ATM_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 2.0
REVERSAL_TRIES_MAX = 600
RECONNECT_PAUSE_S = 0.2
UNSETTLED_CODES = ("91", "96")   # "could not process": the ATM does not repeat these


def now_s(t0: float) -> str:
    return f"{time.monotonic() - t0:7.3f}s"


@dataclass
class Withdrawal:
    atm: str
    card: int
    amount: int
    request: IsoMessage
    started: str
    code: str | None = None             # the answer the ATM acted on; None = none in time
    approval: str | None = None
    repeat: str = ""                    # "", "pipelined" or "after"
    repeat_answers: list[tuple[str, str | None]] = field(default_factory=list)
    reversal: str | None = None         # None, "timeout", "full" or "partial"
    dispensed: int | None = None        # partial reversal: what the ATM paid out
    reversal_acked: bool = False
    events: list[str] = field(default_factory=list)

    @property
    def stan(self) -> str:
        return self.request.get(11) or ""

    @property
    def rrn(self) -> str:
        return self.request.get(37) or ""

    def charged(self) -> int | None:
        """What the card owes for this withdrawal as the ATM saw it; None = unknown."""
        if self.reversal is not None and not self.reversal_acked:
            return None
        if self.code != "00":
            return 0
        if self.reversal is None:
            return self.amount
        return self.dispensed or 0

    def describe(self) -> str:
        head = (f"{self.atm} STAN {self.stan} RRN {self.rrn} card#{self.card} "
                f"amount {self.amount} at {self.started}: answer {self.code} "
                f"approval {self.approval} repeat={self.repeat or '-'} "
                f"reversal={self.reversal} dispensed={self.dispensed} "
                f"acked={self.reversal_acked} charged={self.charged()}")
        return "\n      ".join([head, *self.events])


@dataclass
class BankConfig:
    cards: int
    opening: int
    host: str
    port: int
    seed: int
    run_s: float
    settle_s: float
    amounts: Sequence[int] = tuple(range(1_000, 10_001, 500))
    balance_share: float = 0.25
    dispense_failure: float = 0.12
    repeat_pipelined: float = 0.08
    repeat_after: float = 0.08
    reconnect_after_timeout: float = 0.4
    ops_max: int = 5_000


def card_data(pans: Sequence[str], index: int) -> CardData:
    return CardData(pan=pans[index], expiry="3012")


def raw_send(client: AtmClient, msg: IsoMessage) -> None:
    """Write `msg` without waiting for (or claiming) its answer."""
    writer = client._writer
    if writer is not None and not writer.is_closing():
        writer.write(encode_frame(encode(msg, ASCII), length_header=LengthHeader.BINARY2,
                                  frame_bytes_max=8192))


def connected(client: AtmClient) -> bool:
    writer, task = client._writer, client._read_task
    return (writer is not None and not writer.is_closing()
            and task is not None and not task.done())


class SimAtm:
    def __init__(self, terminal_id: str, index: int, config: BankConfig, pans: Sequence[str],
                 t0: float) -> None:
        self.terminal_id = terminal_id
        self.config = config
        self.pans = pans
        self.t0 = t0
        self.rng = random.Random(config.seed * 1000 + index)
        self.client = AtmClient(AtmConfig(terminal_id=terminal_id, acquirer_id="123456",
                                          tpk_hex=TPK_HEX), stan_start=1 + index * 100_000)
        self.withdrawals: list[Withdrawal] = []
        self.inquiries: dict[str, int] = {}
        self.stop_at = 0.0
        self.give_up_at = 0.0

    # -- connection ----------------------------------------------------------

    async def ensure_connected(self) -> bool:
        if connected(self.client):
            return True
        await self.client.close()
        try:
            await self.client.connect(self.config.host, self.config.port,
                                      timeout_s=CONNECT_TIMEOUT_S)
        except AtmError:
            await asyncio.sleep(RECONNECT_PAUSE_S)
            return False
        # The proxy accepts even while the switch is down, then closes: give it
        # a moment to say so before we trust the connection.
        await asyncio.sleep(0.02)
        if connected(self.client):
            return True
        await asyncio.sleep(RECONNECT_PAUSE_S)
        return False

    async def reconnect(self) -> None:
        await self.client.close()

    # -- the workload --------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.config.ops_max):
            if loop.time() >= self.stop_at:
                return
            if not await self.ensure_connected():
                continue
            card = self.rng.randrange(self.config.cards)
            if self.rng.random() < self.config.balance_share:
                await self.balance_inquiry(card)
            else:
                await self.withdraw(card)

    async def balance_inquiry(self, card: int) -> None:
        msg = self.client.balance_inquiry(card_data(self.pans, card), PIN)
        try:
            ex = await self.client.send(msg, timeout_s=ATM_TIMEOUT_S)
        except AtmError:
            self.inquiries["none"] = self.inquiries.get("none", 0) + 1
            return
        self.inquiries[ex.code] = self.inquiries.get(ex.code, 0) + 1

    async def withdraw(self, card: int) -> None:
        cfg, rng = self.config, self.rng
        msg = self.client.withdrawal(card_data(self.pans, card), rng.choice(cfg.amounts), PIN)
        op = Withdrawal(self.terminal_id, card, int(msg.get(4) or 0), msg, now_s(self.t0))
        self.withdrawals.append(op)
        roll = rng.random()
        op.repeat = ("pipelined" if roll < cfg.repeat_pipelined
                     else "after" if roll < cfg.repeat_pipelined + cfg.repeat_after else "")
        sending = asyncio.ensure_future(self.client.send(msg, timeout_s=ATM_TIMEOUT_S))
        if op.repeat == "pipelined":
            await asyncio.sleep(0)
            raw_send(self.client, self.client.repeat_of(msg))
            op.events.append(f"{now_s(self.t0)} sent 0200 and a pipelined 0201")
        try:
            ex = await sending
        except AtmError as exc:
            op.events.append(f"{now_s(self.t0)} no answer: {exc}")
            if not connected(self.client) or rng.random() < cfg.reconnect_after_timeout:
                await self.reconnect()
            op.reversal = "timeout"
            await self.reverse(op)
            return
        op.code, op.approval = ex.code, ex.response.get(38)
        op.events.append(f"{now_s(self.t0)} answer {ex.code} approval {op.approval}")
        if op.repeat == "after" and ex.code not in UNSETTLED_CODES:
            await self.repeat_after_answer(op)
        if ex.code == "00" and rng.random() < cfg.dispense_failure:
            if rng.random() < 0.5:
                op.reversal = "full"
            else:
                op.reversal = "partial"
                op.dispensed = max(100, (op.amount // 2) // 100 * 100)
            await self.reverse(op)

    async def repeat_after_answer(self, op: Withdrawal) -> None:
        try:
            ex = await self.client.send(self.client.repeat_of(op.request),
                                        timeout_s=ATM_TIMEOUT_S)
        except AtmError as exc:
            op.events.append(f"{now_s(self.t0)} repeat 0201: no answer ({exc})")
            return
        op.repeat_answers.append((ex.code, ex.response.get(38)))
        op.events.append(f"{now_s(self.t0)} repeat 0201 answer {ex.code} "
                         f"approval {ex.response.get(38)}")

    async def reverse(self, op: Withdrawal) -> None:
        """0420, then 0421 until acknowledged (bounded in tries and time)."""
        loop = asyncio.get_running_loop()
        advice = self.client.reversal(op.request, dispensed=op.dispensed)
        msg = advice
        for attempt in range(REVERSAL_TRIES_MAX):
            if loop.time() >= self.give_up_at:
                op.events.append(f"{now_s(self.t0)} reversal: gave up (time)")
                return
            if not await self.ensure_connected():
                msg = self.client.repeat_of(advice)
                continue
            try:
                ex = await self.client.send(msg, timeout_s=ATM_TIMEOUT_S)
            except AtmError as exc:
                op.events.append(f"{now_s(self.t0)} {msg.mti} STAN {advice.get(11)}: {exc}")
                if not connected(self.client) or self.rng.random() < 0.3:
                    await self.reconnect()
                msg = self.client.repeat_of(advice)
                continue
            op.events.append(f"{now_s(self.t0)} {msg.mti} STAN {advice.get(11)} "
                             f"answer {ex.code}")
            if ex.code == "00":
                op.reversal_acked = True
                return
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
            msg = self.client.repeat_of(advice)
        op.events.append(f"{now_s(self.t0)} reversal: gave up (tries)")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


TPK_HEX = "89ABCDEF01234567FEDCBA9876543210"   # switch.demo.DEMO_TPK, the test terminals' key


def ledger_balance(msg: IsoMessage) -> int | None:
    text = msg.get(54)
    for block in parse_additional_amounts(text) if text else ():
        if block.amount_type == AmountType.LEDGER:
            return block.amount
    return None


async def final_balances(port: int, pans: Sequence[str], terminal_id: str,
                         tries_max: int = 20) -> dict[int, int | None]:
    """A balance inquiry per card straight to the switch (no proxy), retried a
    little; the ledger balance each answer carries (None when none came)."""
    client = AtmClient(AtmConfig(terminal_id=terminal_id, acquirer_id="123456",
                                 tpk_hex=TPK_HEX), stan_start=900_001)
    await client.connect("127.0.0.1", port)
    found: dict[int, int | None] = {}
    try:
        for index in range(len(pans)):
            found[index] = None
            for _ in range(tries_max):
                try:
                    ex = await client.send(client.balance_inquiry(card_data(pans, index), PIN),
                                           timeout_s=5.0)
                except AtmError:
                    await client.close()
                    await client.connect("127.0.0.1", port)
                    continue
                if ex.code == "00":
                    found[index] = ledger_balance(ex.response)
                    break
                await asyncio.sleep(0.2)
    finally:
        await client.close()
    return found


# -- the checker ---------------------------------------------------------------


@dataclass
class LedgerRows:
    """What the checker reads from the ledger (read-only), keyed for lookups."""

    auth_by_rrn: dict[tuple[str, str], list[dict[str, Any]]]
    journals_by_auth: dict[int, list[dict[str, Any]]]
    journals_by_reversal: dict[int, list[dict[str, Any]]]
    applied_reversals_by_auth: dict[int, list[dict[str, Any]]]
    duplicate_auth_journals: list[Any]
    duplicate_reversals: list[Any]
    orphan_journals: list[Any]


def read_ledger(dsn: str) -> LedgerRows:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        conn.read_only = True
        auths = conn.execute(
            "SELECT id, key, kind, terminal_id, rrn, outcome, approval_code, amount, "
            "journal_id, reversal_id, reversed_amount FROM authorizations "
            "WHERE kind <> 0").fetchall()
        journals = conn.execute("SELECT id, kind, auth_id, reversal_id FROM journals").fetchall()
        reversals = conn.execute(
            "SELECT id, original_auth_id, outcome, amount, journal_id FROM reversals "
            "WHERE outcome = 0").fetchall()
        duplicate_auth_journals = conn.execute(
            "SELECT auth_id, count(*) AS n FROM journals WHERE kind = 'authorization' "
            "GROUP BY auth_id HAVING count(*) > 1").fetchall()
        duplicate_reversals = conn.execute(
            "SELECT original_auth_id, count(*) AS n FROM reversals WHERE outcome = 0 "
            "AND amount > 0 GROUP BY original_auth_id HAVING count(*) > 1").fetchall()
        orphan_journals = conn.execute(
            "SELECT j.id FROM journals j LEFT JOIN authorizations a ON a.journal_id = j.id "
            "WHERE j.kind = 'authorization' AND (a.id IS NULL OR a.outcome <> 0 "
            "OR a.id <> j.auth_id)").fetchall()
    rows = LedgerRows({}, {}, {}, {}, duplicate_auth_journals, duplicate_reversals,
                      orphan_journals)
    for a in auths:
        rows.auth_by_rrn.setdefault((a["terminal_id"], a["rrn"] or ""), []).append(a)
    for j in journals:
        if j["auth_id"] is not None:
            rows.journals_by_auth.setdefault(j["auth_id"], []).append(j)
        if j["reversal_id"] is not None:
            rows.journals_by_reversal.setdefault(j["reversal_id"], []).append(j)
    for r in reversals:
        if r["original_auth_id"] is not None:
            rows.applied_reversals_by_auth.setdefault(r["original_auth_id"], []).append(r)
    return rows


@dataclass
class Violation:
    what: str
    ops: list[Withdrawal] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"VIOLATION: {self.what}"]
        lines += [f"  - {op.describe()}" for op in self.ops]
        return "\n".join(lines)


def check_repeats(ops: Iterable[Withdrawal]) -> list[Violation]:
    """A repeat of an answered request replays the answer (never a new decision)."""
    found = []
    for op in ops:
        for code, approval in op.repeat_answers:
            if code in UNSETTLED_CODES:
                continue
            if code != op.code or (code == "00" and approval != op.approval):
                found.append(Violation(
                    f"repeat answered {code}/{approval}, original {op.code}/{op.approval}",
                    [op]))
    return found


def check_balances(ops: Sequence[Withdrawal], cards: int, opening: int,
                   final: dict[int, int | None]) -> tuple[list[Violation], list[str]]:
    violations, table = [], []
    for card in range(cards):
        mine = [op for op in ops if op.card == card]
        unknown = [op for op in mine if op.charged() is None]
        if unknown:
            violations.append(Violation(f"card#{card}: withdrawals with an unknown outcome "
                                        "(reversal never acknowledged)", unknown))
            continue
        expected = opening - sum(op.charged() or 0 for op in mine)
        actual = final.get(card)
        table.append(f"card#{card}: opening {opening} charged {opening - expected} "
                     f"expected {expected} switch says {actual}")
        if actual != expected:
            shown = [op for op in mine if op.code == "00" or op.reversal is not None]
            violations.append(Violation(
                f"card#{card}: balance {actual} but the ATMs saw {expected} "
                f"(difference {None if actual is None else actual - expected})", shown))
        if actual is not None and actual < 0:
            violations.append(Violation(f"card#{card}: negative balance {actual}"))
    return violations, table


def check_ledger(ops: Sequence[Withdrawal], rows: LedgerRows) -> list[Violation]:
    found: list[Violation] = []
    for what, items in (("journals posted twice for one authorization",
                         rows.duplicate_auth_journals),
                        ("one original reversed more than once", rows.duplicate_reversals),
                        ("authorization journals without a matching approved authorization",
                         rows.orphan_journals)):
        if items:
            found.append(Violation(f"{what}: {items[:20]}"))
    for op in ops:
        found += _check_op(op, rows)
    return found


def _check_op(op: Withdrawal, rows: LedgerRows) -> list[Violation]:
    auths = rows.auth_by_rrn.get((op.atm, op.rrn), [])
    if len(auths) > 1:
        return [Violation(f"{len(auths)} authorizations for one request", [op])]
    auth = auths[0] if auths else None
    approved = auth is not None and auth["outcome"] == 0
    problems: list[str] = []
    if op.code == "00":
        if not approved:
            problems.append("the ATM was approved but the ledger has no approved "
                            "authorization")
        else:
            assert auth is not None
            journals = rows.journals_by_auth.get(auth["id"], [])
            if len(journals) != 1 or journals[0]["id"] != auth["journal_id"]:
                problems.append(f"approved with {len(journals)} journals (want exactly one)")
            if auth["approval_code"] != op.approval:
                problems.append(f"approval code {op.approval} but the ledger has "
                                f"{auth['approval_code']}")
    elif op.code is not None and approved and op.reversal is None:
        problems.append(f"the ATM was told {op.code} (no cash) but the ledger approved "
                        "and posted it")
    if approved and op.reversal_acked:
        assert auth is not None
        want_back = op.amount - (op.dispensed or 0)
        applied = rows.applied_reversals_by_auth.get(auth["id"], [])
        if auth["reversal_id"] is None or auth["reversed_amount"] != want_back:
            problems.append(f"reversal acknowledged but the ledger gave back "
                            f"{auth['reversed_amount']} (want {want_back})")
        if len(applied) != 1:
            problems.append(f"{len(applied)} applied reversals (want exactly one)")
        elif rows.journals_by_reversal.get(applied[0]["id"], []).__len__() != 1:
            problems.append("the applied reversal does not have exactly one journal")
    return [Violation(p, [op]) for p in problems]


def summarize(ops: Sequence[Withdrawal], inquiries: dict[str, int]) -> str:
    codes: dict[str, int] = {}
    for op in ops:
        key = op.code or "no answer"
        codes[key] = codes.get(key, 0) + 1
    reversals: dict[str, int] = {}
    for op in ops:
        if op.reversal is not None:
            k = f"{op.reversal}/{'acked' if op.reversal_acked else 'NOT acked'}"
            reversals[k] = reversals.get(k, 0) + 1
    repeats = sum(1 for op in ops if op.repeat)
    return (f"withdrawals: {len(ops)} by answer {dict(sorted(codes.items()))}; "
            f"reversals {dict(sorted(reversals.items()))}; repeats sent {repeats}; "
            f"balance inquiries {dict(sorted(inquiries.items()))}")


def merge_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    return total


Check = Callable[[], list[Violation]]
