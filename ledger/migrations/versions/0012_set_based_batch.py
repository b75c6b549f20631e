"""A group commit's plain withdrawals and balance inquiries decided and posted set-wise.

Revision ID: 0012
Revises: 0011

After 0009-0011 most of what PostgreSQL spends on a batch is the executor's
start-up and shut-down: each operation of a group commit was one call of
ledger_authorize, and each call ran its card read and its posting statement
(two statements for an approved fee-less withdrawal, more for others).
``ledger_authorize_batch`` takes the batch's arrays and walks them in arrival
order. A run of two or more consecutive *plain* operations (a withdrawal of a
positive amount or a balance inquiry, no fee, no original, PIN verified or not
needed) is read, decided and written by one statement for the whole run; every
other operation (reversals, advices, holds, transfers, deposits, fees, wrong
PINs) is one call of ledger_authorize or ledger_reverse, as before, in its
place in the order.

Why the result is the same as one call per operation, in order:

- The run's operations touch disjoint rows. A run ends before an operation
  whose card or idempotency key is already in it (that operation starts the
  next run, which sees the first one's writes). Operations of a run on the same
  account (a joint account's two cards) are *deferred*: the statement leaves
  them untouched and the function calls ledger_authorize for each of them
  after the statement, in their order. Nothing else of the run reads what they
  write (terminal rows and tombstones are only read; the journal, postings and
  the hot account's queue are only appended to), so moving them after the rest
  of their run changes no decision.
- The decision is ledger_authorize's, written as one CASE in its precedence
  order (card unknown, late original, card status, expiry, terminal, PIN tries,
  account, account status, currency, limits, funds); the balances returned and
  stored are computed the same way.
- Every write is gated on the operation's claim (``INSERT ... ON CONFLICT (key)
  DO NOTHING RETURNING``). An operation whose key was already stored (a repeat)
  claims nothing and writes nothing here; it is deferred too, and its call of
  ledger_authorize replays or refuses it as before.

The function plans nested loops over primary keys only, as ledger_authorize
does: with hash or merge joins the planner scanned whole indexes for the run's
joins, took SERIALIZABLE predicate locks on all of them, and concurrent batches
failed to serialize.

Each row says whether it was decided set-wise (``o_set_wise``; the switch counts
them in ``atm_switch_ledger_set_wise_operations_total``).

``tests/ledger/test_set_batch.py`` holds the statement to that: random batches
run through this function and through one call per operation, in the same
state, must give the same answers and leave the same rows.
"""

from __future__ import annotations

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values this revision uses.
WITHDRAWAL = 1
BALANCE_INQUIRY = 2
REVERSAL_ADVICE_KIND = -2
LATE_ORIGINAL = 20
TOMBSTONE_WINDOW = "2 days"

_ARRAYS = """
    p_kind smallint[], p_key text[], p_digest bytea[], p_card_id bigint[],
    p_terminal_id text[], p_from_type text[], p_to_type text[], p_amount bigint[],
    p_currency text[], p_fee bigint[], p_rrn text[], p_pin_check text[],
    p_pin_tries_max integer[], p_orig_key text[], p_orig_terminal text[],
    p_orig_rrn text[], p_business_date date[], p_hold_expires_at timestamptz[],
    p_tpk text[]"""

_SIGNATURE = (
    "smallint[], text[], bytea[], bigint[], text[], text[], text[], bigint[], text[], "
    "bigint[], text[], text[], integer[], text[], text[], text[], date[], timestamptz[], "
    "text[]"
)

# One operation by itself, as the batch statement of 0006-0011 called it.
_ONE = """
        IF p_kind[v_i] >= 0 THEN
            RETURN QUERY SELECT v_i, f.*, false FROM ledger_authorize(
                p_kind[v_i], p_key[v_i], p_digest[v_i], p_card_id[v_i], p_terminal_id[v_i],
                p_from_type[v_i], p_to_type[v_i], p_amount[v_i], p_currency[v_i], p_fee[v_i],
                p_rrn[v_i], p_pin_check[v_i], p_pin_tries_max[v_i], p_orig_key[v_i],
                p_orig_terminal[v_i], p_orig_rrn[v_i], p_business_date[v_i],
                p_hold_expires_at[v_i], p_tpk[v_i]) AS f;
        ELSE
            RETURN QUERY SELECT v_i, f.*, false FROM ledger_reverse(
                p_key[v_i], p_digest[v_i], p_orig_key[v_i], p_orig_terminal[v_i],
                p_orig_rrn[v_i], p_amount[v_i], p_kind[v_i] = {REVERSAL_ADVICE_KIND}) AS f;
        END IF;"""

