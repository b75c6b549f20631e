"""Small statistics samples for the append-only ledger tables.

Revision ID: 0014
Revises: 0013

``authorizations``, ``journals``, ``postings`` and ``reversals`` only grow. Autovacuum
analyzes a table each time it has grown by a tenth, so while they are young (a new
deployment, every benchmark run) that is about once a minute under load, and each
ANALYZE sorts a sample of 30,000 rows (300 x the default statistics target of 100)
for every column: for ``authorizations`` 0.22-0.40 s of CPU in one go, measured with
``log_autovacuum_min_duration = 0`` on the 2-core machine, where such a burst takes
one of the two cores from the request path and shows as the open loop's slowest
seconds. The request path does not consult these statistics (its functions plan
index lookups with the other methods off, migrations 0006-0013); they steer only
the verifier's whole-table joins and ad-hoc reports, for which counts and distinct
values from 3,000 rows are as good: on a 117,617-row ``authorizations`` the sample
of target 10 gave the same distinct-value estimates for key, card, terminal, RRN and
journal within 3%, and ANALYZE took 28-36 ms against 175-234 ms.

So every column of those four tables gets statistics target 10. A column added to
them later gets the default until a revision sets it too
(``tests/ledger/test_embedded_and_schema.py`` checks every column).
"""

from __future__ import annotations

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None

LOG_TABLES = ("authorizations", "journals", "postings", "reversals")
TARGET = 10

_SET_ALL = """
DO $do$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT a.attrelid::regclass AS tab, a.attname
          FROM pg_attribute a
         WHERE a.attrelid = ANY (ARRAY[{tables}]::regclass[])
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attrelid, a.attnum
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS {target}',
                       c.tab, c.attname);
    END LOOP;
END
$do$
"""


def _sql(target: int) -> str:
    tables = ", ".join(f"'{name}'" for name in LOG_TABLES)
    return _SET_ALL.replace("{tables}", tables).replace("{target}", str(target))


def upgrade() -> None:
    op.execute(_sql(TARGET))


def downgrade() -> None:
    op.execute(_sql(-1))   # -1: back to default_statistics_target
