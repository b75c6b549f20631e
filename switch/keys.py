"""Where the switch's secrets come from: master key, PAN data key, issuer PVK.

Production: the master key from ATM_SWITCH_MASTER_KEY or a key file (mode
0600), the data key from ATM_SWITCH_DATA_KEY, the PVK as a key wrapped under
the master key (ATM_SWITCH_PVK or `security.pvk`). When none is configured the
switch runs on the published DEMO keys and says so loudly at start: they are
for demos and tests only.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from hsm.errors import HsmError
from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey, WrappedKey
from hsm.soft import SoftHsm
from switch.config import ConfigError, SwitchConfig

log = logging.getLogger("atm_switch.keys")

# Public demo values: never use them with real cards.
DEMO_PVK_CLEAR_HEX = "0123456789ABCDEFFEDCBA9876543210"
DEMO_DATA_KEY = hashlib.sha256(b"atm-switch demo data key - not for production").digest()


@dataclass(frozen=True)
class Secrets:
    master: MasterKey
    data_key: bytes
    pvk: WrappedKey
    demo: bool
    # The issuer's IBM 3624 decimalisation table: the only one the HSM accepts.
    decimalisation_table: str

    def __repr__(self) -> str:
        return f"Secrets(master={self.master!r}, pvk={self.pvk!r}, demo={self.demo})"

    def hsm(self) -> SoftHsm:
        """The soft-HSM over the master key, with the issuer's decimalisation table."""
        return SoftHsm(self.master, decimalisation_tables=(self.decimalisation_table,))


def load_secrets(config: SwitchConfig) -> Secrets:
    """Raises ConfigError when a configured secret is unusable (never echoing it)."""
    try:
        if config.master_key_hex:
            master = MasterKey.from_hex(config.master_key_hex)
        elif config.master_key_file:
            master = MasterKey.from_file(config.master_key_file)
        else:
            master = MasterKey.demo()
    except HsmError as exc:
        raise ConfigError(f"master key: {exc}") from None
    if config.data_key_hex:
        data_key = bytes.fromhex(config.data_key_hex)
        if len(data_key) < 16:
            raise ConfigError("data key must be at least 16 bytes")
    else:
        data_key = DEMO_DATA_KEY
    soft = SoftHsm(master)
    try:
        if config.pvk_text:
            pvk = WrappedKey.from_text(config.pvk_text)
        else:
            pvk = soft.import_clear_key(KeyUsage.PVK, KeyAlgorithm.TDES2, DEMO_PVK_CLEAR_HEX)
        # Unwrapping proves the PVK belongs to this master key before any card needs it.
        soft.generate_pvv(pvk, "4000000000000002", "1", "0000")
    except HsmError as exc:
        raise ConfigError(f"PVK: {exc}") from None
    demo = master.is_demo or not config.data_key_hex or not config.pvk_text
    return Secrets(master=master, data_key=data_key, pvk=pvk, demo=demo,
                   decimalisation_table=config.decimalisation_table)


def warn_if_demo(secrets: Secrets) -> None:
    if secrets.demo:
        log.warning("running with DEMO keys (master key, data key or PVK not configured): "
                    "for demos and tests only, never for real cards")