# Operations rows v_lo..v_hi (all plain) in one statement; see the module's text.
_RUN = """
        FOR r IN
            WITH a AS (
                SELECT g AS n, p_kind[g] AS kind, p_key[g] AS key, p_digest[g] AS digest,
                       p_card_id[g] AS card_id, p_terminal_id[g] AS terminal_id,
                       p_from_type[g] AS from_type, p_amount[g] AS amount,
                       p_currency[g] AS currency, p_rrn[g] AS rrn,
                       p_pin_check[g] AS pin_check, p_pin_tries_max[g] AS tries_max,
                       p_business_date[g] AS business_date
                  FROM generate_series(v_lo, v_hi) AS g
            ), rd AS (
                SELECT a.*, c.id IS NOT NULL AS c_found, c.status AS c_status,
                       c.expiry AS c_expiry, c.pin_tries AS c_tries,
                       c.txn_amount_max, c.daily_amount_max, c.daily_count_max,
                       CASE WHEN c.usage_date = a.business_date THEN c.usage_amount
                            ELSE 0 END AS u_amount,
                       CASE WHEN c.usage_date = a.business_date THEN c.usage_count
                            ELSE 0 END AS u_count,
                       ac.account_type AS a_type, ac.id AS a_id, ac.status AS a_status,
                       ac.currency AS a_currency, ac.posted_credits, ac.posted_debits,
                       ac.pending_debits, ac.overdraft_limit,
                       t.terminal_id IS NOT NULL AS t_found, t.status AS t_status,
                       t.currency AS t_currency, t.cash_account_id AS t_cash,
                       rt.rrn IS NOT NULL AS tomb
                  FROM a
                  LEFT JOIN cards c ON c.id = a.card_id
                  LEFT JOIN LATERAL (
                        SELECT ca.account_type, acc.*
                          FROM card_accounts ca JOIN accounts acc ON acc.id = ca.account_id
                         WHERE ca.card_id = c.id
                           AND CASE WHEN a.from_type = '00' THEN ca.is_default
                                    ELSE ca.account_type = a.from_type END
                         ORDER BY ca.account_type LIMIT 1) AS ac ON true
                  LEFT JOIN terminals t ON t.terminal_id = a.terminal_id
                  LEFT JOIN rrn_tombstones rt ON rt.terminal_id = a.terminal_id
                       AND rt.rrn = a.rrn
                       AND rt.created_at > now() - interval '{TOMBSTONE_WINDOW}'
            ), dc AS (
                SELECT rd.*,
                       CASE
                         WHEN NOT c_found THEN 30
                         WHEN tomb THEN {LATE_ORIGINAL}
                         WHEN c_status = 'blocked' THEN 40
                         WHEN c_status = 'lost' THEN 50
                         WHEN c_status = 'stolen' THEN 60
                         WHEN c_status = 'expired' THEN 70
                         WHEN c_status = 'closed' THEN 80
                         WHEN business_date >= (make_date(
                                2000 + substr(c_expiry, 1, 2)::integer,
                                substr(c_expiry, 3, 2)::integer, 1)
                                + interval '1 month') THEN 70
                         WHEN kind = {WITHDRAWAL} AND (NOT t_found OR t_status <> 'active')
                              THEN 90
                         WHEN c_tries >= tries_max THEN 100
                         WHEN a_id IS NULL THEN 120
                         WHEN a_status <> 'active' THEN 130
                         WHEN a_currency <> currency
                              OR (kind = {WITHDRAWAL} AND t_currency <> currency) THEN 140
                         WHEN kind = {WITHDRAWAL} AND txn_amount_max IS NOT NULL
                              AND amount > txn_amount_max THEN 150
                         WHEN kind = {WITHDRAWAL} AND daily_amount_max IS NOT NULL
                              AND u_amount + amount > daily_amount_max THEN 160
                         WHEN kind = {WITHDRAWAL} AND daily_count_max IS NOT NULL
                              AND u_count + 1 > daily_count_max THEN 170
                         WHEN CASE WHEN kind = {WITHDRAWAL} THEN amount ELSE 0 END
                              > posted_credits - posted_debits - pending_debits
                                + overdraft_limit THEN 180
                         ELSE 0
                       END::smallint AS outcome,
                       -- Runs hold no card or key twice (the loop below ends a run
                       -- there); an account behind two of its cards is deferred.
                       (a_id IS NOT NULL AND count(*) OVER (PARTITION BY a_id) > 1) AS shared
                  FROM rd
            ), d AS (
                SELECT dc.*,
                       -- Only an operation that got past the PIN-tries check resets them.
                       coalesce(pin_check = 'ok' AND c_tries > 0
                                AND outcome IN (0, 120, 130, 140, 150, 160, 170, 180),
                                false) AS pin_write,
                       outcome = 0 AND kind = {WITHDRAWAL} AS posts,
                       CASE WHEN outcome = 120 THEN from_type
                            WHEN outcome IN (0, 130, 140, 150, 160, 170, 180) THEN a_type
                       END AS o_type,
                       CASE WHEN outcome = 120 THEN 'from' END AS o_side,
                       CASE WHEN a_id IS NOT NULL AND outcome <> {LATE_ORIGINAL}
                            THEN posted_credits - posted_debits
                                 - CASE WHEN outcome = 0 AND kind = {WITHDRAWAL}
                                        THEN amount ELSE 0 END
                       END AS o_ledger,
                       CASE WHEN NOT shared AND outcome <> {LATE_ORIGINAL}
                            THEN nextval('authorizations_id_seq') END AS v_id,
                       CASE WHEN NOT shared AND outcome = 0 AND kind = {WITHDRAWAL}
                            THEN nextval('journals_id_seq') END AS v_journal
                  FROM dc
            ), claim AS (
                INSERT INTO authorizations (
                    id, key, kind, digest, card_id, terminal_id, rrn, account_id,
                    to_account_id, counter_account_id, account_type, currency, amount, fee,
                    suspense_amount, outcome, account_side, approval_code, ledger_balance,
                    available_balance, journal_id, original_auth_id, business_date)
                SELECT v_id, key, kind, digest, card_id, terminal_id, rrn, a_id, NULL,
                       CASE WHEN kind = {WITHDRAWAL} AND c_found AND t_found THEN t_cash END,
                       o_type, CASE WHEN o_ledger IS NOT NULL THEN a_currency ELSE currency END,
                       amount, 0, 0, outcome, o_side,
                       CASE WHEN outcome = 0 THEN to_char(v_id % 1000000, 'FM000000') END,
                       o_ledger, o_ledger - pending_debits + overdraft_limit, v_journal, NULL,
                       business_date
                  FROM d WHERE v_id IS NOT NULL
                ON CONFLICT (key) DO NOTHING
                RETURNING id
            ), w AS (
                SELECT d.* FROM d JOIN claim ON claim.id = d.v_id
            ), card_usage AS (
                UPDATE cards c
                   SET pin_tries = CASE WHEN w.pin_write THEN 0 ELSE w.c_tries END,
                       usage_date = CASE WHEN w.posts THEN w.business_date
                                         ELSE c.usage_date END,
                       usage_amount = CASE WHEN w.posts THEN w.u_amount + w.amount
                                           ELSE c.usage_amount END,
                       usage_count = CASE WHEN w.posts THEN w.u_count + 1
                                          ELSE c.usage_count END
                  FROM w
                 WHERE c.id = w.card_id AND (w.pin_write OR w.posts)
            ), balance AS (
                UPDATE accounts acc SET posted_debits = acc.posted_debits + w.amount
                  FROM w
                 WHERE acc.id = w.a_id AND w.posts
            ), journal AS (
                INSERT INTO journals (id, kind, auth_id)
                SELECT v_journal, 'authorization', v_id FROM w WHERE posts
            ), lines AS (
                INSERT INTO postings (journal_id, line, account_id, amount, currency)
                SELECT w.v_journal, l.line, l.account_id, l.amount, w.currency
                  FROM w CROSS JOIN LATERAL (
                        VALUES (1::smallint, w.a_id, w.amount),
                               (2::smallint, w.t_cash, -w.amount))
                       AS l (line, account_id, amount)
                 WHERE w.posts
            ), queued AS (
                INSERT INTO hot_pending (journal_id, line, account_id, amount)
                SELECT v_journal, 2, t_cash, -amount FROM w WHERE posts
            )
            SELECT d.n, d.outcome, d.o_type, d.o_side, d.o_ledger,
                   d.o_ledger - d.pending_debits + d.overdraft_limit AS o_available,
                   CASE WHEN d.o_ledger IS NOT NULL THEN d.a_currency END AS o_currency,
                   d.v_id,
                   d.shared OR (d.v_id IS NOT NULL AND claim.id IS NULL) AS deferred
              FROM d LEFT JOIN claim ON claim.id = d.v_id
             ORDER BY d.n
        LOOP
            IF r.deferred THEN
                v_deferred := v_deferred || r.n;
                CONTINUE;
            END IF;
            n := r.n;
            o_outcome := r.outcome;
            o_replayed := false;
            o_approval_code := CASE WHEN r.outcome = 0
                                    THEN to_char(r.v_id % 1000000, 'FM000000') END;
            o_account_type := r.o_type;
            o_currency := r.o_currency;
            o_ledger_balance := r.o_ledger;
            o_available_balance := r.o_available;
            o_auth_id := r.v_id;
            o_suspense_amount := 0;
            o_account_side := r.o_side;
            o_set_wise := true;
            RETURN NEXT;
        END LOOP;"""

