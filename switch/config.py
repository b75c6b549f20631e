"""Configuration: a TOML file plus environment overrides, validated at start.

Every limit carries its unit last in its name. Validation errors are raised as
:class:`ConfigError` with a message that names the setting, never its value
when the setting is secret.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsm.errors import PinVerificationDataError
from hsm.pinverify import DEFAULT_DECIMALISATION_TABLE, check_decimalisation_table

PROFILES = ("ascii", "binary")
LENGTH_HEADERS = ("binary2", "ascii4")
PIN_BLOCK_FORMATS = (0, 1, 3, 4)


class ConfigError(ValueError):
    """The configuration is invalid; the message says which setting and why."""


def parse_hostport(text: str, setting: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{setting}: expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{setting}: port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{setting}: port {port} is out of range 0..65535")
    return host, port


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str = "atm"
    host: str = "127.0.0.1"
    port: int = 8583
    profile: str = "ascii"
    length_header: str = "binary2"
    tpdu: bool = False
    connections_max: int = 1000
    in_flight_max_per_connection: int = 64
    frame_bytes_max: int = 4096
    idle_timeout_s: float = 300.0
    frame_timeout_s: float = 10.0
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None

    def validate(self) -> None:
        where = f"listeners.{self.name}"
        if self.profile not in PROFILES:
            raise ConfigError(f"{where}.profile must be one of {PROFILES}, got {self.profile!r}")
        if self.length_header not in LENGTH_HEADERS:
            raise ConfigError(
                f"{where}.length_header must be one of {LENGTH_HEADERS}, got {self.length_header!r}"
            )
        _positive(f"{where}.connections_max", self.connections_max)
        _positive(f"{where}.in_flight_max_per_connection", self.in_flight_max_per_connection)
        _positive(f"{where}.idle_timeout_s", self.idle_timeout_s)
        _positive(f"{where}.frame_timeout_s", self.frame_timeout_s)
        if not 64 <= self.frame_bytes_max <= 65535:
            raise ConfigError(f"{where}.frame_bytes_max must be within 64..65535")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError(f"{where}: tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError(f"{where}: tls_client_ca_file needs tls_cert_file and tls_key_file")
        for path in (self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{where}: file not found: {path}")

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9583
    database_url: str | None = None
    data_dir: Path = Path(".state")
    db_pool_size_max: int = 16
    db_retries_max: int = 10
    # Group commit (ledger.batch): operations per statement, and statements in
    # flight at once (0 = an eighth of the pool, at least 1).
    db_batch_max: int = 32
    db_batch_lanes: int = 0
    # A lane beyond the first opens only once this many operations wait (1: at once;
    # 0 = batch_max, a full batch).
    db_batch_lane_open_min: int = 0
    in_flight_max: int = 2048
    authorize_timeout_s: float = 5.0
    hsm_timeout_s: float = 1.0
    shutdown_grace_s: float = 10.0
    cache_ttl_s: float = 5.0
    card_cache_ttl_s: float = 60.0
    pin_tries_max: int = 3
    pin_format_error_counts: bool = True
    terminal_wrong_pins_max: int = 20
    terminal_wrong_pin_window_s: float = 300.0
    sign_on_required: bool = False
    business_tz: str = "UTC"
    # 0400 whose original is not found: "00" acknowledges it (the tombstone is kept
    # either way); "25" (unable to locate record) for networks that want a refusal.
    unmatched_reversal_code: str = "00"
    # PAN prefixes (BINs) this host issues; a PAN outside them gets 15 (no such issuer)
    # without a database lookup. Empty: every PAN is looked up (unknown: 14).
    issuer_bins: tuple[str, ...] = ()
    fold_interval_s: float = 1.0
    hold_expiry_interval_s: float = 60.0
    master_key_hex: str | None = field(default=None, repr=False)
    master_key_file: str | None = None
    data_key_hex: str | None = field(default=None, repr=False)
    pvk_text: str | None = field(default=None, repr=False)
    # The issuer's IBM 3624 decimalisation table (offsets are made and verified under
    # it; the HSM accepts no other).
    decimalisation_table: str = DEFAULT_DECIMALISATION_TABLE
    log_json: bool = False
    log_level: str = "INFO"

    def validate(self) -> None:
        if not self.listeners:
            raise ConfigError("at least one listener is required")
        names = [lst.name for lst in self.listeners]
        if len(set(names)) != len(names):
            raise ConfigError("listener names must be unique")
        for listener in self.listeners:
            listener.validate()
        _positive("database.pool_size_max", self.db_pool_size_max)
        _positive("database.retries_max", self.db_retries_max)
        _positive("database.batch_max", self.db_batch_max)
        _zero_or_positive("database.batch_lane_open_min", self.db_batch_lane_open_min,
                          "a full batch")
        _zero_or_positive("database.batch_lanes", self.db_batch_lanes, "automatic")
        _positive("server.in_flight_max", self.in_flight_max)
        _positive("server.authorize_timeout_s", self.authorize_timeout_s)
        _positive("server.hsm_timeout_s", self.hsm_timeout_s)
        _positive("server.shutdown_grace_s", self.shutdown_grace_s)
        _positive("security.pin_tries_max", self.pin_tries_max)
        _positive("security.terminal_wrong_pins_max", self.terminal_wrong_pins_max)
        _positive("security.terminal_wrong_pin_window_s", self.terminal_wrong_pin_window_s)
        try:
            check_decimalisation_table(self.decimalisation_table)
        except PinVerificationDataError:
            raise ConfigError("security.decimalisation_table must be 16 decimal digits") from None
        for prefix in self.issuer_bins:
            if not (prefix.isdigit() and 4 <= len(prefix) <= 11):
                raise ConfigError("business.issuer_bins: each entry is 4 to 11 digits")
        if self.unmatched_reversal_code not in ("00", "25"):
            raise ConfigError('business.unmatched_reversal_code must be "00" or "25"')
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("logging.level must be DEBUG, INFO, WARNING or ERROR")
        for name, value in (("security.master_key", self.master_key_hex),
                            ("security.data_key", self.data_key_hex)):
            if value is not None:
                try:
                    bytes.fromhex(value)
                except ValueError:
                    raise ConfigError(f"{name} must be hex") from None
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(self.business_tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"business.timezone: unknown time zone {self.business_tz!r}") from None

    @property
    def pg_data_dir(self) -> Path:
        return self.data_dir / "pg"


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be positive")


def _zero_or_positive(name: str, value: float, zero_means: str) -> None:
    if not value >= 0:
        raise ConfigError(f"{name} must be 0 ({zero_means}) or positive")


_SECTIONS: dict[str, dict[str, str]] = {
    # TOML section.key -> SwitchConfig field
    "database": {"url": "database_url", "data_dir": "data_dir",
                 "pool_size_max": "db_pool_size_max", "retries_max": "db_retries_max",
                 "batch_max": "db_batch_max", "batch_lanes": "db_batch_lanes",
                 "batch_lane_open_min": "db_batch_lane_open_min"},
    "server": {"in_flight_max": "in_flight_max", "authorize_timeout_s": "authorize_timeout_s",
               "hsm_timeout_s": "hsm_timeout_s", "shutdown_grace_s": "shutdown_grace_s",
               "cache_ttl_s": "cache_ttl_s", "card_cache_ttl_s": "card_cache_ttl_s",
               "sign_on_required": "sign_on_required"},
    "security": {"pin_tries_max": "pin_tries_max", "master_key_file": "master_key_file",
                 "pin_format_error_counts": "pin_format_error_counts", "pvk": "pvk_text",
                 "terminal_wrong_pins_max": "terminal_wrong_pins_max",
                 "terminal_wrong_pin_window_s": "terminal_wrong_pin_window_s",
                 "decimalisation_table": "decimalisation_table"},
    "business": {"timezone": "business_tz", "fold_interval_s": "fold_interval_s",
                 "unmatched_reversal_code": "unmatched_reversal_code",
                 "issuer_bins": "issuer_bins",
                 "hold_expiry_interval_s": "hold_expiry_interval_s"},
    "logging": {"json": "log_json", "level": "log_level"},
}

_ENV: dict[str, str] = {
    "ATM_SWITCH_DATABASE_URL": "database_url",
    "ATM_SWITCH_DATA_DIR": "data_dir",
    "ATM_SWITCH_MASTER_KEY": "master_key_hex",
    "ATM_SWITCH_MASTER_KEY_FILE": "master_key_file",
    "ATM_SWITCH_DATA_KEY": "data_key_hex",
    "ATM_SWITCH_PVK": "pvk_text",
    "ATM_SWITCH_LOG_JSON": "log_json",
    "ATM_SWITCH_LOG_LEVEL": "log_level",
    "ATM_SWITCH_PIN_TRIES_MAX": "pin_tries_max",
    "ATM_SWITCH_DB_POOL_SIZE_MAX": "db_pool_size_max",
}


def _coerce(name: str, value: Any) -> Any:
    """Turn TOML/env values into the type of the SwitchConfig field `name`."""
    target = {f.name: f for f in dataclasses.fields(SwitchConfig)}[name]
    kind = str(target.type)
    try:
        if name == "data_dir":
            return Path(value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(text)
            return text in ("1", "true", "yes")
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("tuple"):
            # A TOML array, or a comma-separated string from the environment.
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if value == "" and "None" in kind:
            return None
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use this value (expected {kind})") from None


def _listener_from(raw: Mapping[str, Any], index: int) -> ListenerConfig:
    known = {f.name for f in dataclasses.fields(ListenerConfig)}
    values = dict(raw)
    if "listen" in values:
        values["host"], values["port"] = parse_hostport(str(values.pop("listen")),
                                                        f"listeners[{index}].listen")
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"listeners[{index}]: unknown settings {sorted(unknown)}")
    values.setdefault("name", f"listener{index}")
    try:
        return ListenerConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"listeners[{index}]: {exc}") from None


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SwitchConfig:
    """Build the configuration: defaults, then the file, then environment, then overrides.

    Raises ConfigError on any invalid or unknown setting.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    listeners: list[ListenerConfig] | None = None
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        listeners, values = _from_toml(raw)
    for var, name in _ENV.items():
        if var in env:
            values[name] = _coerce(name, env[var])
    listen = env.get("ATM_SWITCH_LISTEN")
    metrics_listen = env.get("ATM_SWITCH_METRICS_LISTEN")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "listen":
            listen = value
        elif key == "metrics_listen":
            metrics_listen = value
        else:
            values[key] = _coerce(key, value)
    if metrics_listen:
        values["metrics_host"], values["metrics_port"] = parse_hostport(metrics_listen,
                                                                        "metrics listen")
    if listeners is None:
        listeners = [ListenerConfig()]
    if listen:
        host, port = parse_hostport(listen, "listen")
        listeners[0] = dataclasses.replace(listeners[0], host=host, port=port)
    config = SwitchConfig(listeners=tuple(listeners), **values)
    config.validate()
    return config


def _from_toml(raw: Mapping[str, Any]) -> tuple[list[ListenerConfig] | None, dict[str, Any]]:
    values: dict[str, Any] = {}
    listeners: list[ListenerConfig] | None = None
    for section, content in raw.items():
        if section == "listeners":
            if not isinstance(content, list):
                raise ConfigError("listeners must be an array of tables ([[listeners]])")
            listeners = [_listener_from(item, i) for i, item in enumerate(content)]
        elif section == "metrics":
            if not isinstance(content, dict) or set(content) - {"listen"}:
                raise ConfigError("metrics: only 'listen' is known")
            if "listen" in content:
                values["metrics_host"], values["metrics_port"] = parse_hostport(
                    str(content["listen"]), "metrics.listen")
        elif section in _SECTIONS:
            if not isinstance(content, dict):
                raise ConfigError(f"{section} must be a table")
            for key, value in content.items():
                name = _SECTIONS[section].get(key)
                if name is None:
                    raise ConfigError(f"{section}.{key}: unknown setting")
                values[name] = _coerce(name, value)
        else:
            raise ConfigError(f"unknown section [{section}]")
    return listeners, values
