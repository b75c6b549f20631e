from __future__ import annotations

from pathlib import Path

import pytest

from hsm.errors import PinVerificationDataError
from hsm.keys import KeyAlgorithm, KeyUsage
from switch.config import ConfigError, load_config
from switch.keys import load_secrets


def test_defaults_are_valid() -> None:
    config = load_config(None, environ={})
    assert config.listeners[0].port == 8583
    assert config.metrics_port == 9583
    assert config.database_url is None


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "switch.toml"
    path.write_text(
        """
[database]
pool_size_max = 8
[[listeners]]
name = "atm"
listen = "127.0.0.1:9000"
profile = "binary"
length_header = "ascii4"
[[listeners]]
name = "acq"
listen = "127.0.0.1:9001"
[metrics]
listen = "127.0.0.1:9100"
""",
        encoding="utf-8",
    )
    config = load_config(path, environ={"ATM_SWITCH_DB_POOL_SIZE_MAX": "4"},
                         overrides={"listen": "127.0.0.1:9500"})
    assert config.db_pool_size_max == 4
    assert [lst.name for lst in config.listeners] == ["atm", "acq"]
    assert config.listeners[0].port == 9500
    assert config.listeners[0].profile == "binary"
    assert config.listeners[1].port == 9001
    assert config.metrics_port == 9100


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[database]\nnope = 1\n", "database.nope"),
        ("[[listeners]]\nprofile = 'ebcdic'\n", "profile"),
        ("[server]\nin_flight_max = 0\n", "in_flight_max"),
        ("[database]\nbatch_lane_open_min = -1\n", "batch_lane_open_min"),
        ("[business]\ntimezone = 'Mars/Olympus'\n", "time zone"),
        ("[whatever]\n", "unknown section"),
        ("not toml at all [", "not valid TOML"),
        ("[[listeners]]\nlisten = 'nohost'\n", "HOST:PORT"),
        ("[business]\nunmatched_reversal_code = '05'\n", "unmatched_reversal_code"),
        ("[business]\nissuer_bins = ['47x173']\n", "issuer_bins"),
        ("[security]\ndecimalisation_table = '0123456789ABCDEF'\n", "decimalisation_table"),
        ("[security]\ndecimalisation_table = '012345'\n", "decimalisation_table"),
    ],
)
def test_invalid_settings_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=fragment):
        load_config(path, environ={})


def test_secret_values_are_not_echoed() -> None:
    secret = "zz" * 32
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"ATM_SWITCH_MASTER_KEY": secret})
    assert secret not in str(info.value)
    assert "master_key" in str(info.value)


def test_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "example.toml"
    config = load_config(example, environ={})
    assert config.listeners


def test_unmatched_reversals_are_acknowledged_unless_told_otherwise(tmp_path: Path) -> None:
    assert load_config(None, environ={}).unmatched_reversal_code == "00"
    path = tmp_path / "switch.toml"
    path.write_text("[business]\nunmatched_reversal_code = '25'\n", encoding="utf-8")
    assert load_config(path, environ={}).unmatched_reversal_code == "25"


def test_issuer_bins_from_the_file_or_the_environment(tmp_path: Path) -> None:
    assert load_config(None, environ={}).issuer_bins == ()
    path = tmp_path / "switch.toml"
    path.write_text("[business]\nissuer_bins = ['476173', '41111111']\n", encoding="utf-8")
    assert load_config(path, environ={}).issuer_bins == ("476173", "41111111")


def test_the_issuers_decimalisation_table_reaches_the_hsm(tmp_path: Path) -> None:
    assert load_config(None, environ={}).decimalisation_table == "0123456789012345"
    path = tmp_path / "switch.toml"
    path.write_text("[security]\ndecimalisation_table = '9876543210987654'\n",
                    encoding="utf-8")
    secrets = load_secrets(load_config(path, environ={}))
    standard = load_secrets(load_config(None, environ={}))
    pvk = standard.hsm().import_clear_key(KeyUsage.PVK, KeyAlgorithm.TDES2, "0123456789ABCDEF"
                                          "FEDCBA9876543210")
    # Offsets made under the issuer's table; the standard table is not accepted there.
    mine = secrets.hsm().generate_ibm3624_offset(pvk, "4761739001010010", "1234")
    theirs = standard.hsm().generate_ibm3624_offset(pvk, "4761739001010010", "1234")
    assert mine != theirs
    with pytest.raises(PinVerificationDataError):
        secrets.hsm().generate_ibm3624_offset(pvk, "4761739001010010", "1234",
                                              decimalisation_table="0123456789012345")
