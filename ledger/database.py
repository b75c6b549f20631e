"""Where the ledger's database is: a configured DSN, else an embedded server.

Precedence: the ``ATM_SWITCH_DATABASE_URL`` environment variable, then the
``dsn`` argument (the config file's value), then an embedded PostgreSQL in
``data_dir`` (started here; the caller stops it), whose ``atm_switch``
database is created on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

from ledger.embedded import EmbeddedPostgres

DATABASE_URL_ENV = "ATM_SWITCH_DATABASE_URL"
DEFAULT_DATA_DIR = Path(".state") / "pg"
EMBEDDED_DATABASE = "atm_switch"


def resolve_dsn(dsn: str | None, data_dir: Path | None = None
                ) -> tuple[str, EmbeddedPostgres | None]:
    """Return ``(dsn, embedded)``; ``embedded`` is the started server, or None.

    Raises ledger.errors.EmbeddedServerError when the embedded server cannot start.
    """
    from_env = os.environ.get(DATABASE_URL_ENV, "").strip()
    if from_env:
        return from_env, None
    if dsn:
        return dsn, None
    server = EmbeddedPostgres(data_dir if data_dir is not None else DEFAULT_DATA_DIR)
    server.start()
    server.ensure_database(EMBEDDED_DATABASE)
    return server.dsn_for(EMBEDDED_DATABASE), server
