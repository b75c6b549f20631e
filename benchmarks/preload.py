"""Pre-load ledger history for the scale run, by bulk SQL (not through the switch).

Each pre-loaded item is what an approved cash withdrawal leaves behind: an
authorization row (kind 1, outcome approved, its own idempotency key), its
journal, and two postings (cardholder account debit, ATM cash credit), so the
tables and indexes the hot path touches (authorization keys, journals,
postings, account rows) grow as they would in production. Account totals are
updated by the same amounts in the same transaction, so every journal
balances and `atm-switch ledger verify` stays clean.

This writes to ledger tables directly, which the rest of the code never does;
it is a benchmark fixture only, run while no load is applied.
"""

from __future__ import annotations

import time

import psycopg

BATCH_AUTHORIZATIONS = 250_000  # 500k postings per transaction
POSTINGS_PER_ITEM = 2
PRELOAD_TIMEOUT_S = 3600.0

_SETUP = (
    """CREATE TEMP TABLE IF NOT EXISTS bench_cards AS
       SELECT (row_number() OVER (ORDER BY ca.card_id) - 1)::bigint AS n, ca.card_id,
              ca.account_id
         FROM card_accounts ca JOIN accounts a ON a.id = ca.account_id
        WHERE ca.is_default AND a.currency = '840'
          -- only the benchmark's rich cards: history never takes one below zero
          AND a.posted_credits - a.posted_debits - a.pending_debits >= 5000000000""",
    """CREATE TEMP TABLE IF NOT EXISTS bench_terms AS
       SELECT (row_number() OVER (ORDER BY t.terminal_id) - 1)::bigint AS n, t.terminal_id,
              t.cash_account_id
         FROM terminals t JOIN accounts a ON a.id = t.cash_account_id
        WHERE a.currency = '840'""",
    """CREATE TEMP TABLE IF NOT EXISTS bench_pre (aid bigint, jid bigint, card_id bigint,
       account_id bigint, terminal_id text, cash_account_id bigint, amount bigint)""",
)

_BATCH = (
    "TRUNCATE bench_pre",
    """INSERT INTO bench_pre
       SELECT nextval('authorizations_id_seq'), nextval('journals_id_seq'), c.card_id,
              c.account_id, t.terminal_id, t.cash_account_id, 2000 + (g %% 19) * 1000
         FROM generate_series(1, %(n)s) AS g
         JOIN bench_cards c ON c.n = (g * 7919) %% %(cards)s
         JOIN bench_terms t ON t.n = g %% %(terms)s""",
    """INSERT INTO authorizations (id, key, kind, card_id, terminal_id, rrn, account_id,
              counter_account_id, account_type, currency, amount, outcome, account_side,
              approval_code, journal_id, business_date, created_at)
       SELECT aid, 'preload:' || aid, 1, card_id, terminal_id, lpad((aid % 1000000000000)::text,
              12, '0'), account_id, cash_account_id, '20', '840', amount, 0, 'from',
              to_char(aid % 1000000, 'FM000000'), jid, current_date - 400,
              now() - interval '400 days'
         FROM bench_pre""",
    """INSERT INTO journals (id, kind, auth_id, memo, created_at)
       SELECT jid, 'authorization', aid, 'bench preload', now() - interval '400 days'
         FROM bench_pre""",
    """INSERT INTO postings (journal_id, line, account_id, amount, currency)
       SELECT jid, 1, account_id, amount, '840' FROM bench_pre
       UNION ALL
       SELECT jid, 2, cash_account_id, -amount, '840' FROM bench_pre""",
    """UPDATE accounts a SET posted_debits = a.posted_debits + s.total
         FROM (SELECT account_id, sum(amount) AS total FROM bench_pre GROUP BY account_id) s
        WHERE a.id = s.account_id""",
    """UPDATE accounts a SET posted_credits = a.posted_credits + s.total
         FROM (SELECT cash_account_id, sum(amount) AS total FROM bench_pre
                GROUP BY cash_account_id) s
        WHERE a.id = s.cash_account_id""",
)


def count_postings(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM postings").fetchone()
    assert row is not None
    return int(row[0])


def preload_postings(dsn: str, target_total: int) -> tuple[int, int, float]:
    """Add withdrawal history until the ledger holds about `target_total` postings.

    Returns (postings added, postings now, seconds). Raises psycopg.Error.
    """
    t0 = time.monotonic()
    have = count_postings(dsn)
    need_items = max(0, (target_total - have) // POSTINGS_PER_ITEM)
    added = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in _SETUP:
            conn.execute(sql)  # type: ignore[arg-type]  # fixed text
        row = conn.execute("SELECT (SELECT count(*) FROM bench_cards), "
                           "(SELECT count(*) FROM bench_terms)").fetchone()
        assert row is not None
        cards, terms = int(row[0]), int(row[1])
        if cards == 0 or terms == 0:
            raise ValueError("nothing provisioned to pre-load history for")
        batches = -(-need_items // BATCH_AUTHORIZATIONS)
        for _ in range(batches):  # bounded by the target
            if time.monotonic() - t0 > PRELOAD_TIMEOUT_S:
                raise TimeoutError("pre-loading took too long")
            n = min(BATCH_AUTHORIZATIONS, need_items - added // POSTINGS_PER_ITEM)
            with conn.transaction():
                for sql in _BATCH:
                    params = {"n": n, "cards": cards, "terms": terms} if "%(" in sql else None
                    conn.execute(sql, params)  # type: ignore[arg-type]  # fixed text
            added += n * POSTINGS_PER_ITEM
        # Leave no work for autovacuum or the checkpointer inside the next window.
        conn.execute("VACUUM (ANALYZE) authorizations, journals, postings, accounts")
        conn.execute("CHECKPOINT")
    return added, have + added, time.monotonic() - t0
