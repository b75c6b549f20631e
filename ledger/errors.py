"""The ledger's exception tree.

Everything the ledger raises on purpose derives from :class:`LedgerError`.
Driver errors (asyncpg, psycopg) are translated at the package boundary and
never leave it; the original is kept as ``__cause__`` for logs.

- :class:`LedgerUnavailable`: the database cannot be reached or the
  connection broke mid-call (the outcome of that call is unknown: use
  ``Ledger.find_result(key)``). The switch answers 91.
- :class:`OutcomeUnknown` (a :class:`LedgerUnavailable`): the statement was
  sent and the connection broke before its answer; call the (idempotent)
  operation again, or ``find_result(key)``, to learn whether it committed.
- :class:`RetriesExhausted`: serialization failures or deadlocks outlasted the
  retry bound. Nothing was committed. The switch answers 91.
- :class:`SchemaOutdated`: the database schema is not at the head revision.
- :class:`ProvisioningError`: a provisioning or admin request is invalid
  (unknown card or terminal, conflicting data).
- :class:`InvalidOperation`: an operation the ledger cannot interpret
  (impossible transmission date, negative amount): nothing was written.
- :class:`EmbeddedServerError`: the embedded PostgreSQL could not be
  initialised, started or stopped.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose."""


class LedgerUnavailable(LedgerError):
    """The database cannot be reached, or the connection was lost mid-call."""


class OutcomeUnknown(LedgerUnavailable):
    """The call reached the database and the connection broke before the answer:
    it may or may not have committed. Every ledger operation is idempotent by its
    key, so calling it again is safe and tells which."""


class RetriesExhausted(LedgerError):
    """Serialization failures/deadlocks persisted past ``retries_max``."""

    def __init__(self, attempts: int, sqlstate: str) -> None:
        super().__init__(f"gave up after {attempts} attempts (last SQLSTATE {sqlstate})")
        self.attempts = attempts
        self.sqlstate = sqlstate

    def __reduce__(self) -> tuple[type[RetriesExhausted], tuple[int, str]]:
        # Crosses process boundaries (the benchmark's worker processes) intact.
        return (RetriesExhausted, (self.attempts, self.sqlstate))


class SchemaOutdated(LedgerError):
    """The database schema is not at the migrations' head revision."""


class ProvisioningError(LedgerError):
    """A provisioning or admin request is invalid or names an unknown object."""


class InvalidOperation(LedgerError):
    """The operation is malformed (e.g. an impossible date); nothing was written."""


class EmbeddedServerError(LedgerError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""
