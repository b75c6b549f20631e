"""Tombstones for reversals that name their original only by terminal + RRN.

Revision ID: 0005
Revises: 0004

A reversal whose field 90 is absent or zero-filled finds its original by
terminal + RRN. When there is no such original yet (the ATM timed out before
the request reached us), 0002's ledger_reverse left no tombstone, so a late
original with that RRN would still be approved and post money the ATM never
dispensed. This revision keeps both functions' bodies and wraps them:

- ledger_reverse: after an ORIGINAL_NOT_FOUND for a reversal that carried no
  original key, record a tombstone for (terminal, RRN) in rrn_tombstones, a
  table of its own: the probe's SERIALIZABLE read lock then sits on a rarely
  written index instead of the busy authorizations(terminal_id, rrn) one,
  where it turned concurrent authorizations at one terminal into pivots.
- ledger_authorize: a request whose terminal + RRN has a tombstone from the
  last two days is declined LATE_ORIGINAL (RRNs are unique per terminal over
  far longer than that; the window keeps a recycled RRN from ever matching).

The wrappers cost one extra PL/pgSQL call and one probe of a small index.
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the enum values this revision uses.
LATE_ORIGINAL = 20
ORIGINAL_NOT_FOUND = 190
TOMBSTONE_WINDOW = "2 days"

_AUTHORIZE_ARGS = (
    "smallint, text, bytea, bigint, text, text, text, bigint, text, bigint, text, text, "
    "integer, text, text, text, date, timestamptz"
)
_REVERSE_ARGS = "text, bytea, text, text, text, bigint, boolean"

_OUTS = """
    OUT o_outcome smallint, OUT o_replayed boolean, OUT o_approval_code text,
    OUT o_account_type text, OUT o_currency text, OUT o_ledger_balance bigint,
    OUT o_available_balance bigint, OUT o_auth_id bigint, OUT o_suspense_amount bigint,
    OUT o_account_side text"""

_OUT_NAMES = ("o_outcome, o_replayed, o_approval_code, o_account_type, o_currency, "
              "o_ledger_balance, o_available_balance, o_auth_id, o_suspense_amount, "
              "o_account_side")

_AUTHORIZE = """
CREATE FUNCTION ledger_authorize(
    p_kind smallint, p_key text, p_digest bytea, p_card_id bigint, p_terminal_id text,
    p_from_type text, p_to_type text, p_amount bigint, p_currency text, p_fee bigint,
    p_rrn text, p_pin_check text, p_pin_tries_max integer,
    p_orig_key text, p_orig_terminal text, p_orig_rrn text,
    p_business_date date, p_hold_expires_at timestamptz,{OUTS})
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    IF p_rrn IS NOT NULL AND EXISTS (
            SELECT 1 FROM rrn_tombstones
             WHERE terminal_id = p_terminal_id AND rrn = p_rrn
               AND created_at > now() - interval '{TOMBSTONE_WINDOW}') THEN
        o_outcome := {LATE_ORIGINAL};
        o_replayed := false;
        o_suspense_amount := 0;
        RETURN;
    END IF;
    SELECT * INTO {OUT_NAMES}
      FROM ledger_authorize_body(p_kind, p_key, p_digest, p_card_id, p_terminal_id,
           p_from_type, p_to_type, p_amount, p_currency, p_fee, p_rrn, p_pin_check,
           p_pin_tries_max, p_orig_key, p_orig_terminal, p_orig_rrn, p_business_date,
           p_hold_expires_at);
END
$fn$;
"""

_REVERSE = """
CREATE FUNCTION ledger_reverse(
    p_key text, p_digest bytea, p_orig_key text, p_orig_terminal text, p_orig_rrn text,
    p_dispensed bigint, p_is_advice boolean,{OUTS})
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    SELECT * INTO {OUT_NAMES}
      FROM ledger_reverse_body(p_key, p_digest, p_orig_key, p_orig_terminal, p_orig_rrn,
                               p_dispensed, p_is_advice);
    IF o_outcome = {ORIGINAL_NOT_FOUND} AND NOT o_replayed AND p_orig_key IS NULL
       AND p_orig_terminal IS NOT NULL AND p_orig_rrn IS NOT NULL THEN
        INSERT INTO rrn_tombstones (terminal_id, rrn) VALUES (p_orig_terminal, p_orig_rrn)
        ON CONFLICT (terminal_id, rrn) DO UPDATE SET created_at = now();
    END IF;
END
$fn$;
"""


def _sql(template: str) -> str:
    """Fill the {NAME} placeholders of a function body with this module's constants."""
    values = {"OUTS": _OUTS, "OUT_NAMES": _OUT_NAMES, "LATE_ORIGINAL": LATE_ORIGINAL,
              "ORIGINAL_NOT_FOUND": ORIGINAL_NOT_FOUND, "TOMBSTONE_WINDOW": TOMBSTONE_WINDOW}
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    assert "{" not in template, "every placeholder is filled"
    return template


def upgrade() -> None:
    op.execute("""
        CREATE TABLE rrn_tombstones (
            terminal_id text NOT NULL,
            rrn text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_rrn_tombstones PRIMARY KEY (terminal_id, rrn))""")
    op.execute(f"ALTER FUNCTION ledger_authorize({_AUTHORIZE_ARGS}) "
               "RENAME TO ledger_authorize_body")
    op.execute(_sql(_AUTHORIZE))
    op.execute(f"ALTER FUNCTION ledger_reverse({_REVERSE_ARGS}) RENAME TO ledger_reverse_body")
    op.execute(_sql(_REVERSE))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION ledger_authorize({_AUTHORIZE_ARGS})")
    op.execute(f"ALTER FUNCTION ledger_authorize_body({_AUTHORIZE_ARGS}) "
               "RENAME TO ledger_authorize")
    op.execute(f"DROP FUNCTION ledger_reverse({_REVERSE_ARGS})")
    op.execute(f"ALTER FUNCTION ledger_reverse_body({_REVERSE_ARGS}) RENAME TO ledger_reverse")
    op.execute("DROP TABLE rrn_tombstones")
