"""A group commit's other operations no longer split its run of plain ones.

Revision ID: 0015
Revises: 0014

Under 0012 a run of plain operations (fee-less withdrawals and balance inquiries)
ended at the first operation that was not plain: a wrong PIN, a reversal, a hold,
a fee. In the benchmark's mix (5% wrong PINs, 5% reversals) a group commit of 16
then held two or three runs, and each run is one statement of a dozen CTEs whose
start-up and shut-down cost about as much as the calls themselves. Measured on the
2-core machine, one session, 16 withdrawals as one batch: 1.17 ms; with one wrong
PIN at the front 1.25 ms (one run and one call); with it in the middle 1.45 ms
(two runs and one call); with two in the middle 1.65 ms.

Now an operation that is not plain stays inside the run: it is still one call of
ledger_authorize or ledger_reverse, made after the run's statement together with
the run's deferred operations, all in arrival order. A run ends only before a
plain operation whose card or key is already among its plain ones, as before.

Why the answers are still those of one call per operation in arrival order: every
operation the statement decides must commute with every call made after it. The
calls are the other operations and the plain ones the statement defers; plain
operations of one run touch disjoint rows (0012). So before the statement the
function gathers what the run's other operations may read or write:

- cards: their own, and the card of the authorization they refer to (a reversal's
  original, a completion's hold), found as the calls find it: by the original's
  key, or by its terminal and RRN;
- accounts: every account of their own card, and the account(s) of that
  authorization (the from-account and a transfer's to-account);
- keys: their own and the original's (a reversal that finds nothing leaves a
  tombstone under the original's key);
- terminal + RRN of the original (a reversal that finds nothing by key may leave
  an RRN tombstone there; a plain operation with that terminal and RRN reads it).

A plain operation of the run that touches any of these (its card, its account,
its key, its terminal and RRN) is deferred like a shared account's: nothing is
written for it in the statement and it gets its call in its place in the order.
The bank's own accounts (ATM cash, fees, suspense) are only appended to through
their queues and never decide anything, so they are left out.

``tests/ledger/test_set_batch.py`` holds the function to this, as it did 0012.
"""

from __future__ import annotations

from alembic import op

from ledger.migrations import edited_function, revision_module

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def _plain(i: str) -> str:
    """0012's test for a plain operation, for the operation at index ``i``."""
    return (f"p_kind[{i}] IN (1, 2)\n"
            f"              AND p_fee[{i}] = 0\n"
            f"              AND (p_kind[{i}] = 2 OR p_amount[{i}] > 0)\n"
            f"              AND p_pin_check[{i}] IS DISTINCT FROM 'wrong'\n"
            f"              AND p_orig_key[{i}] IS NULL AND p_orig_terminal[{i}] IS NULL\n"
            f"              AND p_orig_rrn[{i}] IS NULL")


_DECLARE = ("    v_deferred integer[];\n    r record;\n",
            """    v_deferred integer[];
    r record;
    v_calls integer[];       -- the run's operations that are not plain
    v_cards bigint[];        -- the cards and keys of its plain ones
    v_keys text[];
    v_plain integer;
    v_x_cards bigint[];      -- what the calls may read or write (see 0015)
    v_x_accounts bigint[];
    v_x_keys text[];
    v_x_refs text[];
""")

