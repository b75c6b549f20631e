"""Security against a real switch process: PIN try limit, MAC, TLS and mutual TLS."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ledger.embedded import EmbeddedPostgres
from messages.codec import encode
from messages.profiles import ASCII
from switch.atm import AtmClient, AtmError, CardData
from switch.demo import demo_pan
from tests.conftest import new_database
from tests.e2e.harness import TAK, SwitchProcess, card, free_port, run_cli, terminal
from tests.faults.bank import ledger_balance
from tests.faults.certs import Pki, make_pki
from tests.faults.conftest import atm, provision

pytestmark = pytest.mark.e2e

PIN = "1234"
WRONG = "9999"


def config_text(pki: Pki, tls_port: int, mtls_port: int) -> str:
    return f"""
[security]
pin_tries_max = 3
terminal_wrong_pins_max = 8
terminal_wrong_pin_window_s = 300

[[listeners]]
name = "atm"
listen = "127.0.0.1:0"

[[listeners]]
name = "tls"
listen = "127.0.0.1:{tls_port}"
tls_cert_file = "{pki.server_cert}"
tls_key_file = "{pki.server_key}"

[[listeners]]
name = "mtls"
listen = "127.0.0.1:{mtls_port}"
tls_cert_file = "{pki.server_cert}"
tls_key_file = "{pki.server_key}"
tls_client_ca_file = "{pki.ca_cert}"
"""


@pytest.fixture(scope="module")
def secure(pg_server: EmbeddedPostgres, template_db: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SwitchProcess, Pki]]:
    workdir = tmp_path_factory.mktemp("security")
    dsn = new_database(pg_server, template_db)
    pki = make_pki(workdir / "pki")
    # Each PIN test has a terminal of its own: wrong PINs count per terminal too.
    terminals = [terminal("ATM00001"), terminal("ATM00003", tak=TAK, mac_required=True),
                 terminal("ATM00005"), terminal("ATM00006"),
                 *(terminal(f"PIN{n:05d}") for n in range(1, 5))]
    cards = [card(n, daily_count=1000) for n in range(200, 220)]
    provision(dsn, workdir, terminals, cards)
    ports = {"tls": free_port(), "mtls": free_port()}
    proc = SwitchProcess(dsn=dsn, workdir=workdir, ports=ports,
                         config_text=config_text(pki, ports["tls"], ports["mtls"]))
    proc.start()
    try:
        yield proc, pki
    finally:
        proc.stop()


_pin_terminals = iter(f"PIN{n:05d}" for n in range(1, 5))


@pytest.fixture
async def plain(secure: tuple[SwitchProcess, Pki]) -> AsyncIterator[AtmClient]:
    """An ATM on a terminal used by this test only."""
    client = atm(next(_pin_terminals))
    await client.connect("127.0.0.1", secure[0].port)
    try:
        yield client
    finally:
        await client.close()


def cd(n: int) -> CardData:
    return CardData(pan=demo_pan(n), expiry="3012")


# -- PIN try limit ---------------------------------------------------------------


async def codes(client: AtmClient, card_: CardData, pins: list[str]) -> list[str]:
    found = []
    for pin in pins:
        found.append((await client.send(client.balance_inquiry(card_, pin))).code)
    return found


async def test_pin_try_limit_gives_75_until_reset_by_the_admin_cli(
        secure: tuple[SwitchProcess, Pki], plain: AtmClient) -> None:
    proc = secure[0]
    victim = cd(200)
    # Three wrong PINs (the limit): each is 55 until the limit is reached.
    first = await codes(plain, victim, [WRONG, WRONG, WRONG])
    assert first[:2] == ["55", "55"], first
    assert first[2] in ("55", "75"), first
    # Past the limit everything is 75, the right PIN included, withdrawals too.
    after = await codes(plain, victim, [PIN, WRONG, PIN])
    assert after == ["75", "75", "75"], after
    ex = await plain.send(plain.withdrawal(victim, 1_000, PIN))
    assert ex.code == "75"
    result = await asyncio.to_thread(run_cli, ["card", "reset-pin-tries", victim.pan], proc.dsn)
    assert result.returncode == 0, result.stderr[-2000:]
    assert victim.pan not in result.stdout + result.stderr, "the CLI must mask the PAN"
    assert await codes(plain, victim, [PIN]) == ["00"]
    # The counter starts again from zero.
    assert await codes(plain, victim, [WRONG, WRONG]) == ["55", "55"]
    assert await codes(plain, victim, [PIN]) == ["00"]


async def test_a_correct_pin_resets_the_try_counter(plain: AtmClient) -> None:
    victim = cd(201)
    assert await codes(plain, victim, [WRONG, WRONG, PIN]) == ["55", "55", "00"]
    assert await codes(plain, victim, [WRONG, WRONG, PIN]) == ["55", "55", "00"]


async def test_pin_tries_are_per_card(plain: AtmClient) -> None:
    assert (await codes(plain, cd(202), [WRONG] * 4))[-1] == "75"
    assert await codes(plain, cd(203), [PIN]) == ["00"]


async def test_blocked_card_repeat_does_not_bypass_the_limit(plain: AtmClient) -> None:
    victim = cd(204)
    await codes(plain, victim, [WRONG] * 3)
    msg = plain.balance_inquiry(victim, PIN)
    assert (await plain.send(msg)).code == "75"
    # A repeat (0201) of a request that was refused gets the same refusal.
    assert (await plain.send(plain.repeat_of(msg))).code == "75"


async def test_wrong_pins_from_one_terminal_are_rate_limited(
        secure: tuple[SwitchProcess, Pki]) -> None:
    """A terminal guessing PINs over many cards (one guess each, so no card's own
    limit is reached) is stopped after `terminal_wrong_pins_max` wrong PINs."""
    proc = secure[0]
    guesser, other = atm("ATM00005"), atm("ATM00006")
    await guesser.connect("127.0.0.1", proc.port)
    await other.connect("127.0.0.1", proc.port)
    try:
        guesses = [(await guesser.send(guesser.balance_inquiry(cd(n), WRONG))).code
                   for n in range(207, 215)]
        assert guesses == ["55"] * 8, guesses
        # The limit is reached: this terminal's PIN requests are refused (58), even
        # with the right PIN, and no card's try counter moves.
        for n in (215, 216):
            ex = await guesser.send(guesser.balance_inquiry(cd(n), WRONG))
            assert ex.code == "58", ex.code
        assert (await guesser.send(guesser.balance_inquiry(cd(217), PIN))).code == "58"
        # Other terminals are not affected, nor are the cards that were guessed at.
        assert (await other.send(other.balance_inquiry(cd(215), PIN))).code == "00"
        assert (await other.send(other.balance_inquiry(cd(210), PIN))).code == "00"
        # Echo still works on the limited terminal: it is only PIN traffic that stops.
        assert (await guesser.send(guesser.network("301"))).code == "00"
    finally:
        await guesser.close()
        await other.close()
    shed = await asyncio.to_thread(proc.metric, "atm_switch_load_shed_total",
                                   reason="terminal_wrong_pins")
    assert shed >= 3


# -- MAC -------------------------------------------------------------------------


async def test_mac_verified_and_bad_mac_declined_and_counted(
        secure: tuple[SwitchProcess, Pki]) -> None:
    proc = secure[0]
    client = atm("ATM00003")
    await client.connect("127.0.0.1", proc.port)
    try:
        before = await asyncio.to_thread(proc.metric, "atm_switch_mac_failures_total")
        good = client.with_mac(client.balance_inquiry(cd(205), PIN), TAK)
        ex = await client.send(good)
        assert ex.code == "00"
        opening = ledger_balance(ex.response)
        # A MAC over the message with one digit changed, a corrupted MAC, no MAC.
        wd = client.withdrawal(cd(205), 5_000, PIN)
        signed = client.with_mac(wd, TAK)
        tampered = signed.with_fields({4: f"{50_000:012d}"})
        mac = signed.get(64) or ""
        corrupted = signed.with_fields({64: ("0" if mac[0] != "0" else "1") + mac[1:]})
        unsigned = client.withdrawal(cd(205), 5_000, PIN)
        for msg in (tampered, corrupted, unsigned):
            assert (await client.send(msg)).code == "63", msg.mti
        # A reversal with a bad MAC is refused too (and so must be repeated).
        approved = client.with_mac(client.withdrawal(cd(205), 2_000, PIN), TAK)
        ex = await client.send(approved)
        assert ex.code == "00"
        reversal = client.reversal(approved)
        bad_reversal = reversal.with_fields({64: "0" * 16})
        assert (await client.send(bad_reversal)).code == "63"
        check = await client.send(client.with_mac(client.balance_inquiry(cd(205), PIN), TAK))
        assert opening is not None
        assert ledger_balance(check.response) == opening - 2_000, "bad-MAC messages moved money"
        after = await asyncio.to_thread(proc.metric, "atm_switch_mac_failures_total")
        assert after - before == 4
    finally:
        await client.close()


# -- TLS -------------------------------------------------------------------------


def client_context(pki: Pki, *, cert: Path | None = None, key: Path | None = None,
                   ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or pki.ca_cert))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def tls_exchange(port: int, ctx: ssl.SSLContext) -> str:
    """Connect with `ctx`, ask a balance; the response code, or raises AtmError."""
    client = atm("ATM00001")
    await client.connect("127.0.0.1", port, tls=ctx)
    try:
        return (await client.send(client.balance_inquiry(cd(206), PIN), timeout_s=5.0)).code
    finally:
        await client.close()


async def test_tls_listener_serves_atms(secure: tuple[SwitchProcess, Pki]) -> None:
    proc, pki = secure
    assert await tls_exchange(proc.ports["tls"], client_context(pki)) == "00"


async def test_tls_listener_refuses_plain_tcp(secure: tuple[SwitchProcess, Pki]) -> None:
    proc, _ = secure
    client = atm("ATM00001")
    payload = encode(client.balance_inquiry(cd(206), PIN), ASCII)
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.ports["tls"])
    try:
        writer.write(struct.pack(">H", len(payload)) + payload)
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(4096), 5.0)
        except (ConnectionError, OSError):
            data = b""
        assert b"0210" not in data, "a plain-text request got an answer on a TLS listener"
    finally:
        writer.close()


async def test_tls_client_rejects_an_untrusted_server(secure: tuple[SwitchProcess, Pki]) -> None:
    proc, pki = secure
    with pytest.raises(AtmError):
        await tls_exchange(proc.ports["tls"], client_context(pki, ca=pki.stranger_ca))


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(
        secure: tuple[SwitchProcess, Pki]) -> None:
    proc, pki = secure
    port = proc.ports["mtls"]
    ok = client_context(pki, cert=pki.client_cert, key=pki.client_key)
    assert await tls_exchange(port, ok) == "00"
    for ctx in (client_context(pki),
                client_context(pki, cert=pki.stranger_cert, key=pki.stranger_key)):
        with pytest.raises((AtmError, ssl.SSLError, ConnectionError)):
            await tls_exchange(port, ctx)
    # The listener is still healthy after refusing strangers.
    assert await tls_exchange(port, ok) == "00"
