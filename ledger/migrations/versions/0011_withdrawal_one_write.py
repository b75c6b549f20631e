"""ledger_authorize claims the key and posts a withdrawal in one statement.

Revision ID: 0011
Revises: 0010

After 0009 and 0010, most of what PostgreSQL spends inside ledger_authorize is
the executor's start-up and shut-down, once per statement. An approved
fee-less withdrawal (70% of the benchmark's mix) made three: the card read,
the INSERT claiming the idempotency key, and 0004's statement of
data-modifying CTEs that posts it. The claim now joins that statement as its
first CTE (``INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id``), and
every write after it takes effect only when the claim returned a row: a
repeat (the key already stored) writes nothing, and is replayed or refused by
the same code as before. Other outcomes and kinds claim the key as before.

Built from 0010's function text (not copied): the claim's INSERT is taken from
it and moved, the posting statement edited in place.
"""

from __future__ import annotations

from alembic import op

from ledger.migrations import edited_function, revision_module

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values this revision uses.
APPROVED = 0
WITHDRAWAL = 1

_CLAIM_START = "    INSERT INTO authorizations (\n"
_CLAIM_END = "    ON CONFLICT (key) DO NOTHING;\n    IF NOT FOUND THEN\n"
_FAST_PATH_TEST = f"    IF o_outcome = {APPROVED} AND p_kind = {WITHDRAWAL} AND p_fee = 0 THEN\n"

# 0004's posting statement, as it stands in 0010's text, and what it becomes.
_POSTING_EDITS: tuple[tuple[str, str], ...] = (
    ("        -- The common case in one statement: usage, balance, journal, postings and\n"
     "        -- the hot account's queue entry (lines as ledger_journal numbers them).\n"
     "        WITH card_usage AS (\n",
     "        -- The common case in one statement: the key claimed and, only if it was,\n"
     "        -- usage, balance, journal, postings and the hot account's queue entry\n"
     "        -- (lines as ledger_journal numbers them).\n"
     "        WITH claim AS (\n"
     "{CLAIM}"
     "            ON CONFLICT (key) DO NOTHING\n"
     "            RETURNING id\n"
     "        ), card_usage AS (\n"),
    ("             WHERE id = p_card_id\n        ), balance AS (\n",
     "             WHERE id = p_card_id AND EXISTS (SELECT FROM claim)\n"
     "        ), balance AS (\n"),
    ("            UPDATE accounts SET posted_debits = posted_debits + p_amount WHERE id = a_id\n",
     "            UPDATE accounts SET posted_debits = posted_debits + p_amount\n"
     "             WHERE id = a_id AND EXISTS (SELECT FROM claim)\n"),
    ("            INSERT INTO journals (id, kind, auth_id) "
     "VALUES (v_journal, 'authorization', v_id)\n",
     "            INSERT INTO journals (id, kind, auth_id)\n"
     "            SELECT v_journal, 'authorization', v_id FROM claim\n"),
    ("            VALUES (v_journal, 1, a_id, p_amount, p_currency),\n"
     "                   (v_journal, 2, t_cash, -p_amount, p_currency)\n"
     "        )\n",
     "            SELECT v_journal, l.line, l.account_id, l.amount, p_currency\n"
     "              FROM claim, (VALUES (1::smallint, a_id, p_amount),\n"
     "                                  (2::smallint, t_cash, -p_amount))\n"
     "                   AS l (line, account_id, amount)\n"
     "        ), queued AS (\n"),
    ("        INSERT INTO hot_pending (journal_id, line, account_id, amount)\n"
     "        VALUES (v_journal, 2, t_cash, -p_amount);\n"
     "        RETURN;\n"
     "    END IF;\n",
     "            INSERT INTO hot_pending (journal_id, line, account_id, amount)\n"
     "            SELECT v_journal, 2, t_cash, -p_amount FROM claim\n"
     "        )\n"
     "        SELECT count(*) > 0 INTO v_claimed FROM claim;\n"
     "    ELSE\n"
     "{CLAIM}"
     "        ON CONFLICT (key) DO NOTHING;\n"
     "        v_claimed := FOUND;\n"
     "    END IF;\n"
     "    IF NOT v_claimed THEN\n"),
)


def _function_0010() -> str:
    sql: str = revision_module("0010_tombstone_in_card_join.py").function_sql()
    return sql


def _indented(text: str, by: str) -> str:
    return "".join(by + line if line.strip() else line for line in text.splitlines(keepends=True))


def function_sql() -> str:
    """0010's ledger_authorize with the withdrawal's claim inside its posting statement."""
    sql = _function_0010()
    start, end = sql.index(_CLAIM_START), sql.index(_CLAIM_END)
    claim = sql[start:end]            # INSERT INTO authorizations (...) VALUES (...)
    fast = sql.index(_FAST_PATH_TEST)
    fast_end = sql.index("    END IF;\n", fast) + len("    END IF;\n")
    assert start < end < fast, "0010: the claim, then its check, then the fast path"
    # The fast path moves up to where the claim was, with the claim as its first CTE;
    # other outcomes and kinds claim the key in its ELSE branch, as before.
    moved = edited_function(sql[fast:fast_end], _POSTING_EDITS, "0010")
    moved = moved.replace("{CLAIM}", _indented(claim, " " * 8), 1)
    moved = moved.replace("{CLAIM}", _indented(claim, " " * 4), 1)
    sql = (sql[:start] + moved + sql[end + len(_CLAIM_END):fast]
           + _FAST_PATH_TEST + "        RETURN;  -- posted with its claim above\n    END IF;\n"
           + sql[fast_end:])
    return edited_function(sql, [("    v_tombstone boolean;\n",
                                  "    v_tombstone boolean;\n    v_claimed boolean;\n")], "0010")


def upgrade() -> None:
    op.execute(function_sql())   # same arguments: CREATE OR REPLACE


def downgrade() -> None:
    op.execute(_function_0010())
