"""A group commit decides wrong PINs set-wise, as plain operations.

Revision ID: 0016
Revises: 0015

Under 0015 a wrong PIN (a withdrawal or balance inquiry whose PIN the switch found
wrong) was one call of ledger_authorize inside its run, after the run's statement.
Each such call reads its card again, writes its authorization row and the card's
PIN tries in statements of their own, and makes the run gather what its calls may
touch (0015's extra query) before the statement. In the benchmark's mix (5% wrong
PINs, 5% reversals) the calls were 16% of the group-commit backend's CPU.

Now a wrong PIN that is otherwise plain (fee-less, a positive withdrawal amount or a
balance inquiry, no original) is plain: the run's statement decides it with the
others, in ledger_authorize's precedence (0007):

- the checks before the PIN's come first as for every plain operation (card unknown,
  late original, card status, expiry, terminal for a withdrawal);
- PIN tries already at the card's maximum: PIN tries exceeded, nothing counted;
- verified under a terminal PIN key other than the terminal's current one (``p_tpk``
  against ``terminals.tpk``): KEY_STALE (105), and nothing is written or recorded,
  so a repeat of the request is decided afresh (no id is drawn, no key claimed);
- otherwise the try counts: the card's PIN tries + 1, PIN tries exceeded if that
  reaches the maximum, else PIN wrong; the authorization row is stored with the
  from-account's balances, as a call stores them.

The run's rules hold it to one call per operation as before: its card is its own in
the run (a plain operation on a card already in the run ends the run), and an
account behind two of the run's plain operations (a joint account) defers both,
since a wrong PIN's answer carries its account's balance.

``tests/ledger/test_set_batch.py`` checks the function against one call per
operation, as for 0012 and 0015.
"""

from __future__ import annotations

from alembic import op

from ledger.migrations import edited_function, revision_module

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None

_EDITS: tuple[tuple[str, str], ...] = (
    # A wrong PIN is no longer a reason to leave the run's statement.
    ("              AND p_pin_check[v_hi + 1] IS DISTINCT FROM 'wrong'\n", ""),
    ("              AND p_pin_check[g] IS DISTINCT FROM 'wrong'\n", ""),
    # The key the PIN was verified under, and the terminal's current one.
    ("                       p_business_date[g] AS business_date\n",
     "                       p_business_date[g] AS business_date, p_tpk[g] AS tpk\n"),
    ("t.currency AS t_currency, t.cash_account_id AS t_cash,",
     "t.currency AS t_currency, t.cash_account_id AS t_cash,\n"
     "                       t.tpk AS t_tpk,"),
    # ledger_authorize's order after the PIN-tries check (0007).
    ("                         WHEN c_tries >= tries_max THEN 100\n",
     """                         WHEN c_tries >= tries_max THEN 100
                         WHEN pin_check = 'wrong' AND tpk IS NOT NULL
                              AND tpk IS DISTINCT FROM t_tpk THEN 105
                         WHEN pin_check = 'wrong'
                              THEN CASE WHEN c_tries + 1 >= tries_max THEN 100
                                        ELSE 110 END
"""),
    ("""                       -- Only an operation that got past the PIN-tries check resets them.
                       coalesce(pin_check = 'ok' AND c_tries > 0
                                AND outcome IN (0, 120, 130, 140, 150, 160, 170, 180),
                                false) AS pin_write,""",
     """                       -- Only an operation that got past the PIN-tries check resets
                       -- them; a wrong PIN that got past it (and was verified under
                       -- the terminal's key) counts one more.
                       coalesce((pin_check = 'ok' AND c_tries > 0
                                 AND outcome IN (0, 120, 130, 140, 150, 160, 170, 180))
                                OR (pin_check = 'wrong'
                                    AND (outcome = 110
                                         OR (outcome = 100 AND c_tries < tries_max))),
                                false) AS pin_write,"""),
    # A stale key's answer: no balances, no id, no row.
    ("CASE WHEN a_id IS NOT NULL AND outcome <> 20\n",
     "CASE WHEN a_id IS NOT NULL AND outcome NOT IN (20, 105)\n"),
    ("CASE WHEN NOT shared AND outcome <> 20\n",
     "CASE WHEN NOT shared AND outcome NOT IN (20, 105)\n"),
    ("SET pin_tries = CASE WHEN w.pin_write THEN 0 ELSE w.c_tries END,",
     "SET pin_tries = CASE WHEN NOT w.pin_write THEN w.c_tries\n"
     "                                        WHEN w.pin_check = 'wrong' THEN w.c_tries + 1\n"
     "                                        ELSE 0 END,"),
)


def _function_0015() -> str:
    sql: str = revision_module("0015_calls_inside_runs.py").function_sql()
    return sql


def function_sql() -> str:
    """0015's ledger_authorize_batch with wrong PINs decided in the run's statement."""
    return edited_function(_function_0015(), _EDITS, "0015")


def upgrade() -> None:
    op.execute(function_sql())


def downgrade() -> None:
    op.execute(_function_0015())
