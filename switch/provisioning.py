"""Provisioning from a JSON file (test and demo data: clear keys and PINs).

Shape::

    {"terminals": [{"id": "ATM00001", "tpk": "<32 or 48 hex>", "acquirer": "123456"}],
     "cards": [{"pan": "4761739001010119", "expiry": "2812", "pin": "1234",
                "balance": 100000, "currency": "840", "daily_limit": 50000}]}

Optional terminal keys: tmk, tak (clear hex), currency, location, status,
pin_block_format (0/1/3/4), sign_on_required, mac_required, profile, cash.
Optional card keys: pin_method ("pvv" default, or "ibm3624"), status,
account_type ("20" checking default), savings_balance (adds a savings account),
overdraft, daily_count, transaction_limit.

Clear keys are wrapped under the master key by the HSM at once; PINs become a
PVV or IBM 3624 offset and are discarded. Re-running the same file is
harmless: upserts never add an opening balance twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsm.errors import HsmError
from hsm.keys import KeyUsage, WrappedKey
from hsm.soft import SoftHsm
from ledger.model import AccountSpec, CardLimits, CardSpec, CardStatus, TerminalSpec
from ledger.store import Ledger
from messages.errors import FieldError
from messages.fields import Pan

DEFAULT_PVKI = "1"


class ProvisioningInputError(ValueError):
    """The provisioning file is invalid; the message names the entry, never a secret."""


@dataclass(frozen=True)
class ProvisionSummary:
    terminals: int
    cards: int


def load_file(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProvisioningInputError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ProvisioningInputError(f"{path} is not valid JSON: line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise ProvisioningInputError("the file must hold a JSON object")
    unknown = set(data) - {"terminals", "cards"}
    if unknown:
        raise ProvisioningInputError(f"unknown top-level keys: {sorted(unknown)}")
    return data


def _get(entry: Mapping[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    value = entry.get(key, default)
    if value is None:
        if default is None and key in _REQUIRED:
            raise ProvisioningInputError(f"{where}: '{key}' is required")
        return None
    if kind is int and isinstance(value, bool):
        raise ProvisioningInputError(f"{where}: '{key}' must be an integer")
    if not isinstance(value, kind):
        raise ProvisioningInputError(f"{where}: '{key}' must be {kind.__name__}")
    return value


_REQUIRED = {"id", "tpk", "acquirer", "pan", "expiry", "pin", "balance", "currency"}


def _digits(value: str, where: str, key: str, lengths: range) -> str:
    if not value.isdigit() or len(value) not in lengths:
        raise ProvisioningInputError(f"{where}: '{key}' must be {lengths.start}-"
                                     f"{lengths.stop - 1} digits")
    return value


def terminal_spec(entry: Mapping[str, Any], index: int, hsm: SoftHsm) -> TerminalSpec:
    where = f"terminals[{index}]"
    if not isinstance(entry, dict):
        raise ProvisioningInputError(f"{where} must be an object")
    tid = _get(entry, "id", str, where)
    if not 1 <= len(tid) <= 8 or not tid.isprintable():
        raise ProvisioningInputError(f"{where}: 'id' must be 1-8 printable characters")
    acquirer = _digits(_get(entry, "acquirer", str, where), where, "acquirer", range(1, 12))
    keys: dict[str, str | None] = {}
    for name, usage in (("tpk", KeyUsage.TPK), ("tmk", KeyUsage.TMK), ("tak", KeyUsage.TAK)):
        clear = _get(entry, name, str, where)
        if clear is None:
            keys[name] = None
            continue
        try:
            keys[name] = hsm.import_clear_key(usage, None, clear).to_text()
        except HsmError as exc:
            raise ProvisioningInputError(f"{where}: '{name}' is not a usable key "
                                         f"({exc.result.meaning})") from None
    pin_format = _get(entry, "pin_block_format", int, where, 0)
    if pin_format not in (0, 1, 3, 4):
        raise ProvisioningInputError(f"{where}: 'pin_block_format' must be 0, 1, 3 or 4")
    profile = _get(entry, "profile", str, where, "ascii")
    if profile not in ("ascii", "binary"):
        raise ProvisioningInputError(f"{where}: 'profile' must be ascii or binary")
    status = _get(entry, "status", str, where, "active")
    return TerminalSpec(
        terminal_id=tid,
        acquirer_id=acquirer,
        currency=_digits(_get(entry, "currency", str, where, "840"), where, "currency",
                         range(3, 4)),
        location=_get(entry, "location", str, where, ""),
        status=status,
        tpk=keys["tpk"],
        tmk=keys["tmk"],
        tak=keys["tak"],
        pin_block_format=pin_format,
        sign_on_required=_get(entry, "sign_on_required", bool, where, False),
        mac_required=_get(entry, "mac_required", bool, where, False),
        profile=profile,
        cash_opening=_get(entry, "cash", int, where, 0),
    )


def account_ref(ref_key: bytes, pan: str) -> str:
    """A stable reference for a card's accounts that reveals nothing of the PAN
    (account codes are printed by the verifier and seen by operators): a keyed
    hash, so re-provisioning the same card finds the same accounts."""
    return hmac.new(ref_key, b"account-ref|" + pan.encode(), hashlib.sha256).hexdigest()[:20]


def card_spec(entry: Mapping[str, Any], index: int, hsm: SoftHsm, pvk: WrappedKey,
              ref_key: bytes) -> CardSpec:
    where = f"cards[{index}]"
    if not isinstance(entry, dict):
        raise ProvisioningInputError(f"{where} must be an object")
    try:
        pan = Pan(_get(entry, "pan", str, where)).digits
    except FieldError:
        raise ProvisioningInputError(f"{where}: 'pan' is not a valid card number") from None
    expiry = _digits(_get(entry, "expiry", str, where), where, "expiry", range(4, 5))
    if not 1 <= int(expiry[2:]) <= 12:
        raise ProvisioningInputError(f"{where}: 'expiry' must be YYMM")
    pin = _digits(_get(entry, "pin", str, where), where, "pin", range(4, 13))
    currency = _digits(_get(entry, "currency", str, where), where, "currency", range(3, 4))
    balance = _get(entry, "balance", int, where)
    account_type = _get(entry, "account_type", str, where, "20")
    ref = account_ref(ref_key, pan)
    accounts = [AccountSpec(account_type=account_type, account_ref=f"{ref}-{account_type}",
                            currency=currency, opening_balance=balance,
                            overdraft_limit=_get(entry, "overdraft", int, where, 0),
                            is_default=True)]
    savings = _get(entry, "savings_balance", int, where, None)
    if savings is not None and account_type != "10":
        accounts.append(AccountSpec(account_type="10", account_ref=f"{ref}-10",
                                    currency=currency, opening_balance=savings))
    method = _get(entry, "pin_method", str, where, "pvv")
    try:
        if method == "pvv":
            pvv, offset, pvki = hsm.generate_pvv(pvk, pan, DEFAULT_PVKI, pin), None, DEFAULT_PVKI
        elif method == "ibm3624":
            pvv, offset, pvki = None, hsm.generate_ibm3624_offset(pvk, pan, pin), None
        else:
            raise ProvisioningInputError(f"{where}: 'pin_method' must be pvv or ibm3624")
    except HsmError as exc:
        raise ProvisioningInputError(f"{where}: PIN not usable ({exc.result.meaning})") from None
    try:
        status = CardStatus(_get(entry, "status", str, where, "active"))
    except ValueError:
        raise ProvisioningInputError(f"{where}: unknown 'status'") from None
    return CardSpec(
        pan=pan, expiry=expiry, accounts=accounts, pin_method=method,
        pvv=pvv, pvki=pvki, pin_offset=offset, status=status,
        limits=CardLimits(
            txn_amount_max=_get(entry, "transaction_limit", int, where, None),
            daily_amount_max=_get(entry, "daily_limit", int, where, None),
            daily_count_max=_get(entry, "daily_count", int, where, None),
        ),
    )


async def provision(ledger: Ledger, hsm: SoftHsm, pvk: WrappedKey,
                    data: Mapping[str, Any], ref_key: bytes) -> ProvisionSummary:
    """Validate every entry first, then write: a bad entry writes nothing.

    Raises ProvisioningInputError, ledger.errors.LedgerError.
    """
    terminals = data.get("terminals", [])
    cards = data.get("cards", [])
    if not isinstance(terminals, list) or not isinstance(cards, list):
        raise ProvisioningInputError("'terminals' and 'cards' must be arrays")
    terminal_specs = [terminal_spec(t, i, hsm) for i, t in enumerate(terminals)]
    card_specs = [card_spec(c, i, hsm, pvk, ref_key) for i, c in enumerate(cards)]
    for t_spec in terminal_specs:
        await ledger.upsert_terminal(t_spec)
    for c_spec in card_specs:
        await ledger.upsert_card(c_spec)
    return ProvisionSummary(terminals=len(terminal_specs), cards=len(card_specs))
