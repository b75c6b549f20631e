"""Double-entry ledger on PostgreSQL (SERIALIZABLE, one round trip per message).

Exceptions: everything raised on purpose derives from
:class:`ledger.errors.LedgerError`; asyncpg errors never leave this package.
"""
