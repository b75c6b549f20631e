"""Tables of the ledger (generated from ledger.schema, then reviewed).

Revision ID: 0001
Revises:
Create Date: 2026-11-24 03:21:42.399203
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column("hot", sa.Boolean(), nullable=False),
        sa.Column("overdraft_limit", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("posted_debits", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("posted_credits", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending_debits", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending_credits", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("currency ~ '^[0-9]{3}$'", name=op.f("ck_accounts_currency")),
        sa.CheckConstraint(
            "kind IN ('checking', 'savings', 'credit', 'atm_cash', 'settlement', "
            "'fee_income', 'suspense')",
            name=op.f("ck_accounts_kind"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'frozen', 'closed')", name=op.f("ck_accounts_status")
        ),
        sa.CheckConstraint("overdraft_limit >= 0", name=op.f("ck_accounts_overdraft")),
        sa.CheckConstraint(
            "posted_debits >= 0 AND posted_credits >= 0 AND pending_debits >= 0 "
            "AND pending_credits >= 0",
            name=op.f("ck_accounts_totals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_accounts_code")),
        postgresql_with={"fillfactor": 50},
    )
    op.create_table(
        "authorizations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=True),
        sa.Column("card_id", sa.BigInteger(), nullable=True),
        sa.Column("terminal_id", sa.Text(), nullable=True),
        sa.Column("rrn", sa.Text(), nullable=True),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("to_account_id", sa.BigInteger(), nullable=True),
        sa.Column("counter_account_id", sa.BigInteger(), nullable=True),
        sa.Column("account_type", sa.Text(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("fee", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("suspense_amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("account_side", sa.Text(), nullable=True),
        sa.Column("approval_code", sa.Text(), nullable=True),
        sa.Column("ledger_balance", sa.BigInteger(), nullable=True),
        sa.Column("available_balance", sa.BigInteger(), nullable=True),
        sa.Column("journal_id", sa.BigInteger(), nullable=True),
        sa.Column("original_auth_id", sa.BigInteger(), nullable=True),
        sa.Column("business_date", sa.Date(), nullable=True),
        sa.Column("reversal_id", sa.BigInteger(), nullable=True),
        sa.Column("reversed_amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "amount >= 0 AND fee >= 0 AND suspense_amount >= 0 AND reversed_amount >= 0",
            name=op.f("ck_authorizations_amounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authorizations")),
        sa.UniqueConstraint("key", name=op.f("uq_authorizations_key")),
        postgresql_with={"fillfactor": 90},
    )
    op.create_index(
        op.f("ix_authorizations_terminal_id_rrn"),
        "authorizations",
        ["terminal_id", "rrn"],
        unique=False,
    )
    op.create_table(
        "cards",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("pan_index", sa.LargeBinary(), nullable=False),
        sa.Column("pan_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("expiry", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("pin_method", sa.Text(), nullable=False),
        sa.Column("pvv", sa.Text(), nullable=True),
        sa.Column("pvki", sa.Text(), nullable=True),
        sa.Column("pin_offset", sa.Text(), nullable=True),
        sa.Column("pin_tries", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("txn_amount_max", sa.BigInteger(), nullable=True),
        sa.Column("daily_amount_max", sa.BigInteger(), nullable=True),
        sa.Column("daily_count_max", sa.Integer(), nullable=True),
        sa.Column("usage_date", sa.Date(), nullable=True),
        sa.Column("usage_amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("usage_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("expiry ~ '^[0-9]{2}(0[1-9]|1[0-2])$'", name=op.f("ck_cards_expiry")),
        sa.CheckConstraint("pin_method IN ('pvv', 'ibm3624')", name=op.f("ck_cards_pin_method")),
        sa.CheckConstraint(
            "status IN ('active', 'blocked', 'lost', 'stolen', 'expired', 'closed')",
            name=op.f("ck_cards_status"),
        ),
        sa.CheckConstraint("pin_tries >= 0", name=op.f("ck_cards_pin_tries")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cards")),
        sa.UniqueConstraint("pan_index", name=op.f("uq_cards_pan_index")),
        postgresql_with={"fillfactor": 50},
    )
    op.create_table(
        "holds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("auth_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('open', 'completed', 'voided', 'expired')", name=op.f("ck_holds_state")
        ),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= amount", name=op.f("ck_holds_remaining")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
        sa.UniqueConstraint("auth_id", name=op.f("uq_holds_auth_id")),
    )
    op.create_index(
        "ix_holds_open_expiry",
        "holds",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("state = 'open'"),
    )
    op.create_table(
        "hot_pending",
        sa.Column("journal_id", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.SmallInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("journal_id", "line", name=op.f("pk_hot_pending")),
    )
    op.create_table(
        "journals",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("auth_id", sa.BigInteger(), nullable=True),
        sa.Column("reversal_id", sa.BigInteger(), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('authorization', 'reversal', 'funding')", name=op.f("ck_journals_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journals")),
    )
    op.create_table(
        "postings",
        sa.Column("journal_id", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.SmallInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_postings_nonzero")),
        sa.PrimaryKeyConstraint("journal_id", "line", name=op.f("pk_postings")),
    )
    op.create_table(
        "reversals",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=True),
        sa.Column("original_key", sa.Text(), nullable=True),
        sa.Column("original_auth_id", sa.BigInteger(), nullable=True),
        sa.Column("is_advice", sa.Boolean(), nullable=False),
        sa.Column("amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("journal_id", sa.BigInteger(), nullable=True),
        sa.Column("account_type", sa.Text(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("ledger_balance", sa.BigInteger(), nullable=True),
        sa.Column("available_balance", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_reversals_amount")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reversals")),
        sa.UniqueConstraint("key", name=op.f("uq_reversals_key")),
    )
    op.create_index(
        op.f("ix_reversals_original_auth_id"), "reversals", ["original_auth_id"], unique=False
    )
    op.create_table(
        "card_accounts",
        sa.Column("card_id", sa.BigInteger(), nullable=False),
        sa.Column("account_type", sa.Text(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("is_default", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.CheckConstraint(
            "account_type IN ('10', '20', '30')", name=op.f("ck_card_accounts_account_type")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_card_accounts_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["card_id"], ["cards.id"], name=op.f("fk_card_accounts_card_id_cards")
        ),
        sa.PrimaryKeyConstraint("card_id", "account_type", name=op.f("pk_card_accounts")),
    )
    op.create_table(
        "terminals",
        sa.Column("terminal_id", sa.Text(), nullable=False),
        sa.Column("acquirer_id", sa.Text(), nullable=False),
        sa.Column("location", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("cash_account_id", sa.BigInteger(), nullable=False),
        sa.Column("tpk", sa.Text(), nullable=True),
        sa.Column("tmk", sa.Text(), nullable=True),
        sa.Column("tak", sa.Text(), nullable=True),
        sa.Column(
            "pin_block_format", sa.SmallInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("sign_on_required", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("mac_required", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("profile", sa.Text(), server_default=sa.text("'binary'"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('active', 'inactive', 'blocked')", name=op.f("ck_terminals_status")
        ),
        sa.ForeignKeyConstraint(
            ["cash_account_id"], ["accounts.id"], name=op.f("fk_terminals_cash_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("terminal_id", name=op.f("pk_terminals")),
    )


def downgrade() -> None:
    op.drop_table("terminals")
    op.drop_table("card_accounts")
    op.drop_index(op.f("ix_reversals_original_auth_id"), table_name="reversals")
    op.drop_table("reversals")
    op.drop_table("postings")
    op.drop_table("journals")
    op.drop_table("hot_pending")
    op.drop_index(
        "ix_holds_open_expiry", table_name="holds", postgresql_where=sa.text("state = 'open'")
    )
    op.drop_table("holds")
    op.drop_table("cards")
    op.drop_index(op.f("ix_authorizations_terminal_id_rrn"), table_name="authorizations")
    op.drop_table("authorizations")
    op.drop_table("accounts")
