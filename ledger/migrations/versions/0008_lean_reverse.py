"""ledger_reverse as one PL/pgSQL call, with the common reversal in one statement.

Revision ID: 0008
Revises: 0007

Until now a reversal paid what authorizations stopped paying in 0004 and 0006:
0005's wrapper (a second PL/pgSQL call, to leave an RRN tombstone) around 0002's
body, whose journal went through ``ledger_journal``'s generic array code (a
balance check and four statements). Measured before this revision (pg_stat_
statements, closed loop, 32 ATMs, 5% reversals): ≈0.55 ms of PostgreSQL time
per reversal against ≈0.31 ms per withdrawal.

This revision puts the tombstone at the end of 0002's body (taken from 0002
itself, not copied) under the same name, and writes the reversal of a fee-less
withdrawal, the common case, as one statement of data-modifying CTEs: the
journal, its two postings (numbered as ``ledger_journal`` numbers them), the
card account's credit and the ATM cash account's hot-queue entry. Other kinds,
and reversals that give a fee back, keep the generic path. Behaviour is 0005's.
``ledger_reverse_body`` is left in place, unused, for the downgrade.
"""

from __future__ import annotations

from alembic import op

from ledger.migrations import edited_function, revision_module

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values this revision uses.
WITHDRAWAL = 1
ORIGINAL_NOT_FOUND = 190

ARGS = "text, bytea, text, text, text, bigint, boolean"

_JOURNAL_CALL = """            IF o.kind = {WITHDRAWAL} THEN
                PERFORM ledger_journal(v_journal, 'reversal', NULL, v_id, o.currency,"""
_LEAN_WITHDRAWAL = """            IF o.kind = {WITHDRAWAL} AND v_back_fee = 0 THEN
                -- The common case in one statement: journal, postings, the card
                -- account's credit, the ATM cash account's queue entry.
                WITH journal AS (
                    INSERT INTO journals (id, kind, auth_id, reversal_id)
                    VALUES (v_journal, 'reversal', NULL, v_id)
                ), lines AS (
                    INSERT INTO postings (journal_id, line, account_id, amount, currency)
                    VALUES (v_journal, 1, o.account_id, -v_back, o.currency),
                           (v_journal, 2, o.counter_account_id, v_back, o.currency)
                ), balance AS (
                    UPDATE accounts SET posted_credits = posted_credits + v_back
                     WHERE id = o.account_id
                )
                INSERT INTO hot_pending (journal_id, line, account_id, amount)
                VALUES (v_journal, 2, o.counter_account_id, v_back);
            ELSIF o.kind = {WITHDRAWAL} THEN
                PERFORM ledger_journal(v_journal, 'reversal', NULL, v_id, o.currency,"""

_BODY_END = """    END IF;
END
$fn$;"""
_TOMBSTONE = """    END IF;
    IF o_outcome = {ORIGINAL_NOT_FOUND} AND p_orig_key IS NULL
       AND p_orig_terminal IS NOT NULL AND p_orig_rrn IS NOT NULL THEN
        -- No field 90 to leave a tombstone under: one for terminal + RRN.
        INSERT INTO rrn_tombstones (terminal_id, rrn) VALUES (p_orig_terminal, p_orig_rrn)
        ON CONFLICT (terminal_id, rrn) DO UPDATE SET created_at = now();
    END IF;
END
$fn$;"""


def _fill(text: str) -> str:
    return (text.replace("{WITHDRAWAL}", str(WITHDRAWAL))
            .replace("{ORIGINAL_NOT_FOUND}", str(ORIGINAL_NOT_FOUND)))


def function_sql() -> str:
    """0002's ledger_reverse with the lean withdrawal reversal and 0005's tombstone."""
    functions = revision_module("0002_functions.py")
    edits = [(_fill(anchor), _fill(replacement))
             for anchor, replacement in ((_JOURNAL_CALL, _LEAN_WITHDRAWAL),
                                         (_BODY_END, _TOMBSTONE))]
    return edited_function(functions._render(functions._REVERSE), edits, "0002")


def upgrade() -> None:
    op.execute(f"DROP FUNCTION ledger_reverse({ARGS})")   # 0005's wrapper
    op.execute(function_sql())


def downgrade() -> None:
    wrapper = revision_module("0005_rrn_tombstones.py")
    op.execute(f"DROP FUNCTION ledger_reverse({ARGS})")
    op.execute(wrapper._sql(wrapper._REVERSE))
