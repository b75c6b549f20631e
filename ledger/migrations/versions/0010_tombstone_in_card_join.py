"""ledger_authorize probes the RRN tombstones inside its card/account/terminal read.

Revision ID: 0010
Revises: 0009

Profiled under the benchmark (perf, closed loop, 32 ATMs), the tombstone probe
at the top of ledger_authorize (0005/0006: ``IF ... EXISTS (SELECT 1 FROM
rrn_tombstones ...)``) was 4% of PostgreSQL's CPU: a statement of its own, and
in PL/pgSQL every statement pays the executor's start-up and shut-down. The
probe now rides the one read the function makes anyway, as a LEFT JOIN on the
same primary key (the same SERIALIZABLE read lock, on the same rarely written
index); a completion advice, which does not make that read, keeps its probe,
behind a test of the kind alone (PL/pgSQL runs a condition holding a subquery
as a query, with the executor's start-up, even when its other terms are false).

The answer does not change: a request whose terminal + RRN carries a tombstone
of the last two days is LATE_ORIGINAL, decided before anything else (the card
it names exists: the switch found it before calling).

The function also gets ``SET enable_bitmapscan = off`` beside its
``enable_seqscan = off``: every read it makes is of one row by a key, and a
plan made while a table's statistics were stale used a bitmap heap scan there
(3% of PostgreSQL's CPU in that profile).

Built from 0007's function text (not copied), as 0007 was from 0006.
"""

from __future__ import annotations

from alembic import op

from ledger.migrations import edited_function, revision_module

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values this revision uses.
CARD_UNKNOWN = 30
LATE_ORIGINAL = 20
COMPLETION = 6
TOMBSTONE_WINDOW = "2 days"

_EDITS: tuple[tuple[str, str], ...] = (
    ("LANGUAGE plpgsql VOLATILE\nSET enable_seqscan = off\n",
     "LANGUAGE plpgsql VOLATILE\nSET enable_seqscan = off\nSET enable_bitmapscan = off\n"),
    # A condition with a subquery runs as a query whatever its other terms say:
    # the kind is tested on its own first, so other kinds skip the query.
    ("    IF p_rrn IS NOT NULL AND EXISTS (\n",
     "    -- Other kinds probe the tombstones in the card read below.\n"
     f"    IF p_kind <> {COMPLETION} OR p_rrn IS NULL THEN\n"
     "        NULL;\n"
     "    ELSIF EXISTS (\n"),
    ("    t_tpk text;\n",
     "    t_tpk text;\n    v_tombstone boolean;\n"),
    ("t.currency, t.cash_account_id, t.tpk\n",
     "t.currency, t.cash_account_id, t.tpk,\n               rt.rrn IS NOT NULL\n"),
    ("t_found, t_status, t_currency, t_cash, t_tpk\n          FROM cards c",
     "t_found, t_status, t_currency, t_cash, t_tpk, v_tombstone\n          FROM cards c"),
    ("          LEFT JOIN terminals t ON t.terminal_id = p_terminal_id\n"
     "         WHERE c.id = p_card_id;\n",
     "          LEFT JOIN terminals t ON t.terminal_id = p_terminal_id\n"
     "          LEFT JOIN rrn_tombstones rt ON rt.terminal_id = p_terminal_id\n"
     "               AND rt.rrn = p_rrn\n"
     f"               AND rt.created_at > now() - interval '{TOMBSTONE_WINDOW}'\n"
     "         WHERE c.id = p_card_id;\n"),
    (f"        IF NOT FOUND THEN\n            o_outcome := {CARD_UNKNOWN};\n"
     "            EXIT decide;\n        END IF;\n",
     f"        IF NOT FOUND THEN\n            o_outcome := {CARD_UNKNOWN};\n"
     "            EXIT decide;\n        END IF;\n"
     "        IF v_tombstone THEN\n"
     "            -- A late original of a reversal that found nothing: nothing recorded.\n"
     f"            o_outcome := {LATE_ORIGINAL};\n"
     "            RETURN;\n"
     "        END IF;\n"),
)


def _function_0007() -> str:
    sql: str = revision_module("0007_wrong_pin_key_check.py").function_sql()
    return sql


def function_sql() -> str:
    """0007's ledger_authorize with the tombstone probe in its card read."""
    return edited_function(_function_0007(), _EDITS, "0007")


def upgrade() -> None:
    op.execute(function_sql())   # same arguments: CREATE OR REPLACE


def downgrade() -> None:
    op.execute(_function_0007())
