"""The command line as users and scripts meet it: exit codes and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ledger.embedded import EmbeddedPostgres
from ledger.migrations import upgrade
from switch.demo import demo_pan
from tests.conftest import _admin_execute, new_database
from tests.e2e.harness import SwitchProcess, card, free_port, run_cli, terminal, write_provisioning

pytestmark = pytest.mark.e2e


def test_config_error_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nin_flight_max = -1\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "switch.cli", "serve", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "server.in_flight_max" in result.stderr


def test_provisioning_errors_name_the_entry_and_write_nothing(fresh_dsn: str,
                                                              tmp_path: Path) -> None:
    path = write_provisioning(tmp_path / "p.json", [terminal("ATM00001")],
                              [card(1), card(2, pan="4761739001010012")])
    result = run_cli(["provision", str(path)], fresh_dsn)
    assert result.returncode == 1
    assert "cards[1]" in result.stderr
    assert "4761739001010012" not in result.stderr + result.stdout
    verify = run_cli(["ledger", "verify"], fresh_dsn)
    assert verify.returncode == 0
    assert "authorizations 0" in verify.stdout
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    result = run_cli(["provision", str(tmp_path / "broken.json")], fresh_dsn)
    assert result.returncode == 1
    assert "not valid JSON" in result.stderr


def test_provisioning_twice_is_harmless(fresh_dsn: str, tmp_path: Path) -> None:
    path = write_provisioning(tmp_path / "p.json", [terminal("ATM00001")], [card(1)])
    for _ in range(2):
        result = run_cli(["provision", str(path)], fresh_dsn)
        assert result.returncode == 0, result.stderr
    assert "1 terminals and 1 cards" in result.stdout


def test_card_administration(fresh_dsn: str, tmp_path: Path) -> None:
    path = write_provisioning(tmp_path / "p.json", [terminal("ATM00001")], [card(1)])
    assert run_cli(["provision", str(path)], fresh_dsn).returncode == 0
    for action in ("block", "unblock", "lost", "stolen", "unblock", "reset-pin-tries"):
        result = run_cli(["card", action, demo_pan(1)], fresh_dsn)
        assert result.returncode == 0, result.stderr
        assert demo_pan(1) not in result.stdout
    result = run_cli(["card", "limits", demo_pan(1), "--daily-amount-max", "5000"], fresh_dsn)
    assert result.returncode == 0, result.stderr
    unknown = run_cli(["card", "block", "4000000000000002"], fresh_dsn)
    assert unknown.returncode == 1
    assert "unknown card" in unknown.stderr


def test_serve_refuses_an_out_of_date_schema(pg_server: EmbeddedPostgres,
                                             tmp_path: Path) -> None:
    name = f"old_schema_{free_port()}"
    _admin_execute(pg_server.dsn, f"CREATE DATABASE {name}")
    dsn = pg_server.dsn_for(name)
    upgrade(dsn, "0001")
    proc = SwitchProcess(dsn=dsn, workdir=tmp_path)
    with pytest.raises(RuntimeError, match="out of date"):
        proc.start()
    proc.stop()
    assert run_cli(["db", "upgrade"], dsn).returncode == 0
    proc.start()
    proc.stop()


def test_ledger_verify_fails_on_a_corrupted_ledger(pg_server: EmbeddedPostgres,
                                                   template_db: str, tmp_path: Path) -> None:
    import psycopg

    dsn = new_database(pg_server, template_db)
    path = write_provisioning(tmp_path / "p.json", [terminal("ATM00001")], [card(1)])
    assert run_cli(["provision", str(path)], dsn).returncode == 0
    assert run_cli(["ledger", "verify"], dsn).returncode == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET posted_credits = posted_credits + 1 "
                     "WHERE kind = 'checking'")
    result = run_cli(["ledger", "verify"], dsn)
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.strip().startswith("FAIL")]
    assert any("balances" in line for line in failed), result.stdout
