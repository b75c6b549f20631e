"""PL/pgSQL functions: one call = one round trip per authorization or reversal.

Revision ID: 0002
Revises: 0001

Every hot-path function is called as the only statement of an implicit
transaction under SERIALIZABLE (the pool sets default_transaction_isolation).
They follow three rules that keep concurrent transactions on different cards
free of serialization failures:

- the idempotency key is claimed with INSERT … ON CONFLICT DO NOTHING, which
  takes no predicate lock (a SELECT-then-INSERT would lock the key index page
  that every concurrent authorization inserts into);
- rows of hot accounts are never read or updated: their postings are queued in
  hot_pending and folded later (ledger_fold_hot);
- ``enable_seqscan = off`` on the entry points: on small tables the planner
  would otherwise pick sequential scans, whose relation-wide predicate locks
  conflict with every writer.

The numeric codes below are ledger.model.Outcome and OpKind values, frozen
with this revision (tests check they still agree with the enums).
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of ledger.model enums as they were when this revision was written.
OUTCOMES: dict[str, int] = {
    "APPROVED": 0, "DUPLICATE_MISMATCH": 10, "LATE_ORIGINAL": 20, "CARD_UNKNOWN": 30,
    "CARD_BLOCKED": 40, "CARD_LOST": 50, "CARD_STOLEN": 60, "CARD_EXPIRED": 70,
    "CARD_CLOSED": 80, "TERMINAL_NOT_USABLE": 90, "PIN_TRIES_EXCEEDED": 100,
    "PIN_WRONG": 110, "NO_SUCH_ACCOUNT": 120, "ACCOUNT_NOT_USABLE": 130,
    "CURRENCY_MISMATCH": 140, "EXCEEDS_TRANSACTION_LIMIT": 150, "EXCEEDS_DAILY_AMOUNT": 160,
    "EXCEEDS_DAILY_COUNT": 170, "INSUFFICIENT_FUNDS": 180, "ORIGINAL_NOT_FOUND": 190,
    "ORIGINAL_DECLINED": 200, "ALREADY_REVERSED": 210, "REVERSAL_EXCEEDS_ORIGINAL": 220,
}
OP_KINDS: dict[str, int] = {
    "TOMBSTONE": 0, "WITHDRAWAL": 1, "BALANCE_INQUIRY": 2, "DEPOSIT": 3, "TRANSFER": 4,
    "HOLD": 5, "COMPLETION": 6,
}

_JOURNAL = """
-- Writes one balanced journal: the journal row, its postings, the hot queue,
-- and the totals of the non-hot accounts it touches. Zero lines are dropped.
-- Raises if the lines do not sum to zero (a bug in the caller, never data).
CREATE FUNCTION ledger_journal(
    p_id bigint, p_kind text, p_auth bigint, p_reversal bigint, p_currency text,
    p_accounts bigint[], p_amounts bigint[], p_hot boolean[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_sum bigint;
BEGIN
    SELECT coalesce(sum(x), 0) INTO v_sum FROM unnest(p_amounts) AS x;
    IF v_sum <> 0 OR cardinality(p_accounts) <> cardinality(p_amounts)
            OR cardinality(p_accounts) <> cardinality(p_hot) THEN
        RAISE EXCEPTION 'ledger invariant: journal % does not balance (sum %)', p_id, v_sum
            USING ERRCODE = 'XX000';
    END IF;
    INSERT INTO journals (id, kind, auth_id, reversal_id) VALUES (p_id, p_kind, p_auth, p_reversal);
    INSERT INTO postings (journal_id, line, account_id, amount, currency)
        SELECT p_id, u.n, u.acc, u.amt, p_currency
        FROM unnest(p_accounts, p_amounts) WITH ORDINALITY AS u(acc, amt, n)
        WHERE u.amt <> 0;
    INSERT INTO hot_pending (journal_id, line, account_id, amount)
        SELECT p_id, u.n, u.acc, u.amt
        FROM unnest(p_accounts, p_amounts, p_hot) WITH ORDINALITY AS u(acc, amt, hot, n)
        WHERE u.hot AND u.amt <> 0;
    UPDATE accounts a
       SET posted_debits = a.posted_debits + s.d, posted_credits = a.posted_credits + s.c
      FROM (SELECT u.acc, sum(greatest(u.amt, 0)) AS d, sum(greatest(-u.amt, 0)) AS c
              FROM unnest(p_accounts, p_amounts, p_hot) AS u(acc, amt, hot)
             WHERE NOT u.hot AND u.amt <> 0
             GROUP BY u.acc) AS s
     WHERE a.id = s.acc;
END
$fn$;
"""

_AUTHORIZE = """
CREATE FUNCTION ledger_authorize(
    p_kind smallint, p_key text, p_digest bytea, p_card_id bigint, p_terminal_id text,
    p_from_type text, p_to_type text, p_amount bigint, p_currency text, p_fee bigint,
    p_rrn text, p_pin_check text, p_pin_tries_max integer,
    p_orig_key text, p_orig_terminal text, p_orig_rrn text,
    p_business_date date, p_hold_expires_at timestamptz,
    OUT o_outcome smallint, OUT o_replayed boolean, OUT o_approval_code text,
    OUT o_account_type text, OUT o_currency text, OUT o_ledger_balance bigint,
    OUT o_available_balance bigint, OUT o_auth_id bigint, OUT o_suspense_amount bigint,
    OUT o_account_side text)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $fn$
DECLARE
    c cards%ROWTYPE;
    fa accounts%ROWTYPE;
    ta accounts%ROWTYPE;
    t terminals%ROWTYPE;
    h holds%ROWTYPE;
    v_have_card boolean := false;
    v_have_from boolean := false;
    v_have_to boolean := false;
    v_have_term boolean := false;
    v_have_hold boolean := false;
    v_from_type text;
    v_to_type text;
    v_account_id bigint;
    v_tries integer;
    v_pin_write boolean := false;
    v_usage_amount bigint := 0;
    v_usage_count integer := 0;
    v_counts_usage boolean := p_kind IN ({WITHDRAWAL}, {HOLD});
    v_need bigint := 0;
    v_available bigint;
    v_card_part bigint := 0;
    v_orig_auth bigint;
    v_orig_type text;
    v_fee_acct bigint;
    v_susp_acct bigint;
    v_id bigint;
    v_journal bigint;
    v_posts boolean;
    v_prior authorizations%ROWTYPE;
    v_debit bigint := 0;
    v_credit bigint := 0;
    v_pending_delta bigint := 0;
BEGIN
    o_outcome := {APPROVED};
    o_replayed := false;
    o_suspense_amount := 0;

    <<decide>>
    BEGIN
        IF p_kind = {COMPLETION} THEN
            -- An advice: acknowledged whatever the card's state. Find the hold.
            IF p_orig_key IS NOT NULL THEN
                SELECT id, account_type INTO v_orig_auth, v_orig_type FROM authorizations
                 WHERE key = p_orig_key AND kind = {HOLD} AND outcome = {APPROVED};
            END IF;
            IF v_orig_auth IS NULL AND p_orig_terminal IS NOT NULL AND p_orig_rrn IS NOT NULL THEN
                SELECT id, account_type INTO v_orig_auth, v_orig_type FROM authorizations
                 WHERE terminal_id = p_orig_terminal AND rrn = p_orig_rrn
                   AND kind = {HOLD} AND outcome = {APPROVED}
                 ORDER BY id DESC LIMIT 1;
            END IF;
            IF v_orig_auth IS NOT NULL THEN
                SELECT * INTO h FROM holds WHERE auth_id = v_orig_auth AND state = 'open'
                   FOR UPDATE;
                v_have_hold := FOUND;
            END IF;
            IF v_have_hold THEN
                SELECT * INTO fa FROM accounts WHERE id = h.account_id;
                v_have_from := FOUND AND fa.currency = p_currency;
                v_have_hold := v_have_from;
            END IF;
            SELECT * INTO t FROM terminals WHERE terminal_id = p_terminal_id;
            IF NOT FOUND THEN
                o_outcome := {TERMINAL_NOT_USABLE};
                EXIT decide;
            END IF;
            v_have_term := true;
            IF t.currency <> p_currency THEN
                o_outcome := {CURRENCY_MISMATCH};
                EXIT decide;
            END IF;
            EXIT decide;
        END IF;

        SELECT * INTO c FROM cards WHERE id = p_card_id;
        IF NOT FOUND THEN
            o_outcome := {CARD_UNKNOWN};
            EXIT decide;
        END IF;
        v_have_card := true;
        o_outcome := CASE c.status
            WHEN 'blocked' THEN {CARD_BLOCKED} WHEN 'lost' THEN {CARD_LOST}
            WHEN 'stolen' THEN {CARD_STOLEN} WHEN 'expired' THEN {CARD_EXPIRED}
            WHEN 'closed' THEN {CARD_CLOSED} ELSE {APPROVED} END;
        IF o_outcome = {APPROVED} AND p_business_date >= (make_date(
                2000 + substr(c.expiry, 1, 2)::integer, substr(c.expiry, 3, 2)::integer, 1)
                + interval '1 month') THEN
            o_outcome := {CARD_EXPIRED};
        END IF;
        IF o_outcome <> {APPROVED} THEN
            EXIT decide;
        END IF;

        IF p_kind IN ({WITHDRAWAL}, {DEPOSIT}) OR p_fee > 0 THEN
            SELECT * INTO t FROM terminals WHERE terminal_id = p_terminal_id;
            v_have_term := FOUND;
            IF NOT v_have_term OR t.status <> 'active' THEN
                o_outcome := {TERMINAL_NOT_USABLE};
                EXIT decide;
            END IF;
        END IF;

        v_tries := c.pin_tries;
        IF v_tries >= p_pin_tries_max THEN
            o_outcome := {PIN_TRIES_EXCEEDED};
            EXIT decide;
        ELSIF p_pin_check = 'wrong' THEN
            v_tries := v_tries + 1;
            v_pin_write := true;
            o_outcome := CASE WHEN v_tries >= p_pin_tries_max
                              THEN {PIN_TRIES_EXCEEDED} ELSE {PIN_WRONG} END;
            EXIT decide;
        ELSIF p_pin_check = 'ok' AND v_tries > 0 THEN
            v_tries := 0;
            v_pin_write := true;
        END IF;

        -- Accounts: 00 is the card's default account.
        v_from_type := p_from_type;
        IF p_kind = {DEPOSIT} AND p_to_type <> '00' THEN
            v_from_type := p_to_type;
        END IF;
        IF v_from_type = '00' THEN
            SELECT account_type, account_id INTO v_from_type, v_account_id FROM card_accounts
             WHERE card_id = c.id AND is_default;
        ELSE
            SELECT account_id INTO v_account_id FROM card_accounts
             WHERE card_id = c.id AND account_type = v_from_type;
        END IF;
        IF v_account_id IS NOT NULL THEN
            SELECT * INTO fa FROM accounts WHERE id = v_account_id;
            v_have_from := FOUND;
        END IF;
        IF NOT v_have_from THEN
            o_outcome := {NO_SUCH_ACCOUNT};
            o_account_type := v_from_type;
            o_account_side := 'from';
            EXIT decide;
        END IF;
        o_account_type := v_from_type;
        IF p_kind = {TRANSFER} THEN
            v_to_type := p_to_type;
            v_account_id := NULL;
            IF v_to_type = '00' THEN
                SELECT account_type, account_id INTO v_to_type, v_account_id FROM card_accounts
                 WHERE card_id = c.id AND is_default;
            ELSE
                SELECT account_id INTO v_account_id FROM card_accounts
                 WHERE card_id = c.id AND account_type = v_to_type;
            END IF;
            IF v_account_id IS NOT NULL AND v_account_id <> fa.id THEN
                SELECT * INTO ta FROM accounts WHERE id = v_account_id;
                v_have_to := FOUND;
            END IF;
            IF NOT v_have_to THEN
                o_outcome := {NO_SUCH_ACCOUNT};
                o_account_type := v_to_type;
                o_account_side := 'to';
                EXIT decide;
            END IF;
        END IF;
        IF fa.status <> 'active' OR (v_have_to AND ta.status <> 'active') THEN
            o_outcome := {ACCOUNT_NOT_USABLE};
            EXIT decide;
        END IF;
        IF fa.currency <> p_currency OR (v_have_to AND ta.currency <> p_currency)
                OR (v_have_term AND t.currency <> p_currency) THEN
            o_outcome := {CURRENCY_MISMATCH};
            EXIT decide;
        END IF;

        IF v_counts_usage THEN
            IF c.usage_date = p_business_date THEN
                v_usage_amount := c.usage_amount;
                v_usage_count := c.usage_count;
            END IF;
            IF c.txn_amount_max IS NOT NULL AND p_amount > c.txn_amount_max THEN
                o_outcome := {EXCEEDS_TRANSACTION_LIMIT};
                EXIT decide;
            END IF;
            IF c.daily_amount_max IS NOT NULL
                    AND v_usage_amount + p_amount > c.daily_amount_max THEN
                o_outcome := {EXCEEDS_DAILY_AMOUNT};
                EXIT decide;
            END IF;
            IF c.daily_count_max IS NOT NULL AND v_usage_count + 1 > c.daily_count_max THEN
                o_outcome := {EXCEEDS_DAILY_COUNT};
                EXIT decide;
            END IF;
        END IF;

        v_need := p_fee + CASE WHEN p_kind IN ({WITHDRAWAL}, {HOLD}, {TRANSFER})
                               THEN p_amount ELSE 0 END;
        v_available := fa.posted_credits - fa.posted_debits - fa.pending_debits
                       + fa.overdraft_limit;
        IF v_need > v_available THEN
            o_outcome := {INSUFFICIENT_FUNDS};
            EXIT decide;
        END IF;
    END decide;

    -- What the operation does to the from-account, so the stored response
    -- carries the balances after it.
    IF o_outcome = {APPROVED} THEN
        IF p_kind = {COMPLETION} THEN
            IF v_have_hold THEN
                v_card_part := least(p_amount, h.remaining);
                v_debit := v_card_part;
                v_pending_delta := -h.remaining;
            END IF;
            o_suspense_amount := p_amount - v_card_part;
            o_account_type := CASE WHEN v_have_hold THEN v_orig_type END;
        ELSIF p_kind = {HOLD} THEN
            v_pending_delta := p_amount;
        ELSIF p_kind = {DEPOSIT} THEN
            v_debit := p_fee;
            v_credit := p_amount;
        ELSIF p_kind = {BALANCE_INQUIRY} THEN
            v_debit := p_fee;
        ELSE
            v_debit := p_amount + p_fee;
        END IF;
    END IF;
    IF v_have_from THEN
        o_currency := fa.currency;
        o_ledger_balance := fa.posted_credits - fa.posted_debits + v_credit - v_debit;
        o_available_balance := o_ledger_balance - fa.pending_debits - v_pending_delta
                               + fa.overdraft_limit;
    END IF;

    -- Claim the key (no predicate lock), storing the response a repeat replays.
    v_id := nextval('authorizations_id_seq');
    v_posts := o_outcome = {APPROVED} AND (v_debit <> 0 OR v_credit <> 0
                                           OR o_suspense_amount <> 0);
    IF v_posts THEN
        v_journal := nextval('journals_id_seq');
    END IF;
    IF o_outcome = {APPROVED} THEN
        o_approval_code := to_char(v_id % 1000000, 'FM000000');
    END IF;
    INSERT INTO authorizations (
        id, key, kind, digest, card_id, terminal_id, rrn, account_id, to_account_id,
        counter_account_id, account_type, currency, amount, fee, suspense_amount, outcome,
        account_side, approval_code, ledger_balance, available_balance, journal_id,
        original_auth_id, business_date)
    VALUES (
        v_id, p_key, p_kind, p_digest, p_card_id, p_terminal_id, p_rrn,
        CASE WHEN v_have_from THEN fa.id END, CASE WHEN v_have_to THEN ta.id END,
        CASE WHEN v_have_term THEN t.cash_account_id END, o_account_type,
        coalesce(o_currency, p_currency),
        p_amount, CASE WHEN o_outcome = {APPROVED} THEN p_fee ELSE 0 END,
        o_suspense_amount, o_outcome, o_account_side, o_approval_code, o_ledger_balance,
        o_available_balance, v_journal, v_orig_auth, p_business_date)
    ON CONFLICT (key) DO NOTHING;
    IF NOT FOUND THEN
        -- A repeat: replay (same request) or refuse (different request); post nothing.
        SELECT * INTO v_prior FROM authorizations WHERE key = p_key;
        o_replayed := false; o_approval_code := NULL; o_account_type := NULL;
        o_currency := NULL; o_ledger_balance := NULL; o_available_balance := NULL;
        o_suspense_amount := 0; o_account_side := NULL; o_auth_id := NULL;
        IF v_prior.kind = {TOMBSTONE} THEN
            o_outcome := {LATE_ORIGINAL};
        ELSIF v_prior.digest IS DISTINCT FROM p_digest THEN
            o_outcome := {DUPLICATE_MISMATCH};
        ELSE
            o_outcome := v_prior.outcome;
            o_replayed := true;
            o_approval_code := v_prior.approval_code;
            o_account_type := v_prior.account_type;
            o_currency := CASE WHEN v_prior.ledger_balance IS NOT NULL
                               THEN v_prior.currency END;
            o_ledger_balance := v_prior.ledger_balance;
            o_available_balance := v_prior.available_balance;
            o_auth_id := v_prior.id;
            o_suspense_amount := v_prior.suspense_amount;
            o_account_side := v_prior.account_side;
        END IF;
        RETURN;
    END IF;
    o_auth_id := v_id;

    -- Effects (the key is ours).
    IF v_pin_write OR (o_outcome = {APPROVED} AND v_counts_usage) THEN
        IF o_outcome = {APPROVED} AND v_counts_usage THEN
            UPDATE cards SET pin_tries = v_tries, usage_date = p_business_date,
                   usage_amount = v_usage_amount + p_amount, usage_count = v_usage_count + 1
             WHERE id = c.id;
        ELSE
            UPDATE cards SET pin_tries = v_tries WHERE id = c.id;
        END IF;
    END IF;
    IF o_outcome <> {APPROVED} THEN
        RETURN;
    END IF;

    IF p_kind = {HOLD} THEN
        UPDATE accounts SET pending_debits = pending_debits + p_amount WHERE id = fa.id;
        INSERT INTO holds (auth_id, account_id, amount, remaining, state, expires_at)
        VALUES (v_id, fa.id, p_amount, p_amount, 'open', p_hold_expires_at);
        RETURN;
    END IF;
    IF p_kind = {COMPLETION} AND v_have_hold THEN
        UPDATE holds SET remaining = 0, state = 'completed', closed_at = now() WHERE id = h.id;
        UPDATE accounts SET pending_debits = pending_debits - h.remaining WHERE id = fa.id;
    END IF;
    IF NOT v_posts THEN
        RETURN;
    END IF;
    IF p_fee > 0 THEN
        SELECT id INTO STRICT v_fee_acct FROM accounts WHERE code = 'FEE:' || p_currency;
    END IF;

    IF p_kind = {WITHDRAWAL} THEN
        PERFORM ledger_journal(v_journal, 'authorization', v_id, NULL, p_currency,
            ARRAY[fa.id, t.cash_account_id, fa.id, v_fee_acct],
            ARRAY[p_amount, -p_amount, p_fee, -p_fee],
            ARRAY[false, true, false, true]);
    ELSIF p_kind = {DEPOSIT} THEN
        PERFORM ledger_journal(v_journal, 'authorization', v_id, NULL, p_currency,
            ARRAY[t.cash_account_id, fa.id, fa.id, v_fee_acct],
            ARRAY[p_amount, -p_amount, p_fee, -p_fee],
            ARRAY[true, false, false, true]);
    ELSIF p_kind = {TRANSFER} THEN
        PERFORM ledger_journal(v_journal, 'authorization', v_id, NULL, p_currency,
            ARRAY[fa.id, ta.id, fa.id, v_fee_acct],
            ARRAY[p_amount, -p_amount, p_fee, -p_fee],
            ARRAY[false, false, false, true]);
    ELSIF p_kind = {BALANCE_INQUIRY} THEN
        PERFORM ledger_journal(v_journal, 'authorization', v_id, NULL, p_currency,
            ARRAY[fa.id, v_fee_acct], ARRAY[p_fee, -p_fee], ARRAY[false, true]);
    ELSIF p_kind = {COMPLETION} THEN
        IF o_suspense_amount > 0 THEN
            SELECT id INTO STRICT v_susp_acct FROM accounts
             WHERE code = 'SUSPENSE:' || p_currency;
        END IF;
        PERFORM ledger_journal(v_journal, 'authorization', v_id, NULL, p_currency,
            ARRAY[CASE WHEN v_have_hold THEN fa.id END, v_susp_acct, t.cash_account_id],
            ARRAY[v_card_part, o_suspense_amount, -p_amount],
            ARRAY[false, true, true]);
    ELSE
        RAISE EXCEPTION 'ledger invariant: unknown operation kind %', p_kind
            USING ERRCODE = 'XX000';
    END IF;
END
$fn$;
"""

_REVERSE = """
CREATE FUNCTION ledger_reverse(
    p_key text, p_digest bytea, p_orig_key text, p_orig_terminal text, p_orig_rrn text,
    p_dispensed bigint, p_is_advice boolean,
    OUT o_outcome smallint, OUT o_replayed boolean, OUT o_approval_code text,
    OUT o_account_type text, OUT o_currency text, OUT o_ledger_balance bigint,
    OUT o_available_balance bigint, OUT o_auth_id bigint, OUT o_suspense_amount bigint,
    OUT o_account_side text)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $fn$
DECLARE
    r reversals%ROWTYPE;
    o authorizations%ROWTYPE;
    h holds%ROWTYPE;
    v_found boolean := false;
    v_full boolean := p_dispensed IS NULL;
    v_back bigint := 0;
    v_back_fee bigint := 0;
    v_back_susp bigint := 0;
    v_back_card bigint := 0;
    v_release bigint := 0;
    v_id bigint;
    v_journal bigint;
    v_fee_acct bigint;
    v_susp_acct bigint;
    v_bal record;
BEGIN
    o_replayed := false;
    o_suspense_amount := 0;

    SELECT * INTO r FROM reversals WHERE key = p_key;
    IF FOUND THEN
        IF r.digest IS DISTINCT FROM p_digest THEN
            o_outcome := {DUPLICATE_MISMATCH};
            RETURN;
        END IF;
        o_outcome := r.outcome;
        o_replayed := true;
        o_account_type := r.account_type;
        o_currency := r.currency;
        o_ledger_balance := r.ledger_balance;
        o_available_balance := r.available_balance;
        o_auth_id := r.original_auth_id;
        RETURN;
    END IF;

    IF p_orig_key IS NOT NULL THEN
        SELECT * INTO o FROM authorizations WHERE key = p_orig_key FOR UPDATE;
        v_found := FOUND;
    END IF;
    IF NOT v_found AND p_orig_terminal IS NOT NULL AND p_orig_rrn IS NOT NULL THEN
        SELECT * INTO o FROM authorizations
         WHERE terminal_id = p_orig_terminal AND rrn = p_orig_rrn AND kind <> {TOMBSTONE}
         ORDER BY id DESC LIMIT 1 FOR UPDATE;
        v_found := FOUND;
    END IF;
    v_id := nextval('reversals_id_seq');

    <<decide>>
    BEGIN
        IF NOT v_found THEN
            o_outcome := {ORIGINAL_NOT_FOUND};
            IF p_orig_key IS NOT NULL THEN
                -- The tombstone: a late original with this key will be declined.
                INSERT INTO authorizations (key, kind, terminal_id, outcome)
                VALUES (p_orig_key, {TOMBSTONE}, p_orig_terminal, {ORIGINAL_NOT_FOUND})
                ON CONFLICT (key) DO NOTHING;
            END IF;
            EXIT decide;
        END IF;
        IF o.kind = {TOMBSTONE} THEN
            o_outcome := {ORIGINAL_NOT_FOUND};
            EXIT decide;
        END IF;
        o_auth_id := o.id;
        o_account_type := o.account_type;
        IF o.outcome <> {APPROVED} THEN
            o_outcome := {ORIGINAL_DECLINED};
            EXIT decide;
        END IF;
        IF o.reversal_id IS NOT NULL THEN
            o_outcome := {ALREADY_REVERSED};
            EXIT decide;
        END IF;
        IF p_dispensed IS NOT NULL AND p_dispensed > o.amount THEN
            o_outcome := {REVERSAL_EXCEEDS_ORIGINAL};
            EXIT decide;
        END IF;
        IF o.kind = {HOLD} THEN
            SELECT * INTO STRICT h FROM holds WHERE auth_id = o.id FOR UPDATE;
            IF h.state <> 'open' THEN
                -- Completed, voided or expired: nothing left to release.
                o_outcome := {ALREADY_REVERSED};
                EXIT decide;
            END IF;
        END IF;
        o_outcome := {APPROVED};
        v_back := o.amount - coalesce(p_dispensed, 0);
        IF v_full THEN
            v_back_fee := o.fee;
        END IF;
    END decide;

    IF o_outcome = {APPROVED} THEN
        IF o.kind = {HOLD} THEN
            v_release := least(v_back, h.remaining);
            UPDATE holds SET remaining = remaining - v_release,
                   state = CASE WHEN remaining - v_release = 0 THEN 'voided' ELSE 'open' END,
                   closed_at = CASE WHEN remaining - v_release = 0 THEN now() END
             WHERE id = h.id;
            UPDATE accounts SET pending_debits = pending_debits - v_release
             WHERE id = h.account_id;
        ELSIF v_back + v_back_fee > 0 THEN
            v_journal := nextval('journals_id_seq');
            IF v_back_fee > 0 THEN
                SELECT id INTO STRICT v_fee_acct FROM accounts WHERE code = 'FEE:' || o.currency;
            END IF;
            IF o.kind = {WITHDRAWAL} THEN
                PERFORM ledger_journal(v_journal, 'reversal', NULL, v_id, o.currency,
                    ARRAY[o.account_id, o.counter_account_id, o.account_id, v_fee_acct],
                    ARRAY[-v_back, v_back, -v_back_fee, v_back_fee],
                    ARRAY[false, true, false, true]);
            ELSIF o.kind = {DEPOSIT} THEN
                PERFORM ledger_journal(v_journal, 'reversal', NULL, v_id, o.currency,
                    ARRAY[o.counter_account_id, o.account_id, o.account_id, v_fee_acct],
                    ARRAY[-v_back, v_back, -v_back_fee, v_back_fee],
                    ARRAY[true, false, false, true]);
            ELSIF o.kind = {TRANSFER} THEN
                PERFORM ledger_journal(v_journal, 'reversal', NULL, v_id, o.currency,
                    ARRAY[o.account_id, o.to_account_id, o.account_id, v_fee_acct],
                    ARRAY[-v_back, v_back, -v_back_fee, v_back_fee],
                    ARRAY[false, false, false, true]);
            ELSIF o.kind = {BALANCE_INQUIRY} THEN
                PERFORM ledger_journal(v_journal, 'reversal', NULL, v_id, o.currency,
                    ARRAY[o.account_id, v_fee_acct], ARRAY[-v_back_fee, v_back_fee],
                    ARRAY[false, true]);
            ELSIF o.kind = {COMPLETION} THEN
                -- Give back the part charged to suspense first: the card was only
                -- ever charged up to its hold.
                v_back_susp := least(v_back, o.suspense_amount);
                v_back_card := v_back - v_back_susp;
                IF v_back_susp > 0 THEN
                    SELECT id INTO STRICT v_susp_acct FROM accounts
                     WHERE code = 'SUSPENSE:' || o.currency;
                END IF;
                PERFORM ledger_journal(v_journal, 'reversal', NULL, v_id, o.currency,
                    ARRAY[o.account_id, v_susp_acct, o.counter_account_id],
                    ARRAY[-v_back_card, -v_back_susp, v_back],
                    ARRAY[false, true, true]);
            ELSE
                RAISE EXCEPTION 'ledger invariant: cannot reverse kind %', o.kind
                    USING ERRCODE = 'XX000';
            END IF;
        END IF;
        IF o.kind IN ({WITHDRAWAL}, {HOLD}) THEN
            UPDATE cards SET usage_amount = greatest(usage_amount - v_back, 0),
                   usage_count = greatest(usage_count - CASE WHEN v_full THEN 1 ELSE 0 END, 0)
             WHERE id = o.card_id AND usage_date = o.business_date;
        END IF;
        UPDATE authorizations SET reversal_id = v_id, reversed_amount = v_back + v_back_fee
         WHERE id = o.id;
    END IF;

    IF v_found AND o.account_id IS NOT NULL THEN
        SELECT currency, posted_credits - posted_debits AS ledger,
               posted_credits - posted_debits - pending_debits + overdraft_limit AS available
          INTO v_bal FROM accounts WHERE id = o.account_id;
        o_currency := v_bal.currency;
        o_ledger_balance := v_bal.ledger;
        o_available_balance := v_bal.available;
    END IF;

    INSERT INTO reversals (id, key, digest, original_key, original_auth_id, is_advice, amount,
                           outcome, journal_id, account_type, currency, ledger_balance,
                           available_balance)
    VALUES (v_id, p_key, p_digest, p_orig_key, o_auth_id, p_is_advice,
            CASE WHEN o_outcome = {APPROVED} THEN v_back + v_back_fee ELSE 0 END,
            o_outcome, v_journal, o_account_type, o_currency, o_ledger_balance,
            o_available_balance)
    ON CONFLICT (key) DO NOTHING;
    IF NOT FOUND THEN
        -- The same reversal is being applied concurrently: retry, then replay.
        RAISE EXCEPTION 'concurrent reversal with the same key'
            USING ERRCODE = '40001';
    END IF;
END
$fn$;
"""

_FOLD = """
-- Folds up to p_limit queued hot postings into their accounts' totals.
-- Run at READ COMMITTED: rows of transactions still in flight are invisible
-- and stay queued for the next fold; SKIP LOCKED lets two folds run at once.
CREATE FUNCTION ledger_fold_hot(p_limit integer) RETURNS integer
LANGUAGE sql AS $fn$
    WITH picked AS (
        SELECT journal_id, line FROM hot_pending LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), moved AS (
        DELETE FROM hot_pending q USING picked
         WHERE q.journal_id = picked.journal_id AND q.line = picked.line
        RETURNING q.account_id, q.amount
    ), sums AS (
        SELECT account_id, sum(greatest(amount, 0)) AS d, sum(greatest(-amount, 0)) AS c,
               count(*) AS n
          FROM moved GROUP BY account_id
    ), applied AS (
        UPDATE accounts a SET posted_debits = a.posted_debits + sums.d,
                              posted_credits = a.posted_credits + sums.c
          FROM sums WHERE a.id = sums.account_id
        RETURNING sums.n
    )
    SELECT coalesce(sum(n), 0)::integer FROM applied;
$fn$;
"""

_EXPIRE = """
-- Releases up to p_limit open holds that expired before p_now (READ COMMITTED,
-- SKIP LOCKED: a hold being completed right now is left to its completion).
CREATE FUNCTION ledger_expire_holds(p_now timestamptz, p_limit integer) RETURNS integer
LANGUAGE sql AS $fn$
    WITH picked AS (
        SELECT id, account_id, remaining FROM holds
         WHERE state = 'open' AND expires_at < p_now
         ORDER BY expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), closed AS (
        UPDATE holds h SET state = 'expired', remaining = 0, closed_at = p_now
          FROM picked WHERE h.id = picked.id
        RETURNING picked.account_id, picked.remaining
    ), sums AS (
        SELECT account_id, sum(remaining) AS released, count(*) AS n
          FROM closed GROUP BY account_id
    ), applied AS (
        UPDATE accounts a SET pending_debits = a.pending_debits - sums.released
          FROM sums WHERE a.id = sums.account_id
        RETURNING sums.n
    )
    SELECT coalesce(sum(n), 0)::integer FROM applied;
$fn$;
"""


def _render(sql: str) -> str:
    values = {**OUTCOMES, **OP_KINDS}
    for name, value in values.items():
        sql = sql.replace("{" + name + "}", str(value))
    assert "{" not in sql, "unresolved placeholder in function SQL"
    return sql


FUNCTIONS = (_JOURNAL, _AUTHORIZE, _REVERSE, _FOLD, _EXPIRE)
FUNCTION_SIGNATURES = (
    "ledger_journal(bigint, text, bigint, bigint, text, bigint[], bigint[], boolean[])",
    "ledger_authorize(smallint, text, bytea, bigint, text, text, text, bigint, text, bigint, "
    "text, text, integer, text, text, text, date, timestamptz)",
    "ledger_reverse(text, bytea, text, text, text, bigint, boolean)",
    "ledger_fold_hot(integer)",
    "ledger_expire_holds(timestamptz, integer)",
)


def upgrade() -> None:
    for sql in FUNCTIONS:
        op.execute(_render(sql))


def downgrade() -> None:
    for signature in reversed(FUNCTION_SIGNATURES):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