# 0012's loop that gathers a run, through the first line of the run's branch.
_RUN_START = (("        v_lo := v_i;\n        v_hi := v_i - 1;\n        WHILE v_hi < v_count\n",
               "            v_deferred := '{}';\n"), """        v_lo := v_i;
        v_hi := v_i - 1;
        v_calls := '{}';
        v_cards := '{}';
        v_keys := '{}';
        v_plain := 0;
        WHILE v_hi < v_count LOOP
            IF {PLAIN_NEXT} THEN
                EXIT WHEN p_card_id[v_hi + 1] = ANY (v_cards) OR p_key[v_hi + 1] = ANY (v_keys);
                v_cards := v_cards || p_card_id[v_hi + 1];
                v_keys := v_keys || p_key[v_hi + 1];
                v_plain := v_plain + 1;
            ELSE
                v_calls := v_calls || (v_hi + 1);
            END IF;
            v_hi := v_hi + 1;
        END LOOP;
        IF v_plain >= 2 THEN
            -- A run: its plain operations in one statement; its other operations and
            -- its deferred plain ones one call each below, in arrival order.
            v_deferred := '{}';
            v_x_cards := '{}';
            v_x_accounts := '{}';
            v_x_keys := '{}';
            v_x_refs := '{}';
            IF cardinality(v_calls) > 0 THEN
                SELECT coalesce(array_agg(DISTINCT t.card_id)
                                FILTER (WHERE t.card_id IS NOT NULL), '{}'),
                       coalesce(array_agg(DISTINCT t.account_id)
                                FILTER (WHERE t.account_id IS NOT NULL), '{}')
                  INTO v_x_cards, v_x_accounts
                  FROM (SELECT p_card_id[c] AS card_id, ca.account_id
                          FROM unnest(v_calls) AS c
                          LEFT JOIN card_accounts ca ON ca.card_id = p_card_id[c]
                        UNION ALL
                        SELECT o.card_id, x.account_id
                          FROM unnest(v_calls) AS c
                          JOIN authorizations o ON o.key = p_orig_key[c]
                          CROSS JOIN LATERAL unnest(ARRAY[o.account_id, o.to_account_id])
                                AS x (account_id)
                        UNION ALL
                        SELECT o.card_id, x.account_id
                          FROM unnest(v_calls) AS c
                          JOIN authorizations o ON o.terminal_id = p_orig_terminal[c]
                               AND o.rrn = p_orig_rrn[c]
                          CROSS JOIN LATERAL unnest(ARRAY[o.account_id, o.to_account_id])
                                AS x (account_id)) AS t;
                v_x_keys := ARRAY(SELECT k FROM unnest(v_calls) AS c,
                                       unnest(ARRAY[p_key[c], p_orig_key[c]]) AS k
                                   WHERE k IS NOT NULL);
                v_x_refs := ARRAY(SELECT p_orig_terminal[c] || '/' || p_orig_rrn[c]
                                    FROM unnest(v_calls) AS c
                                   WHERE p_orig_terminal[c] IS NOT NULL
                                     AND p_orig_rrn[c] IS NOT NULL);
            END IF;
""")

_RUN_ROWS = ("""                  FROM generate_series(v_lo, v_hi) AS g
            ), rd AS (""", """                  FROM generate_series(v_lo, v_hi) AS g
                 WHERE {PLAIN_G}
            ), rd AS (""")

_CONFLICT = ("""                       rt.rrn IS NOT NULL AS tomb
                  FROM a""", """                       rt.rrn IS NOT NULL AS tomb,
                       -- It touches what one of the run's calls may touch: deferred.
                       coalesce(a.card_id = ANY (v_x_cards) OR ac.id = ANY (v_x_accounts)
                                OR a.key = ANY (v_x_keys)
                                OR a.terminal_id || '/' || a.rrn = ANY (v_x_refs),
                                false) AS x_conflict
                  FROM a""")

_SHARED = ("(a_id IS NOT NULL AND count(*) OVER (PARTITION BY a_id) > 1) AS shared",
           "(x_conflict OR (a_id IS NOT NULL AND count(*) OVER (PARTITION BY a_id) > 1))\n"
           "                           AS shared")

_RUN_END = ("""        ELSE
            -- Any other operation, or a plain one alone: one call.
            v_hi := v_lo;
            v_deferred := ARRAY[v_lo];
        END IF;""",
            """            v_deferred := ARRAY(SELECT d FROM unnest(v_deferred || v_calls) AS d
                                ORDER BY d);
        ELSE
            -- Fewer than two plain operations: every operation one call.
            v_deferred := ARRAY(SELECT generate_series(v_lo, v_hi));
        END IF;""")


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(name, value)
    return text


def _function_0012() -> str:
    sql: str = revision_module("0012_set_based_batch.py").function_sql()
    return sql


def _replacing(sql: str) -> str:
    """The function's text as a statement that replaces the one installed."""
    return sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def function_sql() -> str:
    """0012's ledger_authorize_batch with the other operations kept inside the run."""
    plain = {"{PLAIN_NEXT}": _plain("v_hi + 1"), "{PLAIN_G}": _plain("g")}
    edits = [(anchor if isinstance(anchor, tuple) else _fill(anchor, plain),
              _fill(replacement, plain))
             for anchor, replacement in (_DECLARE, _RUN_START, _RUN_ROWS, _CONFLICT, _SHARED,
                                         _RUN_END)]
    return _replacing(edited_function(_function_0012(), edits, "0012"))


def upgrade() -> None:
    op.execute(function_sql())


def downgrade() -> None:
    op.execute(_replacing(_function_0012()))
