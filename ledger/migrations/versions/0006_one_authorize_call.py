"""ledger_authorize as one PL/pgSQL call again: the RRN tombstone probe moves inside.

Revision ID: 0006
Revises: 0005

0005 wrapped 0004's function to add the tombstone probe, so every authorization
paid two PL/pgSQL calls. Measured with pg_stat_statements on the 2-core machine
(closed loop, 32 ATMs): the body ran 0.31 ms per withdrawal and the batch
statement 0.35 ms per operation, the difference being the wrapper's call, its
argument and record passing, and the unnest. This revision puts the probe at
the top of 0004's body (taken from 0004 itself, not copied) under the same
name, so the behaviour is 0005's: a request whose terminal + RRN has a
tombstone from the last two days is declined LATE_ORIGINAL before anything
else is read or written. ``ledger_authorize_body`` is left in place, unused,
for the downgrade. Ledger alone (benchmarks.ledger_bench, 32 clients, back to
back): PostgreSQL CPU per withdrawal 327 µs at 0005, 293 µs here; 4,131 against
4,504 withdrawals/s.
"""

from __future__ import annotations

from alembic import op

from ledger.migrations import revision_module

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the values this revision uses (as in 0005).
APPROVED = 0
LATE_ORIGINAL = 20
TOMBSTONE_WINDOW = "2 days"

_AUTHORIZE_ARGS = (
    "smallint, text, bytea, bigint, text, text, text, bigint, text, bigint, text, text, "
    "integer, text, text, text, date, timestamptz"
)

# Where the probe goes: right after the output defaults at the top of 0004's body.
_ANCHOR = f"""BEGIN
    o_outcome := {APPROVED};
    o_replayed := false;
    o_suspense_amount := 0;
"""
_PROBE = """
    IF p_rrn IS NOT NULL AND EXISTS (
            SELECT 1 FROM rrn_tombstones
             WHERE terminal_id = p_terminal_id AND rrn = p_rrn
               AND created_at > now() - interval '{TOMBSTONE_WINDOW}') THEN
        o_outcome := {LATE_ORIGINAL};
        RETURN;
    END IF;
"""


def merged_function_sql() -> str:
    """0004's ledger_authorize with 0005's tombstone probe at its top."""
    lean = revision_module("0004_lean_authorize.py")
    sql: str = lean._render(lean._AUTHORIZE)
    assert sql.count(_ANCHOR) == 1, "0004's body starts with the output defaults"
    probe = (_PROBE.replace("{LATE_ORIGINAL}", str(LATE_ORIGINAL))
             .replace("{TOMBSTONE_WINDOW}", TOMBSTONE_WINDOW))
    return sql.replace(_ANCHOR, _ANCHOR + probe)


def upgrade() -> None:
    op.execute(merged_function_sql())


def downgrade() -> None:
    wrapper = revision_module("0005_rrn_tombstones.py")
    op.execute(f"DROP FUNCTION ledger_authorize({_AUTHORIZE_ARGS})")
    op.execute(wrapper._sql(wrapper._AUTHORIZE))
