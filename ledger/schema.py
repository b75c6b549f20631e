"""The ledger schema, in SQLAlchemy Core: the source of truth the migrations follow.

Design notes (the reasons are measurements, see ARCHITECTURE.md):

- Money columns are ``bigint`` minor units. Postings are signed: debit > 0,
  credit < 0; each journal's postings sum to zero per currency.
- ``postings``, ``journals``, ``authorizations``, ``reversals``, ``holds``
  and ``hot_pending`` carry no foreign keys: a foreign key into a
  sequence-ordered key makes every insert predicate-lock the same index page
  under SERIALIZABLE. The PL/pgSQL functions enforce those links and the
  verifier checks them.
- Rows updated in the hot path (``cards``, ``accounts``) have a low fill
  factor so updates stay HOT (no new index entry, hence no index-page
  conflicts between unrelated cards).
- Value rules of the tables the hot path writes are domains, not CHECK
  constraints: PostgreSQL re-parses and re-compiles every CHECK of a table for
  each statement writing it (14% of its CPU in the benchmark), while a domain's
  rule is compiled once per session and checked only when its column is
  written (migration 0009). Cross-column rules stay CHECKs.
- Hot accounts (ATM cash, settlement, fee income, suspense) are never
  updated in the hot path: their postings are also queued in ``hot_pending``
  and folded into the totals by ``Ledger.fold_hot_accounts()``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import DOMAIN

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_NOW = text("now()")
_ZERO = text("0")

ACCOUNT_KINDS = ("checking", "savings", "credit", "atm_cash", "settlement", "fee_income",
                 "suspense")
HOT_ACCOUNT_KINDS = ("atm_cash", "settlement", "fee_income", "suspense")

NONNEG_AMOUNT = DOMAIN("nonneg_amount", BigInteger, check="VALUE >= 0")
NONZERO_AMOUNT = DOMAIN("nonzero_amount", BigInteger, check="VALUE <> 0")
NONNEG_COUNT = DOMAIN("nonneg_count", Integer, check="VALUE >= 0")
CURRENCY_CODE = DOMAIN("currency_code", Text, check="VALUE ~ '^[0-9]{3}$'")
ACCOUNT_KIND = DOMAIN("account_kind", Text, check=f"VALUE IN {ACCOUNT_KINDS!r}")
ACCOUNT_STATUS = DOMAIN("account_status", Text, check="VALUE IN ('active', 'frozen', 'closed')")
CARD_STATUS = DOMAIN("card_status", Text, check="VALUE IN ('active', 'blocked', 'lost', "
                                                "'stolen', 'expired', 'closed')")
CARD_PIN_METHOD = DOMAIN("card_pin_method", Text, check="VALUE IN ('pvv', 'ibm3624')")
CARD_EXPIRY = DOMAIN("card_expiry", Text, check="VALUE ~ '^[0-9]{2}(0[1-9]|1[0-2])$'")
JOURNAL_KIND = DOMAIN("journal_kind", Text,
                      check="VALUE IN ('authorization', 'reversal', 'funding')")

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("code", Text, nullable=False, unique=True),
    Column("kind", ACCOUNT_KIND, nullable=False),
    Column("currency", CURRENCY_CODE, nullable=False),
    Column("status", ACCOUNT_STATUS, nullable=False, server_default=text("'active'")),
    Column("hot", Boolean, nullable=False),
    Column("overdraft_limit", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("posted_debits", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("posted_credits", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("pending_debits", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("pending_credits", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_NOW),
    postgresql_with={"fillfactor": 30},   # see migration 0003
)

cards = Table(
    "cards",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("pan_index", LargeBinary, nullable=False, unique=True),   # HMAC-SHA256
    Column("pan_sealed", LargeBinary, nullable=False),               # AES-GCM nonce||ct
    Column("expiry", CARD_EXPIRY, nullable=False),
    Column("status", CARD_STATUS, nullable=False),
    Column("pin_method", CARD_PIN_METHOD, nullable=False),
    Column("pvv", Text),
    Column("pvki", Text),
    Column("pin_offset", Text),
    Column("pin_tries", NONNEG_COUNT, nullable=False, server_default=_ZERO),
    Column("txn_amount_max", BigInteger),
    Column("daily_amount_max", BigInteger),
    Column("daily_count_max", Integer),
    Column("usage_date", Date),
    Column("usage_amount", BigInteger, nullable=False, server_default=_ZERO),
    Column("usage_count", Integer, nullable=False, server_default=_ZERO),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_NOW),
    postgresql_with={"fillfactor": 20},   # see migration 0003
)

card_accounts = Table(
    "card_accounts",
    metadata,
    # Foreign keys are fine here: these tables change only when provisioning.
    Column("card_id", BigInteger, ForeignKey("cards.id"), nullable=False),
    Column("account_type", Text, nullable=False),
    Column("account_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    PrimaryKeyConstraint("card_id", "account_type"),
    CheckConstraint("account_type IN ('10', '20', '30')", name="account_type"),
)

terminals = Table(
    "terminals",
    metadata,
    Column("terminal_id", Text, primary_key=True),
    Column("acquirer_id", Text, nullable=False),
    Column("location", Text, nullable=False, server_default=text("''")),
    Column("status", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("cash_account_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("tpk", Text),
    Column("tmk", Text),
    Column("tak", Text),
    Column("pin_block_format", SmallInteger, nullable=False, server_default=_ZERO),
    Column("sign_on_required", Boolean, nullable=False, server_default=text("true")),
    Column("mac_required", Boolean, nullable=False, server_default=text("false")),
    Column("profile", Text, nullable=False, server_default=text("'binary'")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=_NOW),
    CheckConstraint("status IN ('active', 'inactive', 'blocked')", name="status"),
)

authorizations = Table(
    "authorizations",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    Column("kind", SmallInteger, nullable=False),            # OpKind; 0 = tombstone
    Column("digest", LargeBinary),
    Column("card_id", BigInteger),
    Column("terminal_id", Text),
    Column("rrn", Text),
    Column("account_id", BigInteger),                        # from-account
    Column("to_account_id", BigInteger),                     # transfer/deposit target
    Column("counter_account_id", BigInteger),                # ATM cash
    Column("account_type", Text),
    Column("currency", Text),
    Column("amount", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("fee", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("suspense_amount", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("outcome", SmallInteger, nullable=False),
    Column("account_side", Text),
    Column("approval_code", Text),
    Column("ledger_balance", BigInteger),
    Column("available_balance", BigInteger),
    Column("journal_id", BigInteger),
    Column("original_auth_id", BigInteger),                  # completion → its hold
    Column("business_date", Date),
    Column("reversal_id", BigInteger),
    Column("reversed_amount", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_NOW),
    Index(None, "terminal_id", "rrn"),
    postgresql_with={"fillfactor": 90},
)

reversals = Table(
    "reversals",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    Column("digest", LargeBinary),
    Column("original_key", Text),
    Column("original_auth_id", BigInteger),
    Column("is_advice", Boolean, nullable=False),
    Column("amount", NONNEG_AMOUNT, nullable=False, server_default=_ZERO),   # given back
    Column("outcome", SmallInteger, nullable=False),
    Column("journal_id", BigInteger),
    Column("account_type", Text),
    Column("currency", Text),
    Column("ledger_balance", BigInteger),
    Column("available_balance", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_NOW),
    Index(None, "original_auth_id"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("auth_id", BigInteger, nullable=False, unique=True),
    Column("account_id", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True)),
    Index("ix_holds_open_expiry", "expires_at", postgresql_where=text("state = 'open'")),
    CheckConstraint("state IN ('open', 'completed', 'voided', 'expired')", name="state"),
    CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining"),
)

journals = Table(
    "journals",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("kind", JOURNAL_KIND, nullable=False),
    Column("auth_id", BigInteger),
    Column("reversal_id", BigInteger),
    Column("memo", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_NOW),
)

postings = Table(
    "postings",
    metadata,
    Column("journal_id", BigInteger, nullable=False),
    Column("line", SmallInteger, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("amount", NONZERO_AMOUNT, nullable=False),  # debit > 0, credit < 0
    Column("currency", Text, nullable=False),
    PrimaryKeyConstraint("journal_id", "line"),
)

hot_pending = Table(
    "hot_pending",
    metadata,
    Column("journal_id", BigInteger, nullable=False),
    Column("line", SmallInteger, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    PrimaryKeyConstraint("journal_id", "line"),
)

# Reversals that named their original only by terminal + RRN and found none
# (migration 0005). A table of its own, rarely written: the authorization
# function's probe takes its SERIALIZABLE read lock here, not on the busy
# authorizations(terminal_id, rrn) index, where it made concurrent
# authorizations at one terminal fail as pivots.
rrn_tombstones = Table(
    "rrn_tombstones",
    metadata,
    Column("terminal_id", Text, nullable=False),
    Column("rrn", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=_NOW),
    PrimaryKeyConstraint("terminal_id", "rrn"),
)
