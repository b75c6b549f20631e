"""The value checks of the tables the hot path writes become domains.

Revision ID: 0009
Revises: 0008

PostgreSQL prepares a table's CHECK constraints afresh for every statement that
writes to it: each constraint's stored expression is parsed back from text
(``stringToNode``) and compiled, and all of them are evaluated for every row
written, whichever columns the statement sets. A withdrawal writes five such
tables (the card's usage and PIN tries, the account's totals, the
authorization, the journal, its postings). Profiled under the benchmark
(perf, closed loop, 32 ATMs), this was 14% of PostgreSQL's CPU: the largest
single item after executor start-up. Measured alone on the 2-core machine,
an UPDATE of a card row cost 31-34 us with its four CHECKs and 10-16 us with the
same rules as domains (10-16 us with no rule at all); an INSERT with two CHECKs
20-26 us, 8.5 us with domains, 4-6 us with none.

A domain's rule is compiled once per session (PostgreSQL's type cache) and
checked only when a value of that column is written: the hot path's UPDATE of
a card's usage columns no longer checks its status and expiry. The rules
themselves are unchanged. Cross-column rules stay CHECK constraints (holds,
not written by withdrawals).

Upgrading rewrites the converted tables (a column changing to a domain with a
rule is re-checked row by row, under an exclusive lock): on a ledger with a
long history, ``authorizations``, ``journals`` and ``postings`` take minutes;
plan it for a maintenance window.
"""

from __future__ import annotations

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the rules as 0001 wrote them (ledger.schema holds the live ones).
DOMAINS: dict[str, str] = {
    "nonneg_amount": "bigint CHECK (VALUE >= 0)",
    "nonzero_amount": "bigint CHECK (VALUE <> 0)",
    "nonneg_count": "integer CHECK (VALUE >= 0)",
    "currency_code": "text CHECK (VALUE ~ '^[0-9]{3}$')",
    "account_kind": "text CHECK (VALUE IN ('checking', 'savings', 'credit', 'atm_cash', "
                    "'settlement', 'fee_income', 'suspense'))",
    "account_status": "text CHECK (VALUE IN ('active', 'frozen', 'closed'))",
    "card_status": "text CHECK (VALUE IN ('active', 'blocked', 'lost', 'stolen', 'expired', "
                   "'closed'))",
    "card_pin_method": "text CHECK (VALUE IN ('pvv', 'ibm3624'))",
    "card_expiry": "text CHECK (VALUE ~ '^[0-9]{2}(0[1-9]|1[0-2])$')",
    "journal_kind": "text CHECK (VALUE IN ('authorization', 'reversal', 'funding'))",
}

# table -> ({CHECK constraint dropped: its rule, as 0001 wrote it}, {column: domain})
TABLES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "accounts": (
        {"ck_accounts_kind": "kind IN ('checking', 'savings', 'credit', 'atm_cash', "
                             "'settlement', 'fee_income', 'suspense')",
         "ck_accounts_status": "status IN ('active', 'frozen', 'closed')",
         "ck_accounts_currency": "currency ~ '^[0-9]{3}$'",
         "ck_accounts_overdraft": "overdraft_limit >= 0",
         "ck_accounts_totals": "posted_debits >= 0 AND posted_credits >= 0 "
                               "AND pending_debits >= 0 AND pending_credits >= 0"},
        {"kind": "account_kind", "status": "account_status", "currency": "currency_code",
         "overdraft_limit": "nonneg_amount", "posted_debits": "nonneg_amount",
         "posted_credits": "nonneg_amount", "pending_debits": "nonneg_amount",
         "pending_credits": "nonneg_amount"},
    ),
    "cards": (
        {"ck_cards_status": "status IN ('active', 'blocked', 'lost', 'stolen', 'expired', "
                            "'closed')",
         "ck_cards_pin_method": "pin_method IN ('pvv', 'ibm3624')",
         "ck_cards_expiry": "expiry ~ '^[0-9]{2}(0[1-9]|1[0-2])$'",
         "ck_cards_pin_tries": "pin_tries >= 0"},
        {"status": "card_status", "pin_method": "card_pin_method", "expiry": "card_expiry",
         "pin_tries": "nonneg_count"},
    ),
    "authorizations": (
        {"ck_authorizations_amounts": "amount >= 0 AND fee >= 0 AND suspense_amount >= 0 "
                                      "AND reversed_amount >= 0"},
        {"amount": "nonneg_amount", "fee": "nonneg_amount", "suspense_amount": "nonneg_amount",
         "reversed_amount": "nonneg_amount"},
    ),
    "reversals": ({"ck_reversals_amount": "amount >= 0"}, {"amount": "nonneg_amount"}),
    "journals": ({"ck_journals_kind": "kind IN ('authorization', 'reversal', 'funding')"},
                 {"kind": "journal_kind"}),
    "postings": ({"ck_postings_nonzero": "amount <> 0"}, {"amount": "nonzero_amount"}),
}


def upgrade() -> None:
    for name, definition in DOMAINS.items():
        op.execute(f"CREATE DOMAIN {name} AS {definition}")
    for table, (checks, columns) in TABLES.items():
        # One ALTER TABLE per table: one rewrite, whatever the number of columns.
        actions = [f"DROP CONSTRAINT {check}" for check in checks]
        actions += [f"ALTER COLUMN {column} TYPE {domain}" for column, domain in columns.items()]
        op.execute(f"ALTER TABLE {table} " + ", ".join(actions))


def downgrade() -> None:
    for table, (checks, columns) in TABLES.items():
        # Back to the base type (no rewrite), then the CHECKs are added and validated.
        actions = [f"ALTER COLUMN {column} TYPE {DOMAINS[domain].split()[0]}"
                   for column, domain in columns.items()]
        actions += [f"ADD CONSTRAINT {check} CHECK ({rule})" for check, rule in checks.items()]
        op.execute(f"ALTER TABLE {table} " + ", ".join(actions))
    for name in DOMAINS:
        op.execute(f"DROP DOMAIN {name}")
