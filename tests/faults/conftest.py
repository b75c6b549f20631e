"""Fixtures of the fault suite.

Tests that crash PostgreSQL get a server of their own (`dedicated_pg`), so the
session's shared server (and every other test) is never touched. Tests that
only hurt the switch use a fresh database on the shared server.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.embedded import EmbeddedPostgres
from ledger.migrations import upgrade
from switch.atm import AtmClient, AtmConfig
from tests.conftest import temporary_server
from tests.e2e.harness import ACQUIRER, TPK, SwitchProcess, run_cli, write_provisioning


@pytest.fixture(scope="module")
def dedicated_pg() -> Iterator[EmbeddedPostgres]:
    with temporary_server("atm-switch-faults-pg-") as server:
        yield server


def migrated_database(server: EmbeddedPostgres, name: str) -> str:
    server.ensure_database(name)
    dsn = server.dsn_for(name)
    upgrade(dsn)
    return dsn


def provision(dsn: str, workdir: Path, terminals: list[dict[str, Any]],
              cards: list[dict[str, Any]], env: dict[str, str] | None = None) -> None:
    path = write_provisioning(workdir / "provision.json", terminals, cards)
    result = run_cli(["provision", str(path)], dsn, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


# Each client takes its own block of STANs: the idempotency key is acquirer +
# terminal + STAN + transmission time, so two clients of one terminal starting
# at the same STAN in the same second would be taken for repeats of each other.
_stan_blocks = itertools.count(1)
STAN_BLOCK = 5_000


def atm(terminal_id: str, **extra: object) -> AtmClient:
    config = AtmConfig(terminal_id=terminal_id, acquirer_id=ACQUIRER, tpk_hex=TPK)
    for key, value in extra.items():
        setattr(config, key, value)
    return AtmClient(config, stan_start=(next(_stan_blocks) * STAN_BLOCK) % 990_000 + 1)


def rss_kib(proc: SwitchProcess) -> int:
    """Resident set size of the switch process (VmRSS, KiB)."""
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")
