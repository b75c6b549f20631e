"""The ledger verifier: every invariant, checked in one consistent read-only snapshot.

Runs as SERIALIZABLE READ ONLY DEFERRABLE: it waits for a snapshot that no
concurrent transaction can invalidate, then never blocks writers nor makes
them fail. Hot-account postings not folded yet (``hot_pending``) are counted
into their accounts' balances, so the verifier is exact while the switch runs.

``main_async(dsn)`` is the CLI entry point: it prints the report and returns
the process exit status (0 clean, 1 violations, 2 database unreachable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

SAMPLES_MAX = 10
CONNECT_TIMEOUT_S = 10.0

# Kinds (ledger.model.OpKind): 0 tombstone, 1 withdrawal, 2 balance inquiry,
# 3 deposit, 4 transfer, 5 hold, 6 completion.
_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("journals_balance", "every journal sums to zero per currency",
     """SELECT format('journal %s currency %s sums to %s', journal_id, currency, sum(amount))
          FROM postings GROUP BY journal_id, currency HAVING sum(amount) <> 0"""),
    ("journals_complete", "every journal has postings; every posting a journal and an account "
     "of its currency",
     """SELECT format('journal %s has no postings', j.id) FROM journals j
         WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.journal_id = j.id)
        UNION ALL
        SELECT format('posting %s/%s: journal or account missing, or currency differs',
                      p.journal_id, p.line)
          FROM postings p LEFT JOIN journals j ON j.id = p.journal_id
          LEFT JOIN accounts a ON a.id = p.account_id
         WHERE j.id IS NULL OR a.id IS NULL OR a.currency <> p.currency"""),
    ("hot_queue", "every queued hot posting is a posting of a hot account",
     """SELECT format('queued %s/%s does not match a hot posting', q.journal_id, q.line)
          FROM hot_pending q
          LEFT JOIN postings p ON p.journal_id = q.journal_id AND p.line = q.line
          LEFT JOIN accounts a ON a.id = q.account_id
         WHERE p.journal_id IS NULL OR p.account_id <> q.account_id OR p.amount <> q.amount
            OR NOT a.hot
        UNION ALL
        SELECT format('posting %s/%s to hot-flag mismatch', p.journal_id, p.line)
          FROM postings p JOIN accounts a ON a.id = p.account_id
          JOIN hot_pending q ON q.journal_id = p.journal_id AND q.line = p.line
         WHERE NOT a.hot"""),
    ("balances", "every balance equals its postings (opening balances are funding journals; "
     "unfolded hot postings included)",
     """WITH p AS (SELECT account_id, sum(greatest(amount, 0)) AS d,
                          sum(greatest(-amount, 0)) AS c FROM postings GROUP BY account_id),
             q AS (SELECT account_id, sum(greatest(amount, 0)) AS d,
                          sum(greatest(-amount, 0)) AS c FROM hot_pending GROUP BY account_id)
        SELECT format('account %s: debits %s+%s vs postings %s, credits %s+%s vs postings %s',
                      a.code, a.posted_debits, coalesce(q.d, 0), coalesce(p.d, 0),
                      a.posted_credits, coalesce(q.c, 0), coalesce(p.c, 0))
          FROM accounts a LEFT JOIN p ON p.account_id = a.id LEFT JOIN q ON q.account_id = a.id
         WHERE a.posted_debits + coalesce(q.d, 0) <> coalesce(p.d, 0)
            OR a.posted_credits + coalesce(q.c, 0) <> coalesce(p.c, 0)
            OR (NOT a.hot AND q.account_id IS NOT NULL)"""),
    ("pending", "every pending total equals its open holds",
     """WITH h AS (SELECT account_id, sum(remaining) AS s FROM holds WHERE state = 'open'
                   GROUP BY account_id)
        SELECT format('account %s: pending %s vs open holds %s', a.code, a.pending_debits,
                      coalesce(h.s, 0))
          FROM accounts a LEFT JOIN h ON h.account_id = a.id
         WHERE a.pending_debits <> coalesce(h.s, 0) OR a.pending_credits <> 0"""),
    # A reversed deposit is a forced debit: the money never came in, so the debit is
    # taken even when the cardholder has already spent it. The allowance is what each
    # such reversal actually took the account below its rule (its stored available
    # balance after the debit), summed: not the deposits' amounts, so an overdraft
    # that did not come from a forced debit is still reported. (A later approval
    # that spends an allowance after a repayment would go unseen: the check sees
    # totals, not the order of events.)
    ("available", "no cardholder available balance below its overdraft rule, "
                  "beyond what reversed deposits forced",
     """WITH forced AS (
            SELECT a.account_id, sum(-r.available_balance) AS amount
              FROM reversals r
              JOIN authorizations a ON a.id = r.original_auth_id AND a.kind = 3
             WHERE r.outcome = 0 AND r.available_balance < 0
             GROUP BY a.account_id)
        SELECT format('account %s: available %s (forced %s)', code,
                      posted_credits - posted_debits - pending_debits + overdraft_limit,
                      coalesce(f.amount, 0))
          FROM accounts LEFT JOIN forced f ON f.account_id = accounts.id
         WHERE NOT hot
           AND posted_credits - posted_debits - pending_debits + overdraft_limit
               + coalesce(f.amount, 0) < 0"""),
    ("authorization_journals", "one journal per approved posting authorization, none per decline",
     """SELECT format('authorization %s (kind %s, outcome %s): journal %s', a.id, a.kind,
                      a.outcome, coalesce(a.journal_id::text, 'missing'))
          FROM authorizations a LEFT JOIN journals j ON j.id = a.journal_id
         WHERE a.kind <> 0 AND (
                (a.outcome <> 0 AND a.journal_id IS NOT NULL)
             OR (a.journal_id IS NOT NULL AND (j.id IS NULL OR j.auth_id IS DISTINCT FROM a.id
                                               OR j.kind <> 'authorization'))
             OR (a.outcome = 0 AND a.journal_id IS NULL AND a.kind <> 5
                 AND (a.fee > 0 OR (a.kind IN (1, 3, 4, 6) AND a.amount > 0))))
        UNION ALL
        SELECT format('journal %s (%s) is not the journal of its source', j.id, j.kind)
          FROM journals j
          LEFT JOIN authorizations a ON a.id = j.auth_id
          LEFT JOIN reversals r ON r.id = j.reversal_id
         WHERE (j.kind = 'authorization' AND (a.id IS NULL OR a.journal_id <> j.id
                                              OR j.reversal_id IS NOT NULL))
            OR (j.kind = 'reversal' AND (r.id IS NULL OR r.journal_id <> j.id
                                         OR j.auth_id IS NOT NULL))
            OR (j.kind = 'funding' AND (j.auth_id IS NOT NULL OR j.reversal_id IS NOT NULL))"""),
    ("holds", "one hold per approved 0100; holds match their authorization",
     """SELECT format('authorization %s: approved hold without its hold row', a.id)
          FROM authorizations a LEFT JOIN holds h ON h.auth_id = a.id
         WHERE a.kind = 5 AND a.outcome = 0 AND h.id IS NULL
        UNION ALL
        SELECT format('hold %s does not match its authorization', h.id)
          FROM holds h LEFT JOIN authorizations a ON a.id = h.auth_id
         WHERE a.id IS NULL OR a.kind <> 5 OR a.outcome <> 0 OR a.account_id <> h.account_id
            OR a.amount <> h.amount OR (h.state = 'open' AND h.remaining = 0)
            OR (h.state <> 'open' AND h.remaining <> 0)"""),
    ("keys_once", "no idempotency key posted twice",
     """SELECT format('key %s stored %s times', key, count(*)) FROM authorizations
         GROUP BY key HAVING count(*) > 1
        UNION ALL
        SELECT format('reversal key %s stored %s times', key, count(*)) FROM reversals
         GROUP BY key HAVING count(*) > 1"""),
    ("reversals", "reversals applied at most once and within their originals",
     """WITH r AS (SELECT original_auth_id, sum(amount) AS s, count(*) AS n, max(id) AS rid
                   FROM reversals WHERE outcome = 0 GROUP BY original_auth_id)
        SELECT format('authorization %s: reversed %s by %s reversal(s), recorded %s of %s',
                      a.id, coalesce(r.s, 0), coalesce(r.n, 0), a.reversed_amount,
                      a.amount + a.fee)
          FROM authorizations a LEFT JOIN r ON r.original_auth_id = a.id
         WHERE a.kind <> 0 AND (coalesce(r.n, 0) > 1 OR coalesce(r.s, 0) <> a.reversed_amount
                OR a.reversed_amount > a.amount + a.fee
                OR a.reversal_id IS DISTINCT FROM r.rid
                OR (r.n IS NOT NULL AND a.outcome <> 0))
        UNION ALL
        SELECT format('reversal %s: approved without a known original', r.id)
          FROM reversals r LEFT JOIN authorizations a ON a.id = r.original_auth_id
         WHERE r.outcome = 0 AND a.id IS NULL
        UNION ALL
        SELECT format('reversal %s: journal %s missing or wrong', r.id, r.journal_id)
          FROM reversals r JOIN authorizations a ON a.id = r.original_auth_id
         WHERE (r.outcome = 0 AND r.amount > 0 AND a.kind <> 5 AND r.journal_id IS NULL)
            OR (r.outcome <> 0 AND r.journal_id IS NOT NULL)"""),
)

_COUNTS = """SELECT (SELECT count(*) FROM accounts) AS accounts,
                    (SELECT count(*) FROM journals) AS journals,
                    (SELECT count(*) FROM postings) AS postings,
                    (SELECT count(*) FROM authorizations WHERE kind <> 0) AS authorizations,
                    (SELECT count(*) FROM reversals) AS reversals,
                    (SELECT count(*) FROM hot_pending) AS unfolded_hot_postings"""


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    description: str
    violations: int
    samples: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclass(frozen=True, slots=True)
class VerifyReport:
    checks: tuple[CheckResult, ...]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def violations(self) -> int:
        return sum(check.violations for check in self.checks)

    def render(self) -> str:
        lines = ["ledger verification: " + ("CLEAN" if self.ok else
                                            f"{self.violations} VIOLATION(S)")]
        lines.append("  " + ", ".join(f"{name} {value}" for name, value in self.counts.items()))
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            suffix = "" if check.ok else f" ({check.violations})"
            lines.append(f"  {mark} {check.name}: {check.description}{suffix}")
            lines.extend(f"         - {sample}" for sample in check.samples)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


async def run_checks(conn: Any) -> VerifyReport:
    """Run every check on ``conn`` (an asyncpg connection) in one snapshot.

    Raises asyncpg errors; callers translate them.
    """
    results = []
    async with conn.transaction(isolation="serializable", readonly=True, deferrable=True):
        counts_row = await conn.fetchrow(_COUNTS)
        for name, description, sql in _CHECKS:
            rows = await conn.fetch(
                f"SELECT v, count(*) OVER () AS n FROM ({sql}) AS found(v) LIMIT $1",  # noqa: S608 (fixed SQL)
                SAMPLES_MAX)
            total = int(rows[0]["n"]) if rows else 0
            results.append(CheckResult(name, description, total,
                                       tuple(str(row["v"]) for row in rows)))
    counts = {key: int(value) for key, value in dict(counts_row).items()}
    return VerifyReport(tuple(results), counts)


async def verify_dsn(dsn: str) -> VerifyReport:
    """Connect, verify, disconnect. Raises LedgerUnavailable, LedgerError.

    No statement timeout: the checks read whole tables.
    """
    from ledger.errors import LedgerError, LedgerUnavailable

    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=None)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise LedgerUnavailable("cannot connect to the ledger database") from exc
    try:
        return await run_checks(conn)
    except asyncpg.PostgresError as exc:
        raise LedgerError(f"verification failed to run ({exc.sqlstate})") from exc
    except (OSError, asyncpg.InterfaceError) as exc:
        raise LedgerUnavailable("ledger database connection lost") from exc
    finally:
        await conn.close()


async def main_async(dsn: str) -> int:
    """CLI entry: print the report; 0 clean, 1 violations, 2 cannot run."""
    from ledger.errors import LedgerError

    try:
        report = await verify_dsn(dsn)
    except LedgerError as exc:
        print(f"ledger verification could not run: {exc}")
        return 2
    print(report.render())
    return 0 if report.ok else 1
