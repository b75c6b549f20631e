"""The background jobs' statements without joins, so no statistics can make them quadratic.

Revision ID: 0013
Revises: 0012

``ledger_fold_hot`` (0002) picked queued hot postings in a CTE and deleted them
with ``DELETE FROM hot_pending q USING picked``: a join whose plan PostgreSQL
chose from hot_pending's statistics. Autovacuum analyzes that table often, and
when an analyze caught the queue nearly empty the planner joined the table's
scan to a scan of ``picked`` in a nested loop: every queued row compared with
every picked row. Measured on the 2-core machine (closed loop, 32 ATMs, about
2,000 queued postings a second): in the round after such an analyze a fold
took 1.02 s on average (one 1.83 s) instead of 5-14 ms, PostgreSQL's CPU per authorization doubled
(0.22 -> 0.44 ms) and throughput fell by a quarter; the queue grew while the
fold was slow, which made the next fold slower still.
``ledger_expire_holds`` had the same shape (``UPDATE holds h ... FROM picked``).

Here neither job joins anything:

- the fold locks up to ``p_limit`` queued rows, oldest journal first (the
  primary key's order, so a backlog drains first in, first out), and deletes
  exactly those by their row addresses (``ctid = ANY``, a TID scan: the rows
  are locked by this statement, and hot_pending rows are never updated, so an
  address cannot move under it);
- the expiry locks up to ``p_limit`` expired open holds, oldest expiry first,
  and closes them by primary key;
- both then update each touched account by primary key, one statement per
  account, in account order (two jobs running at once lock accounts in the
  same order, so they cannot deadlock), and fail rather than drop an amount
  whose account row is missing (0002's statement counted such rows out and
  deleted them all the same).

Both run with ``enable_seqscan`` off: the only other plan for a ``ctid = ANY``
or ``id = ANY`` of a parameter is a sequential scan testing every row against
the whole array, quadratic again. Otherwise behaviour is 0002's (the order rows
are taken in and the refusal of a missing account are new); the return value is
the number of rows folded or holds released.
"""

from __future__ import annotations

from alembic import op

from ledger.migrations import revision_module

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None

# Both jobs: pick and change rows without a join, then each touched account by key, in
# account order; ``r.n`` is how many rows an account's group holds.
_JOB = """
CREATE OR REPLACE FUNCTION {name}({args}) RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
AS $fn$
DECLARE
    v_total integer := 0;
    r record;
BEGIN
    FOR r IN
{groups}
    LOOP
{per_group}
        UPDATE accounts SET {account_change}
         WHERE id = r.account_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION '{missing} for an account that does not exist'
                USING ERRCODE = '23503';
        END IF;
        v_total := v_total + r.n;
    END LOOP;
    RETURN v_total;
END
$fn$
"""


def _job(**parts: str) -> str:
    text = _JOB
    for name, value in parts.items():
        text = text.replace("{" + name + "}", value)
    assert "{" not in text, "unfilled part of a job's function"
    return text


FOLD = _job(
    name="ledger_fold_hot", args="p_limit integer",
    groups="""        WITH moved AS (
            DELETE FROM hot_pending
             WHERE ctid = ANY (ARRAY(
                    SELECT ctid FROM hot_pending ORDER BY journal_id, line
                     LIMIT p_limit FOR UPDATE SKIP LOCKED))
            RETURNING account_id, amount
        )
        SELECT account_id, sum(greatest(amount, 0)) AS debits,
               sum(greatest(-amount, 0)) AS credits, count(*)::integer AS n
          FROM moved GROUP BY account_id ORDER BY account_id""",
    per_group="",
    account_change="""posted_debits = posted_debits + r.debits,
                            posted_credits = posted_credits + r.credits""",
    missing="hot postings queued")

EXPIRE = _job(
    name="ledger_expire_holds", args="p_now timestamptz, p_limit integer",
    groups="""        SELECT account_id, sum(remaining) AS released, count(*)::integer AS n,
               array_agg(id) AS ids
          FROM (SELECT id, account_id, remaining FROM holds
                 WHERE state = 'open' AND expires_at < p_now
                 ORDER BY expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED) AS picked
         GROUP BY account_id ORDER BY account_id""",
    per_group="""        UPDATE holds SET state = 'expired', remaining = 0, closed_at = p_now
         WHERE id = ANY (r.ids);""",
    account_change="pending_debits = pending_debits - r.released",
    missing="open holds")


def upgrade() -> None:
    # Same names and signatures: CREATE OR REPLACE keeps every grant and caller.
    op.execute(FOLD)
    op.execute(EXPIRE)


def downgrade() -> None:
    # 0002's functions were LANGUAGE sql: a language change needs DROP + CREATE.
    base = revision_module("0002_functions.py")
    op.execute("DROP FUNCTION ledger_fold_hot(integer)")
    op.execute("DROP FUNCTION ledger_expire_holds(timestamptz, integer)")
    op.execute(base._render(base._FOLD))
    op.execute(base._render(base._EXPIRE))
