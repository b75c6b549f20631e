"""Secret hygiene: a full session with known card data and keys leaves none of them
in the switch's logs (JSON, DEBUG), the /metrics page, or any CLI output.

The secrets are this test's own (master key, data key, PVK, TPK, TMK, TAK,
PANs, PINs): nothing here is a demo value, so a hit cannot come from a
published constant. A hit is reported as "found <which> in <where>", never
with the secret itself.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey
from hsm.soft import SoftHsm
from hsm.terminal import encrypt_pin_block
from ledger.embedded import EmbeddedPostgres
from messages.codec import IsoMessage, decode, encode
from messages.profiles import ASCII
from switch.atm import AtmClient, AtmConfig, CardData
from switch.demo import luhn_complete
from tests.conftest import new_database
from tests.e2e.harness import ACQUIRER, SwitchProcess, run_cli, write_provisioning

pytestmark = pytest.mark.e2e


def odd_parity_hex(seed: bytes, length: int) -> str:
    """A fixed, non-demo TDES key with odd parity (derived from `seed`)."""
    import hashlib

    raw = hashlib.sha256(seed).digest()[:length]
    out = bytearray()
    for byte in raw:
        high = byte & 0xFE
        out.append(high | (0 if bin(high).count("1") % 2 else 1))
    return out.hex().upper()


MASTER_KEY = odd_parity_hex(b"secret-hygiene master", 32)
DATA_KEY = odd_parity_hex(b"secret-hygiene data key", 32)
PVK = odd_parity_hex(b"secret-hygiene pvk", 16)
TPK = odd_parity_hex(b"secret-hygiene tpk", 16)
TMK = odd_parity_hex(b"secret-hygiene tmk", 16)
TAK = odd_parity_hex(b"secret-hygiene tak", 16)
# PINs of 6 digits that cannot be read as a time of day, a port or a STAN here.
PIN_A, PIN_B, WRONG_PIN = "937164", "986420", "975318"
PAN_A = luhn_complete("541333900017352")
PAN_B = luhn_complete("491761100028419")
PAN_UNKNOWN = luhn_complete("601100900033571")   # valid Luhn, never provisioned
EXPIRY = "3107"


def clear_pin_block(pin: str, pan: str) -> str:
    """ISO 9564 format 0 before encryption: what a leaking host might print."""
    pin_field = bytes.fromhex(f"0{len(pin)}{pin}".ljust(16, "F"))
    pan_field = bytes.fromhex("0000" + pan[-13:-1])
    return bytes(a ^ b for a, b in zip(pin_field, pan_field, strict=True)).hex().upper()


@dataclass
class Secrets:
    named: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        assert len(value) >= 6, name
        self.named[name] = value

    def hits(self, where: str, text: str, *, length_min: int = 0) -> list[str]:
        upper = text.upper()
        return [f"found {name} in {where}" for name, value in self.named.items()
                if len(value) >= length_min and value.upper() in upper]


def known_secrets() -> Secrets:
    s = Secrets()
    for name, value in (("master key", MASTER_KEY), ("data key", DATA_KEY), ("PVK", PVK),
                        ("TPK", TPK), ("TMK", TMK), ("TAK", TAK)):
        s.add(name, value)
    for label, pan, pin in (("card A", PAN_A, PIN_A), ("card B", PAN_B, PIN_B),
                            ("unknown card", PAN_UNKNOWN, PIN_A)):
        s.add(f"{label} PAN", pan)
        s.add(f"{label} track 2", CardData(pan, EXPIRY).track2)
        s.add(f"{label} track 2 (D separator)", f"{pan}D{EXPIRY}")
        s.add(f"{label} PIN block", encrypt_pin_block(TPK, pin, pan))
        s.add(f"{label} clear PIN block", clear_pin_block(pin, pan))
        s.add(f"{label} wrong PIN block", encrypt_pin_block(TPK, WRONG_PIN, pan))
    for name, pin in (("PIN A", PIN_A), ("PIN B", PIN_B), ("wrong PIN", WRONG_PIN)):
        s.add(name, pin)
    return s


def secret_env() -> dict[str, str]:
    soft = SoftHsm(MasterKey.from_hex(MASTER_KEY))
    pvk = soft.import_clear_key(KeyUsage.PVK, KeyAlgorithm.TDES2, PVK).to_text()
    return {"ATM_SWITCH_MASTER_KEY": MASTER_KEY, "ATM_SWITCH_DATA_KEY": DATA_KEY,
            "ATM_SWITCH_PVK": pvk, "ATM_SWITCH_LOG_JSON": "1",
            "ATM_SWITCH_LOG_LEVEL": "DEBUG"}


@dataclass
class Outputs:
    """Everything the session printed, by where it came from."""

    texts: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def cli(self, where: str, args: list[str], dsn: str, env: dict[str, str]) -> int:
        result = run_cli(args, dsn, env=env)
        self.add(f"stdout of `{where}`", result.stdout)
        self.add(f"stderr of `{where}`", result.stderr)
        return result.returncode


def frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


async def bad_field_exchange(proc: SwitchProcess, msg: IsoMessage) -> str:
    """Send `msg` with letters in field 49 (our encoder refuses that: patch the bytes)."""
    payload = encode(msg.with_fields({49: "777"}), ASCII)
    assert payload.count(b"777") == 1
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    try:
        writer.write(frame(payload.replace(b"777", b"ABC")))
        await writer.drain()
        length = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), 10))[0]
        answer = decode(await asyncio.wait_for(reader.readexactly(length), 10), ASCII)
    finally:
        writer.close()
    return answer.get(39) or ""


async def atm_session(proc: SwitchProcess) -> tuple[list[str], str]:
    """Everything an ATM network does in a day, once. Returns the codes and the
    new TPK delivered by the key change (clear, so the test can look for it)."""
    config = AtmConfig(terminal_id="SECATM01", acquirer_id=ACQUIRER, tpk_hex=TPK)
    client = AtmClient(config, stan_start=4001)
    mac_client = AtmClient(AtmConfig(terminal_id="SECATM02", acquirer_id=ACQUIRER,
                                     tpk_hex=TPK), stan_start=5001)
    await client.connect("127.0.0.1", proc.port)
    await mac_client.connect("127.0.0.1", proc.port)
    card_a, card_b = CardData(PAN_A, EXPIRY), CardData(PAN_B, EXPIRY)
    got: list[str] = []
    try:
        for code in ("001", "301"):
            got.append((await client.send(client.network(code))).code)
        got.append((await client.send(client.balance_inquiry(card_a, PIN_A))).code)
        wd = client.withdrawal(card_a, 4_000, PIN_A)
        got.append((await client.send(wd)).code)
        got.append((await client.send(client.repeat_of(wd))).code)
        got.append((await client.send(client.reversal(wd, dispensed=1_000))).code)
        got.append((await client.send(client.balance_inquiry(card_b, WRONG_PIN))).code)
        got.append((await client.send(client.balance_inquiry(
            CardData(PAN_UNKNOWN, EXPIRY), PIN_A))).code)
        got.append((await client.send(client.balance_inquiry(CardData(PAN_B, "2001"),
                                                              PIN_B))).code)
        got.append((await client.send(client.withdrawal(card_b, 10**11, PIN_B))).code)
        got.append(await bad_field_exchange(proc, client.withdrawal(card_b, 1_000, PIN_B)))
        good = mac_client.with_mac(mac_client.withdrawal(card_b, 1_000, PIN_B), TAK)
        got.append((await mac_client.send(good)).code)
        got.append((await mac_client.send(good.with_fields({4: f"{9_000:012d}"}))).code)
        # Undecodable frames that carry card data in clear.
        _, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        payload = encode(client.withdrawal(card_a, 1_000, PIN_A), ASCII)
        for junk in (payload[:40], payload[:4] + b"ZZZZ" + payload[8:],
                     b"0200" + PAN_A.encode() + f"={EXPIRY}".encode(), payload + b"\xff" * 30):
            writer.write(frame(junk))
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        key_change = await client.send(client.network("161"))
        got.append(key_change.code)
        field48 = key_change.response.get(48) or ""
        tmk = bytes.fromhex(TMK)
        decryptor = Cipher(TripleDES(tmk + tmk[:8]), modes.ECB()).decryptor()  # noqa: S305
        new_tpk = (decryptor.update(bytes.fromhex(field48[:32])) + decryptor.finalize()).hex()
        client.config.tpk_hex = new_tpk.upper()
        got.append((await client.send(client.balance_inquiry(card_a, PIN_A))).code)
        got.append((await client.send(client.network("002"))).code)
        assert got[-3:] == ["00", "00", "00"], "key change, balance under the new TPK, sign-off"
    finally:
        await client.close()
        await mac_client.close()
    return got, new_tpk


def log_lines(text: str) -> Iterable[str]:
    return [line for line in text.splitlines() if line.strip()]


async def test_no_secret_in_logs_metrics_or_cli_output(
        pg_server: EmbeddedPostgres, template_db: str, tmp_path: Path) -> None:
    dsn = new_database(pg_server, template_db)
    env = secret_env()
    out = Outputs()
    terminals = [{"id": "SECATM01", "tpk": TPK, "tmk": TMK, "acquirer": ACQUIRER,
                  "cash": 10_000_000},
                 {"id": "SECATM02", "tpk": TPK, "tak": TAK, "mac_required": True,
                  "acquirer": ACQUIRER, "cash": 10_000_000}]
    cards = [{"pan": PAN_A, "expiry": EXPIRY, "pin": PIN_A, "balance": 500_000,
              "currency": "840", "daily_limit": 400_000},
             {"pan": PAN_B, "expiry": EXPIRY, "pin": PIN_B, "balance": 700_000,
              "currency": "840", "daily_limit": 400_000, "pin_method": "ibm3624"}]
    path = write_provisioning(tmp_path / "secret-provision.json", terminals, cards)
    assert await asyncio.to_thread(out.cli, "provision", ["provision", str(path)], dsn,
                                   env) == 0, out.texts[-1][1][-2000:]
    # Bad provisioning input with a secret in it: the error must not echo it.
    bad = write_provisioning(tmp_path / "bad.json", [{"id": "SECATM09", "tpk": TPK[:-2] + "ZZ",
                                                      "acquirer": ACQUIRER}],
                             [{"pan": PAN_A[:-1] + str((int(PAN_A[-1]) + 1) % 10),
                               "expiry": EXPIRY, "pin": PIN_B, "balance": 1,
                               "currency": "840"}])
    assert await asyncio.to_thread(out.cli, "provision (bad file)",
                                   ["provision", str(bad)], dsn, env) != 0

    proc = SwitchProcess(dsn=dsn, workdir=tmp_path, env=env)
    proc.start()
    try:
        got, new_tpk = await atm_session(proc)
        assert got[:4] == ["00", "00", "00", "00"], got
        assert "55" in got and "63" in got and "30" in got, got
        out.add("/metrics", await asyncio.to_thread(proc.metrics_text))
        for action in ("block", "unblock", "reset-pin-tries", "lost"):
            await asyncio.to_thread(out.cli, f"card {action}", ["card", action, PAN_B], dsn, env)
        await asyncio.to_thread(out.cli, "card block (unknown card)",
                                ["card", "block", PAN_UNKNOWN], dsn, env)
        await asyncio.to_thread(out.cli, "card limits",
                                ["card", "limits", PAN_A, "--daily-amount-max", "90000"], dsn,
                                env)
        connect = ["atm", "--connect", f"127.0.0.1:{proc.port}", "--terminal", "SECATM01",
                   "--tpk", new_tpk.upper()]
        assert await asyncio.to_thread(out.cli, "atm balance",
                                       [*connect, "balance", "--pan", PAN_A, "--pin", PIN_A,
                                        "--expiry", EXPIRY], dsn, env) == 0
        await asyncio.to_thread(out.cli, "atm withdraw --reverse",
                                [*connect, "withdraw", "--pan", PAN_A, "--pin", WRONG_PIN,
                                 "--expiry", EXPIRY, "--amount", "1000", "--reverse"], dsn, env)
        await asyncio.to_thread(out.cli, "atm balance (bad PAN)",
                                [*connect, "balance", "--pan", PAN_A[:-1] + "X",
                                 "--pin", PIN_A], dsn, env)
    finally:
        proc.stop()
    await asyncio.to_thread(out.cli, "ledger verify", ["ledger", "verify"], dsn, env)

    log_text = proc.logs()
    lines = log_lines(log_text)
    parsed = 0
    for line in lines:
        try:
            json.loads(line)
            parsed += 1
        except ValueError:
            pass
    assert parsed >= 3, "JSON logging was not on: the search would prove nothing"

    secrets = known_secrets()
    secrets.add("new TPK from the key change", new_tpk)
    # Positive control: the provisioning file holds the clear values, so the
    # search must find them there.
    control = secrets.hits("provisioning file", path.read_text())
    assert len(control) >= 6, "the secret search does not work"
    hits = []
    for number, line in enumerate(lines, 1):
        hits += secrets.hits(f"switch log line {number}", line)
    for where, text in out.texts:
        hits += secrets.hits(where, text)
    for table, text in await asyncio.to_thread(database_rows, dsn):
        # Not the 6-digit PINs here: microseconds of stored timestamps could
        # match one by chance. PINs are never stored (only PVVs/offsets).
        hits += secrets.hits(f"database table {table}", text, length_min=12)
    assert not hits, "\n".join(sorted(set(hits)))


def database_rows(dsn: str) -> list[tuple[str, str]]:
    """Every row of every table of the ledger, as text (read-only): keys at rest
    must be wrapped under the master key, PANs sealed, PINs gone."""
    import psycopg
    from psycopg import sql

    found = []
    with psycopg.connect(dsn) as conn:
        conn.read_only = True
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'").fetchall()]
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT t::text FROM {} AS t").format(
                sql.Identifier(table))).fetchall()
            found.append((table, "\n".join(r[0] for r in rows)))
    assert any(name == "terminals" for name, _ in found)
    return found
