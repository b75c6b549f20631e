"""ledger_authorize checks a wrong PIN's key itself: no terminal re-read before it.

Revision ID: 0007
Revises: 0006

A wrong PIN counts against the card only if the terminal PIN key (TPK) the
switch verified it under is still the terminal's key: another worker may have
changed the key since this one cached the terminal. Until now the switch made
sure by reading the terminal again before every wrong-PIN call, a database
transaction of its own; in the benchmark mix (5% wrong PINs) that was about a
quarter of the database transactions left per request once authorizations and
reversals shared the group commit. The function already reads the terminal row
in its card/account/terminal join, so it now takes the key the switch used
(``p_tpk``, the stored wrapped-key text) and, for a wrong PIN under a key that
is no longer the terminal's, returns KEY_STALE at once: nothing is counted or
recorded under the idempotency key, and the switch re-reads the terminal,
verifies again and resubmits. ``p_tpk`` defaults to NULL (no check), so a
switch still passing 18 arguments keeps working during a rolling upgrade.

Built from 0006's function text (not copied), like 0006 was from 0004.
"""

from __future__ import annotations

from alembic import op

from ledger.migrations import edited_function, revision_module

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values this revision uses.
PIN_TRIES_EXCEEDED = 100
KEY_STALE = 105

_ARGS_0006 = (
    "smallint, text, bytea, bigint, text, text, text, bigint, text, bigint, text, text, "
    "integer, text, text, text, date, timestamptz"
)
ARGS = _ARGS_0006 + ", text"

# (anchor in 0006's text, what it becomes); each anchor occurs exactly once.
_EDITS: tuple[tuple[str, str], ...] = (
    ("p_business_date date, p_hold_expires_at timestamptz,\n",
     "p_business_date date, p_hold_expires_at timestamptz, p_tpk text DEFAULT NULL,\n"),
    ("    t_cash bigint;\n",
     "    t_cash bigint;\n    t_tpk text;\n"),
    ("t.currency, t.cash_account_id\n",
     "t.currency, t.cash_account_id, t.tpk\n"),
    ("t_found, t_status, t_currency, t_cash\n          FROM cards c",
     "t_found, t_status, t_currency, t_cash, t_tpk\n          FROM cards c"),
    (f"""            o_outcome := {PIN_TRIES_EXCEEDED};
            EXIT decide;
        ELSIF p_pin_check = 'wrong' THEN
""",
     f"""            o_outcome := {PIN_TRIES_EXCEEDED};
            EXIT decide;
        ELSIF p_pin_check = 'wrong' AND p_tpk IS NOT NULL
                AND p_tpk IS DISTINCT FROM t_tpk THEN
            -- Verified under a key the terminal no longer has: not the
            -- cardholder's try to count. Nothing is written or recorded.
            o_outcome := {KEY_STALE};
            RETURN;
        ELSIF p_pin_check = 'wrong' THEN
"""),
)


def _function_0006() -> str:
    sql: str = revision_module("0006_one_authorize_call.py").merged_function_sql()
    return sql


def function_sql() -> str:
    """0006's ledger_authorize taking the TPK the switch verified a wrong PIN under."""
    return edited_function(_function_0006(), _EDITS, "0006")


def upgrade() -> None:
    # A new argument list is a new function: drop the old one so that an
    # 18-argument call resolves, without ambiguity, to this one's default.
    op.execute(f"DROP FUNCTION ledger_authorize({_ARGS_0006})")
    op.execute(function_sql())


def downgrade() -> None:
    op.execute(f"DROP FUNCTION ledger_authorize({ARGS})")
    op.execute(_function_0006())
