"""One real switch process per test module, on its own fresh database."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ledger.embedded import EmbeddedPostgres
from switch.atm import AtmClient, AtmConfig
from tests.conftest import new_database
from tests.e2e.harness import (
    ACQUIRER,
    TAK,
    TPK,
    SwitchProcess,
    card,
    free_port,
    run_cli,
    terminal,
    write_provisioning,
)

TERMINALS = [
    terminal("ATM00001"),
    terminal("ATM00002", sign_on_required=True),
    terminal("ATM00003", tak=TAK, mac_required=True),
    terminal("ATM00004", pin_block_format=4),       # TDES TPK cannot carry format 4: 96
    terminal("ATM00005", pin_block_format=1),
    terminal("ATM00006", status="inactive"),
    terminal("ATM00007", pin_block_format=3),
    terminal("ATM00008"),
]

CARDS = [
    card(1, transaction_limit=200_000, daily_count=50),
    card(2, status="lost"),
    card(3, status="stolen"),
    card(4, status="blocked"),
    card(5, expiry="2001"),
    card(6, balance=1_000),
    card(7, daily_count=2),
    card(8),
    card(9),
    card(10, savings_balance=30_000),
    card(11, pin_method="ibm3624"),
    card(12),
    card(13, transaction_limit=5_000),
    card(14, daily_limit=10_000),
    card(15),
    card(16),
    card(17),
    card(18),
    card(19),
    card(20),
    card(21),
    card(22),
    card(23),
    card(24),
    card(25),
    card(26),
    card(27),
    card(28),
    card(29),
]


def config_text(binary_port: int, tight_port: int) -> str:
    return f"""
[security]
terminal_wrong_pins_max = 6

[[listeners]]
name = "atm"
listen = "127.0.0.1:0"

[[listeners]]
name = "binary"
listen = "127.0.0.1:{binary_port}"
profile = "binary"
length_header = "ascii4"

[[listeners]]
name = "tight"
listen = "127.0.0.1:{tight_port}"
in_flight_max_per_connection = 1
"""


@pytest.fixture(scope="module")
def switch_form() -> str:
    """The form of the switch's compiled modules: "compiled" (as installed) or
    "source" (ATM_SWITCH_PURE_PYTHON=1). A module that overrides this fixture with
    both runs its tests against each (test_flows.py)."""
    return "compiled"


@pytest.fixture(scope="module")
def switch_proc(pg_server: EmbeddedPostgres, template_db: str, switch_form: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchProcess]:
    workdir = tmp_path_factory.mktemp("switch")
    dsn = new_database(pg_server, template_db)
    provisioning = write_provisioning(workdir / "provision.json", TERMINALS, CARDS)
    result = run_cli(["provision", str(provisioning)], dsn)
    assert result.returncode == 0, result.stderr
    ports = {"binary": free_port(), "tight": free_port()}
    proc = SwitchProcess(dsn=dsn, workdir=workdir, ports=ports,
                         config_text=config_text(ports["binary"], ports["tight"]),
                         env={"ATM_SWITCH_PURE_PYTHON": "1"} if switch_form == "source" else {})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


_stan_blocks = itertools.count(1)


def next_stan_start() -> int:
    """A fresh STAN range per client: the idempotency key is acquirer + terminal +
    STAN + transmission time, so two clients of one terminal must not share STANs."""
    return (next(_stan_blocks) * 997) % 900_000 + 1


def atm_config(terminal_id: str = "ATM00001", **extra: object) -> AtmConfig:
    config = AtmConfig(terminal_id=terminal_id, acquirer_id=ACQUIRER, tpk_hex=TPK)
    for key, value in extra.items():
        setattr(config, key, value)
    return config


@pytest.fixture
async def atm(switch_proc: SwitchProcess) -> AsyncIterator[AtmClient]:
    client = AtmClient(atm_config(), stan_start=next_stan_start())
    await client.connect("127.0.0.1", switch_proc.port)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def workdir(switch_proc: SwitchProcess) -> Path:
    return switch_proc.workdir