_FUNCTION = """
CREATE FUNCTION ledger_authorize_batch({ARRAYS})
RETURNS TABLE (n integer, o_outcome smallint, o_replayed boolean, o_approval_code text,
               o_account_type text, o_currency text, o_ledger_balance bigint,
               o_available_balance bigint, o_auth_id bigint, o_suspense_amount bigint,
               o_account_side text, o_set_wise boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
#variable_conflict use_column
DECLARE
    v_count integer := coalesce(cardinality(p_kind), 0);
    v_i integer := 1;
    v_lo integer;
    v_hi integer;
    v_deferred integer[];
    r record;
BEGIN
    WHILE v_i <= v_count LOOP
        v_lo := v_i;
        v_hi := v_i - 1;
        WHILE v_hi < v_count
              AND p_kind[v_hi + 1] IN ({WITHDRAWAL}, {BALANCE_INQUIRY})
              AND p_fee[v_hi + 1] = 0
              AND (p_kind[v_hi + 1] = {BALANCE_INQUIRY} OR p_amount[v_hi + 1] > 0)
              AND p_pin_check[v_hi + 1] IS DISTINCT FROM 'wrong'
              AND p_orig_key[v_hi + 1] IS NULL AND p_orig_terminal[v_hi + 1] IS NULL
              AND p_orig_rrn[v_hi + 1] IS NULL
              AND NOT p_card_id[v_hi + 1] = ANY (p_card_id[v_lo:v_hi])
              AND NOT p_key[v_hi + 1] = ANY (p_key[v_lo:v_hi]) LOOP
            v_hi := v_hi + 1;
        END LOOP;
        IF v_hi - v_lo >= 1 THEN
            -- A run of plain operations: one statement; its deferred ones below.
            v_deferred := '{}';
{RUN}
        ELSE
            -- Any other operation, or a plain one alone: one call.
            v_hi := v_lo;
            v_deferred := ARRAY[v_lo];
        END IF;
        FOREACH v_i IN ARRAY v_deferred LOOP
{ONE}
        END LOOP;
        v_i := v_hi + 1;
    END LOOP;
END
$fn$
"""


def _render(template: str) -> str:
    values = {"WITHDRAWAL": WITHDRAWAL, "BALANCE_INQUIRY": BALANCE_INQUIRY,
              "REVERSAL_ADVICE_KIND": REVERSAL_ADVICE_KIND, "LATE_ORIGINAL": LATE_ORIGINAL,
              "TOMBSTONE_WINDOW": TOMBSTONE_WINDOW}
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def function_sql() -> str:
    return _render(_FUNCTION.replace("{ARRAYS}", _ARRAYS).replace("{RUN}", _RUN)
                   .replace("{ONE}", _ONE))


def upgrade() -> None:
    op.execute(function_sql())


def downgrade() -> None:
    op.execute(f"DROP FUNCTION ledger_authorize_batch({_SIGNATURE})")
