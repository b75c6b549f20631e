"""End to end over real TCP against a real switch process: every MTI, every code.

Each test uses its own card (see conftest.CARDS) so tests do not depend on
each other's balances or counters.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from hsm.terminal import encrypt_pin_block
from messages.codec import IsoMessage
from messages.fields import parse_additional_amounts
from switch.atm import AtmClient, CardData
from switch.demo import demo_pan
from tests.e2e.conftest import atm_config, next_stan_start
from tests.e2e.harness import TPK, SwitchProcess, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["compiled", "source"])
def switch_form(request: pytest.FixtureRequest) -> str:
    """Every flow against the switch in each form of its compiled modules (see
    messages.compiled): the codec and views answer alike in both, end to end."""
    return str(request.param)


def test_the_switch_runs_the_form_asked_for(switch_proc: SwitchProcess,
                                            switch_form: str) -> None:
    from messages.compiled import state

    line = next(line for line in switch_proc.log_path.read_text(encoding="utf-8").splitlines()
                if "ISO 8583 codec" in line)
    if switch_form == "source":
        assert "pure Python (ATM_SWITCH_PURE_PYTHON is set)" in line
    elif state() == "compiled (mypyc)":  # compiled at install, as in this process
        assert "compiled (mypyc)" in line and "pure Python" not in line


def card(n: int, expiry: str = "3012") -> CardData:
    return CardData(pan=demo_pan(n), expiry=expiry)


def balances(msg: IsoMessage) -> dict[str, int]:
    blocks = parse_additional_amounts(msg.get(54) or "")
    return {b.amount_type: b.amount for b in blocks}


async def connect(proc: SwitchProcess, terminal_id: str, port: int | None = None,
                  **extra: object) -> AtmClient:
    client = AtmClient(atm_config(terminal_id, **extra), stan_start=next_stan_start())
    await client.connect("127.0.0.1", port or proc.port)
    return client


# -- caches ------------------------------------------------------------------


async def test_a_card_is_read_from_the_database_once_then_from_the_cache(
        atm: AtmClient, switch_proc: SwitchProcess) -> None:
    """Operators see each database read the card cache could not spare them."""
    def misses() -> float:
        return switch_proc.metric("atm_switch_cache_misses_total", cache="card")

    before = await asyncio.to_thread(misses)
    assert (await atm.send(atm.balance_inquiry(card(29), "1234"))).code == "00"
    first = await asyncio.to_thread(misses)
    assert (await atm.send(atm.balance_inquiry(card(29), "1234"))).code == "00"
    second = await asyncio.to_thread(misses)
    assert (first - before, second - first) == (1.0, 0.0)


async def test_an_unknown_terminal_is_read_from_the_database_on_every_request(
        switch_proc: SwitchProcess) -> None:
    """Only terminals that exist are cached: each request from an unknown one is a
    database read, and operators see every one of them counted."""
    def misses() -> float:
        return switch_proc.metric("atm_switch_cache_misses_total", cache="terminal")

    client = await connect(switch_proc, "NOSUCH03")
    try:
        before = await asyncio.to_thread(misses)
        for _ in range(2):
            assert (await client.send(client.withdrawal(card(1), 1_000, "1234"))).code == "03"
        assert await asyncio.to_thread(misses) - before == 2.0
    finally:
        await client.close()


# -- 0800 --------------------------------------------------------------------


async def test_echo_sign_on_sign_off(atm: AtmClient) -> None:
    for code in ("301", "001", "002", "201"):
        ex = await atm.send(atm.network(code))
        assert ex.response.mti == "0810"
        assert ex.code == "00", code
        assert ex.response.get(70) == code
        assert ex.response.get(11) == ex.request.get(11)


async def test_echo_needs_no_known_terminal(switch_proc: SwitchProcess) -> None:
    client = await connect(switch_proc, "NOSUCH01")
    try:
        ex = await client.send(client.network("301"))
        assert ex.code == "00"
        ex = await client.send(client.network("001"))
        assert ex.code == "03", "unknown terminal: invalid merchant/terminal"
    finally:
        await client.close()


async def test_network_sign_on_without_a_terminal_repeats_and_advices(atm: AtmClient) -> None:
    # An acquirer host signs its link on and off without naming a terminal.
    for code in ("001", "002"):
        ex = await atm.send(atm.network(code).with_fields({41: None}))
        assert (ex.response.mti, ex.code) == ("0810", "00"), code
    # A key change must name its terminal.
    assert (await atm.send(atm.network("161").with_fields({41: None}))).code == "30"
    # A repeat is handled as the request; an advice is acknowledged whatever it says.
    repeat = atm.network("301")
    ex = await atm.send(IsoMessage("0801", dict(repeat.fields)))
    assert (ex.response.mti, ex.code) == ("0810", "00")
    for code in ("201", "999"):
        advice = atm.network(code)
        ex = await atm.send(IsoMessage("0820", dict(advice.fields)))
        assert (ex.response.mti, ex.code, ex.response.get(70)) == ("0830", "00", code)


async def test_unknown_network_function_is_invalid(atm: AtmClient) -> None:
    ex = await atm.send(atm.network("999"))
    assert ex.code == "12"


async def test_sign_on_required_terminal(switch_proc: SwitchProcess) -> None:
    client = await connect(switch_proc, "ATM00002")
    try:
        ex = await client.send(client.balance_inquiry(card(15), "1234"))
        assert ex.code == "58"
        assert (await client.send(client.network("001"))).code == "00"
        ex = await client.send(client.balance_inquiry(card(15), "1234"))
        assert ex.code == "00"
        assert (await client.send(client.network("002"))).code == "00"
        ex = await client.send(client.balance_inquiry(card(15), "1234"))
        assert ex.code == "58"
    finally:
        await client.close()


async def test_key_change_delivers_a_new_tpk_under_the_tmk(switch_proc: SwitchProcess) -> None:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    from tests.e2e.harness import TMK

    client = await connect(switch_proc, "ATM00007", pin_block_format=3)
    try:
        ex = await client.send(client.network("161"))
        assert ex.code == "00"
        field48 = ex.response.get(48) or ""
        assert re.fullmatch(r"[0-9A-F]{32}[0-9A-F]{6}", field48), "key + KCV in field 48"
        def tdes(key: bytes) -> TripleDES:
            return TripleDES(key + key[:8])  # two-key TDES as 24 bytes

        decryptor = Cipher(tdes(bytes.fromhex(TMK)), modes.ECB()).decryptor()  # noqa: S305
        new_tpk = decryptor.update(bytes.fromhex(field48[:32])) + decryptor.finalize()
        encryptor = Cipher(tdes(new_tpk), modes.ECB()).encryptor()  # noqa: S305
        kcv = (encryptor.update(bytes(8)) + encryptor.finalize())[:3].hex().upper()
        assert kcv == field48[32:]
        # The old key no longer verifies PINs; the new one does.
        ex = await client.send(client.balance_inquiry(card(16), "1234"))
        assert ex.code == "55"
        client.config.tpk_hex = new_tpk.hex().upper()
        ex = await client.send(client.balance_inquiry(card(16), "1234"))
        assert ex.code == "00"
    finally:
        await client.close()


# -- 0200 --------------------------------------------------------------------


async def test_withdrawal_approved_with_balances(atm: AtmClient) -> None:
    ex = await atm.send(atm.withdrawal(card(1), 2_000, "1234"))
    r = ex.response
    assert r.mti == "0210"
    assert ex.code == "00"
    assert re.fullmatch(r"[0-9A-Z]{6}", r.get(38) or "")
    for n in (2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 49):
        assert r.get(n) == ex.request.get(n), f"field {n} echoed"
    assert r.get(52) is None and r.get(35) is None, "no PIN or track data in responses"
    amounts = balances(r)
    assert amounts["01"] == 98_000
    assert amounts["02"] == 98_000


async def test_balance_inquiry_both_processing_codes(atm: AtmClient) -> None:
    for code in ("30", "31"):
        msg = atm.financial(card(17), processing=f"{code}0000", amount=0, pin="1234")
        ex = await atm.send(msg)
        assert ex.code == "00"
        assert balances(ex.response)["02"] == 100_000
        assert ex.response.get(38) is not None


async def test_savings_account_and_missing_account(atm: AtmClient) -> None:
    ex = await atm.send(atm.balance_inquiry(card(10), "1234", account="10"))
    assert ex.code == "00"
    assert balances(ex.response)["02"] == 30_000
    ex = await atm.send(atm.balance_inquiry(card(17), "1234", account="10"))
    assert ex.code == "53"


async def test_ibm3624_offset_card(atm: AtmClient) -> None:
    assert (await atm.send(atm.balance_inquiry(card(11), "1234"))).code == "00"
    assert (await atm.send(atm.balance_inquiry(card(11), "4321"))).code == "55"


@pytest.mark.parametrize(("n", "code"), [(2, "41"), (3, "43"), (4, "62")])
async def test_card_status_codes(atm: AtmClient, n: int, code: str) -> None:
    ex = await atm.send(atm.withdrawal(card(n), 1_000, "1234"))
    assert ex.code == code
    assert ex.response.get(38) is None


async def test_expired_card(atm: AtmClient) -> None:
    ex = await atm.send(atm.withdrawal(card(5, expiry="2001"), 1_000, "1234"))
    assert ex.code == "54"


async def test_unknown_and_invalid_card_numbers(atm: AtmClient) -> None:
    unknown = CardData(pan="4000000000000002", expiry="3012")
    assert (await atm.send(atm.withdrawal(unknown, 1_000, "1234"))).code == "14"
    bad_luhn = atm.withdrawal(card(1), 1_000, "1234").with_fields(
        {2: demo_pan(1)[:-1] + str((int(demo_pan(1)[-1]) + 1) % 10)})
    assert (await atm.send(bad_luhn)).code == "14"


async def test_insufficient_funds_returns_balance(atm: AtmClient) -> None:
    ex = await atm.send(atm.withdrawal(card(6), 5_000, "1234"))
    assert ex.code == "51"
    assert balances(ex.response)["02"] == 1_000


async def test_declines_other_than_51_show_no_balances(atm: AtmClient) -> None:
    # The ledger reads the account whatever it decides; only an approval and 51 may
    # tell the cardholder what is in it, never a wrong PIN.
    wrong_pin = await atm.send(atm.balance_inquiry(card(25), "9999"))
    assert wrong_pin.code == "55"
    assert wrong_pin.response.get(54) is None
    limit = await atm.send(atm.withdrawal(card(13), 6_000, "1234"))
    assert limit.code == "61"
    assert limit.response.get(54) is None
    right = await atm.send(atm.balance_inquiry(card(25), "1234"))
    assert right.code == "00" and balances(right.response)["02"] == 100_000


async def test_amount_limits(atm: AtmClient) -> None:
    assert (await atm.send(atm.withdrawal(card(13), 6_000, "1234"))).code == "61"
    assert (await atm.send(atm.withdrawal(card(14), 6_000, "1234"))).code == "00"
    assert (await atm.send(atm.withdrawal(card(14), 6_000, "1234"))).code == "61"


async def test_frequency_limit(atm: AtmClient) -> None:
    assert (await atm.send(atm.withdrawal(card(7), 100, "1234"))).code == "00"
    assert (await atm.send(atm.withdrawal(card(7), 100, "1234"))).code == "00"
    assert (await atm.send(atm.withdrawal(card(7), 100, "1234"))).code == "65"


async def test_wrong_pin_then_tries_exceeded_then_admin_reset(
        atm: AtmClient, switch_proc: SwitchProcess) -> None:
    for _ in range(2):
        assert (await atm.send(atm.withdrawal(card(8), 1_000, "9999"))).code == "55"
    assert (await atm.send(atm.withdrawal(card(8), 1_000, "9999"))).code == "75"
    # Even the right PIN is refused now.
    assert (await atm.send(atm.withdrawal(card(8), 1_000, "1234"))).code == "75"
    result = await asyncio.to_thread(run_cli, ["card", "reset-pin-tries", demo_pan(8)],
                                     switch_proc.dsn)
    assert result.returncode == 0, result.stderr
    assert demo_pan(8) not in result.stdout + result.stderr
    assert (await atm.send(atm.withdrawal(card(8), 1_000, "1234"))).code == "00"


async def test_zero_amount_and_unsupported_transaction(atm: AtmClient) -> None:
    assert (await atm.send(atm.withdrawal(card(1), 0, "1234"))).code == "13"
    msg = atm.financial(card(1), processing="380000", amount=0, pin="1234")
    assert (await atm.send(msg)).code == "12"
    msg = atm.financial(card(1), processing="990000", amount=100, pin="1234")
    assert (await atm.send(msg)).code == "12"


async def test_missing_mandatory_field_is_format_error(atm: AtmClient) -> None:
    msg = atm.withdrawal(card(1), 1_000, "1234").with_fields({4: None})
    assert (await atm.send(msg)).code == "30"
    msg = atm.withdrawal(card(1), 1_000, "1234").with_fields({52: None})
    assert (await atm.send(msg)).code == "30"
    # No PAN at all (neither 2 nor 35) is a missing field, not an invalid card number.
    msg = atm.withdrawal(card(1), 1_000, "1234").with_fields({2: None, 35: None})
    assert (await atm.send(msg)).code == "30"
    msg = atm.withdrawal(card(1), 1_000, "1234").with_fields({2: None, 35: demo_pan(1)})
    assert (await atm.send(msg)).code == "30", "track 2 without separator is malformed"


async def test_fields_the_host_does_not_use_are_accepted(atm: AtmClient) -> None:
    # An EMV ATM's card sequence number, POS capture code, a fee, private fields.
    msg = atm.withdrawal(card(28), 500, "1234").with_fields(
        {23: "001", 26: "12", 28: "D00000000", 60: "network private 60",
         63: "ABC 123", 100: "12345", 123: "POS data", 127: "x" * 200})
    ex = await atm.send(msg)
    assert (ex.response.mti, ex.code) == ("0210", "00")
    assert all(ex.response.get(n) is None for n in (23, 26, 28, 60, 63, 100, 123, 127))


async def test_track_2_only_request_gets_field_2_in_the_answer(atm: AtmClient) -> None:
    msg = atm.balance_inquiry(card(9), "1234").with_fields({2: None})
    ex = await atm.send(msg)
    assert ex.code == "00"
    assert ex.response.get(2) == demo_pan(9)
    assert ex.response.get(35) is None


async def test_balance_inquiry_as_0100(atm: AtmClient) -> None:
    msg = atm.financial(card(9), processing="310000", amount=0, pin="1234", mti="0100")
    ex = await atm.send(msg)
    assert (ex.response.mti, ex.code) == ("0110", "00")
    assert "02" in balances(ex.response)


async def test_transfer_from_an_account_the_card_lacks_is_77(atm: AtmClient) -> None:
    # Card 9 has a checking account only: a transfer from savings names a missing account.
    msg = atm.financial(card(9), processing="401020", amount=100, pin="1234")
    assert (await atm.send(msg)).code == "77"


async def test_unknown_and_inactive_terminals(switch_proc: SwitchProcess) -> None:
    for tid, code in (("NOSUCH02", "03"), ("ATM00006", "58")):
        client = await connect(switch_proc, tid)
        try:
            ex = await client.send(client.withdrawal(card(1), 1_000, "1234"))
            assert ex.code == code, tid
            # The networks' order: the card (14, then its status) before the terminal.
            unknown = CardData(pan="4000000000000002", expiry="3012")
            assert (await client.send(client.withdrawal(unknown, 1_000, "1234"))).code == "14"
            assert (await client.send(client.withdrawal(card(2), 1_000, "1234"))).code == "41"
            expired = client.withdrawal(card(5, expiry="2001"), 1_000, "1234")
            assert (await client.send(expired)).code == "54"
        finally:
            await client.close()


async def test_hsm_fault_is_system_malfunction(switch_proc: SwitchProcess) -> None:
    # ATM00004 is configured for format 4 (AES) but holds a TDES TPK.
    client = await connect(switch_proc, "ATM00004")
    try:
        ex = await client.send(client.withdrawal(card(1), 1_000, "1234"))
        assert ex.code == "96"
    finally:
        await client.close()


async def test_pin_block_format_1(switch_proc: SwitchProcess) -> None:
    client = await connect(switch_proc, "ATM00005", pin_block_format=1)
    try:
        assert (await client.send(client.balance_inquiry(card(18), "1234"))).code == "00"
    finally:
        await client.close()


# -- duplicates and repeats --------------------------------------------------


async def test_repeat_replays_and_mismatch_is_94(atm: AtmClient) -> None:
    first = await atm.send(atm.withdrawal(card(12), 3_000, "1234"))
    assert first.code == "00"
    again = await atm.send(first.request)
    assert again.code == "00"
    assert again.response.get(38) == first.response.get(38)
    assert balances(again.response) == balances(first.response)
    repeat = await atm.send(atm.repeat_of(first.request))
    assert repeat.response.mti == "0210"
    assert repeat.code == "00"
    assert repeat.response.get(38) == first.response.get(38)
    changed = first.request.with_fields({4: f"{4_000:012d}"})
    assert (await atm.send(changed)).code == "94"
    after = await atm.send(atm.balance_inquiry(card(12), "1234"))
    assert balances(after.response)["01"] == 97_000, "posted exactly once"


async def test_duplicate_check_comes_before_the_terminal_state(
        switch_proc: SwitchProcess) -> None:
    """An approval whose answer was lost, sent again after the terminal signed off:
    the duplicate check comes first, so the stored 00 is replayed (a 58 would leave
    the cardholder debited for cash the ATM never dispensed)."""
    client = await connect(switch_proc, "ATM00002")   # requires sign-on
    try:
        assert (await client.send(client.network("001"))).code == "00"
        first = await client.send(client.withdrawal(card(28), 1_000, "1234"))
        assert first.code == "00"
        assert (await client.send(client.network("002"))).code == "00"
        again = await client.send(first.request)
        assert (again.code, again.response.get(38)) == ("00", first.response.get(38))
        changed = first.request.with_fields({4: f"{2_000:012d}"})
        assert (await client.send(changed)).code == "94"
        assert (await client.send(client.withdrawal(card(28), 1_000, "1234"))).code == "58"
    finally:
        await client.close()


# -- 0100 / 0220 ---------------------------------------------------------------


async def test_hold_then_completion(atm: AtmClient) -> None:
    hold = atm.financial(card(9), processing="010000", amount=5_000, pin="1234", mti="0100")
    ex = await atm.send(hold)
    assert ex.response.mti == "0110"
    assert ex.code == "00"
    assert balances(ex.response)["02"] == 95_000
    assert balances(ex.response)["01"] == 100_000
    completion = atm.financial(card(9), processing="010000", amount=4_000, pin=None,
                               mti="0220", extra={90: atm.reversal(hold).get(90) or ""})
    done = await atm.send(completion)
    assert done.response.mti == "0230"
    assert done.code == "00"
    after = await atm.send(atm.balance_inquiry(card(9), "1234"))
    assert balances(after.response)["01"] == 96_000
    assert balances(after.response)["02"] == 96_000


# -- 0400 / 0420 ---------------------------------------------------------------


async def test_full_and_partial_reversals(atm: AtmClient) -> None:
    first = await atm.send(atm.withdrawal(card(15), 10_000, "1234"))
    assert first.code == "00"
    rev = await atm.send(atm.reversal(first.request))
    assert rev.response.mti == "0430"
    assert rev.code == "00"
    repeat = await atm.send(atm.reversal(first.request, repeat=True))
    assert repeat.response.mti == "0430"  # a repeat is answered like its original
    assert repeat.code == "00"
    second = await atm.send(atm.withdrawal(card(15), 10_000, "1234"))
    assert second.code == "00"
    partial = await atm.send(atm.reversal(second.request, dispensed=4_000, advice=False))
    assert partial.response.mti == "0410"
    assert partial.code == "00"
    after = await atm.send(atm.balance_inquiry(card(15), "1234"))
    assert balances(after.response)["01"] == 100_000 - 4_000


async def test_reversal_without_original(atm: AtmClient) -> None:
    ghost = atm.withdrawal(card(16), 1_000, "1234")
    request = await atm.send(atm.reversal(ghost, advice=False))
    assert request.code == "00", "acknowledged (business.unmatched_reversal_code)"
    assert (await atm.send(ghost)).code != "00", "its tombstone declines the late original"
    ghost2 = atm.withdrawal(card(16), 1_000, "1234")
    advice = await atm.send(atm.reversal(ghost2))
    assert advice.code == "00"
    # The tombstone declines the late original.
    late = await atm.send(ghost2)
    assert late.code != "00"


async def test_partial_reversal_above_original_is_13(atm: AtmClient) -> None:
    first = await atm.send(atm.withdrawal(card(17), 1_000, "1234"))
    assert first.code == "00"
    before = balances(first.response)
    rev = await atm.send(atm.reversal(first.request, dispensed=5_000, advice=False))
    assert rev.code == "13"
    # An advice with the same impossible amount is refused too (13), and nothing moves.
    advice = await atm.send(atm.reversal(first.request, dispensed=5_000))
    assert (advice.response.mti, advice.code) == ("0430", "13")
    after = await atm.send(atm.balance_inquiry(card(17), "1234"))
    assert balances(after.response) == before
    # The right amount then reverses the whole withdrawal.
    assert (await atm.send(atm.reversal(first.request))).code == "00"
    again = await atm.send(atm.balance_inquiry(card(17), "1234"))
    assert balances(again.response)["01"] == before["01"] + 1_000


# -- wire variants ---------------------------------------------------------------


async def test_binary_profile_and_ascii_length_listener(switch_proc: SwitchProcess) -> None:
    client = await connect(switch_proc, "ATM00001", port=switch_proc.ports["binary"],
                           profile="binary", length_header="ascii4")
    try:
        assert (await client.send(client.network("301"))).code == "00"
        ex = await client.send(client.balance_inquiry(card(18), "1234"))
        assert ex.code == "00"
    finally:
        await client.close()


async def test_pipelined_requests_on_one_connection(atm: AtmClient) -> None:
    requests = [atm.balance_inquiry(card(18), "1234") for _ in range(20)]
    results = await asyncio.gather(*(atm.send(r) for r in requests))
    assert [r.code for r in results] == ["00"] * 20
    assert {r.response.get(11) for r in results} == {r.get(11) for r in requests}


async def test_over_the_in_flight_bound_sheds_with_91(switch_proc: SwitchProcess) -> None:
    client = await connect(switch_proc, "ATM00001", port=switch_proc.ports["tight"])
    try:
        requests = [client.balance_inquiry(card(18), "1234") for _ in range(10)]
        results = await asyncio.gather(*(client.send(r) for r in requests))
        codes = [r.code for r in results]
        assert "91" in codes
        assert set(codes) <= {"00", "91"}
    finally:
        await client.close()


async def test_many_concurrent_connections(switch_proc: SwitchProcess) -> None:
    clients = [AtmClient(atm_config(), stan_start=next_stan_start()) for _ in range(200)]
    await asyncio.gather(*(c.connect("127.0.0.1", switch_proc.port) for c in clients))
    try:
        results = await asyncio.gather(*(c.send(c.network("301"), timeout_s=30) for c in clients))
        assert all(r.code == "00" for r in results)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def test_pin_block_helper_matches_client() -> None:
    # The ATM client and the HSM's terminal helper build the same block.
    assert len(encrypt_pin_block(TPK, "1234", demo_pan(1), 0)) == 16


async def test_mac_required_terminal(switch_proc: SwitchProcess) -> None:
    from tests.e2e.harness import TAK

    client = await connect(switch_proc, "ATM00003")
    try:
        msg = client.balance_inquiry(card(18), "1234")
        assert (await client.send(msg)).code == "63", "no MAC"
        signed = client.with_mac(client.balance_inquiry(card(18), "1234"), TAK)
        ex = await client.send(signed)
        assert ex.code == "00"
        # The host MACs its answer too, under the same TAK.
        assert ex.response.get(64) is not None
        assert client.with_mac(ex.response, TAK).get(64) == ex.response.get(64)
        forged = client.with_mac(client.balance_inquiry(card(18), "1234"), TAK)
        forged = forged.with_fields({64: "0123456789ABCDEF"})
        assert (await client.send(forged)).code == "63"
        # A decline decided by the switch after the MAC verified is MACed as well.
        unknown = CardData(pan="4000000000000002", expiry="3012")
        ex = await client.send(client.with_mac(client.balance_inquiry(unknown, "1234"), TAK))
        assert ex.code == "14"
        assert ex.response.get(64) is not None
        assert client.with_mac(ex.response, TAK).get(64) == ex.response.get(64)
        assert (await client.send(client.with_mac(
            client.balance_inquiry(card(18), "1234"), TAK))).code == "00"
        # The card's status comes before the MAC in the networks' order: a lost card
        # with a bad MAC is 41, unsigned (nothing is signed for an unverified request).
        lost = client.with_mac(client.withdrawal(card(2), 1_000, "1234"), TAK)
        ex = await client.send(lost.with_fields({64: "0123456789ABCDEF"}))
        assert ex.code == "41" and ex.response.get(64) is None
    finally:
        await client.close()


@pytest.mark.parametrize("profile", ["ascii", "binary"])
async def test_mac_on_reversals_travels_in_field_128(switch_proc: SwitchProcess,
                                                     profile: str) -> None:
    """A 0400/0410 carries 90 (and 95), so its MAC is the last field of the secondary
    bitmap, 128: the host verifies it there and answers with its own MAC in 128."""
    from tests.e2e.harness import TAK

    port = switch_proc.ports["binary"] if profile == "binary" else None
    extra = {"profile": "binary", "length_header": "ascii4"} if profile == "binary" else {}
    client = await connect(switch_proc, "ATM00003", port=port, **extra)
    try:
        pan = card(26 if profile == "ascii" else 27)
        withdrawal = client.with_mac(client.withdrawal(pan, 3_000, "1234"), TAK)
        assert (await client.send(withdrawal)).code == "00"
        reversal = client.with_mac(
            client.reversal(withdrawal, dispensed=1_000, advice=False), TAK)
        assert reversal.get(128) is not None and reversal.get(64) is None
        ex = await client.send(reversal)
        assert (ex.response.mti, ex.code) == ("0410", "00")
        mac = ex.response.get(128)
        assert mac is not None and ex.response.get(64) is None
        assert client.with_mac(ex.response, TAK).get(128) == mac
        assert balances(ex.response)["01"] == 100_000 - 1_000
    finally:
        await client.close()


async def test_terminal_wrong_pin_rate_limit(switch_proc: SwitchProcess) -> None:
    # The e2e host allows 6 wrong PINs per terminal per window (config): spread
    # over three cards, no card reaches its own limit, the terminal does.
    client = await connect(switch_proc, "ATM00008")
    try:
        for n in (19, 20, 21):
            for _ in range(2):
                assert (await client.send(client.withdrawal(card(n), 100, "9999"))).code == "55"
        ex = await client.send(client.withdrawal(card(22), 100, "1234"))
        assert ex.code == "58"
        other = await connect(switch_proc, "ATM00001")
        try:
            assert (await other.send(other.withdrawal(card(22), 100, "1234"))).code == "00"
        finally:
            await other.close()
    finally:
        await client.close()


async def test_frozen_account_is_not_permitted(atm: AtmClient,
                                               switch_proc: SwitchProcess) -> None:
    import psycopg

    from switch.keys import DEMO_DATA_KEY
    from switch.provisioning import account_ref

    code = f"CH:{account_ref(DEMO_DATA_KEY, demo_pan(23))}-20"  # the ledger's account code

    def freeze() -> int:
        with psycopg.connect(switch_proc.dsn, autocommit=True) as conn:
            return conn.execute("UPDATE accounts SET status = 'frozen' WHERE code = %s",
                                (code,)).rowcount

    assert (await atm.send(atm.withdrawal(card(23), 100, "1234"))).code == "00"
    assert await asyncio.to_thread(freeze) == 1
    assert (await atm.send(atm.withdrawal(card(23), 100, "1234"))).code == "57"


async def test_repeats_of_hold_and_completion(atm: AtmClient) -> None:
    hold = atm.financial(card(24), processing="010000", amount=1_000, pin="1234", mti="0100")
    first = await atm.send(hold)
    assert first.code == "00"
    repeat = await atm.send(atm.repeat_of(hold))
    assert repeat.response.mti == "0110"
    assert repeat.response.get(38) == first.response.get(38)
    completion = atm.financial(card(24), processing="010000", amount=1_000, pin=None,
                               mti="0220", extra={90: atm.reversal(hold).get(90) or ""})
    assert (await atm.send(completion)).code == "00"
    again = await atm.send(atm.repeat_of(completion))
    assert again.response.mti == "0230"
    assert again.code == "00"
    after = await atm.send(atm.balance_inquiry(card(24), "1234"))
    assert balances(after.response)["01"] == 99_000, "completed once"


async def test_deposit_and_transfer_between_own_accounts(atm: AtmClient) -> None:
    c = card(10)  # checking 100,000 and savings 30,000
    before = await atm.send(atm.balance_inquiry(c, "1234", account="20"))
    checking = balances(before.response)["01"]
    deposit = atm.financial(c, processing="210020", amount=5_000, pin="1234")
    ex = await atm.send(deposit)
    assert ex.code == "00"
    assert balances(ex.response)["01"] == checking + 5_000
    transfer = atm.financial(c, processing="402010", amount=7_000, pin="1234")
    ex = await atm.send(transfer)
    assert ex.code == "00"
    after_checking = await atm.send(atm.balance_inquiry(c, "1234", account="20"))
    after_savings = await atm.send(atm.balance_inquiry(c, "1234", account="10"))
    assert balances(after_checking.response)["01"] == checking + 5_000 - 7_000
    assert balances(after_savings.response)["01"] == 30_000 + 7_000
    # A transfer to an account the card does not have.
    lone = card(17)
    ex = await atm.send(atm.financial(lone, processing="402010", amount=100, pin="1234"))
    assert ex.code in ("76", "53")


async def test_reversal_of_a_hold_releases_it(atm: AtmClient) -> None:
    c = card(21)
    hold = atm.financial(c, processing="010000", amount=4_000, pin="1234", mti="0100")
    ex = await atm.send(hold)
    assert ex.code == "00"
    assert balances(ex.response)["02"] == 100_000 - 4_000
    rev = await atm.send(atm.reversal(hold, advice=False))
    assert rev.code == "00"
    after = await atm.send(atm.balance_inquiry(c, "1234"))
    assert balances(after.response)["02"] == 100_000
    assert balances(after.response)["01"] == 100_000


async def test_completion_without_a_hold_is_acknowledged(atm: AtmClient) -> None:
    c = card(22)
    orphan = atm.financial(c, processing="010000", amount=1_500, pin=None, mti="0220")
    ex = await atm.send(orphan)
    assert ex.response.mti == "0230"
    assert ex.code == "00"


async def test_unsupported_mti_class(atm: AtmClient) -> None:
    msg = atm.financial(card(1), processing="010000", amount=100, pin=None, mti="0600")
    raw_answer = await atm.send(msg)
    assert raw_answer.response.mti == "0610"
    assert raw_answer.code == "12"


async def test_reversal_by_rrn_only_leaves_a_tombstone(atm: AtmClient) -> None:
    # An acquirer that zero-fills field 90 names the original by terminal + RRN.
    ghost = atm.withdrawal(card(19), 1_000, "1234")
    advice = atm.reversal(ghost).with_fields({90: "0" * 42})
    assert (await atm.send(advice)).code == "00"
    late = await atm.send(ghost)
    assert late.code == "05", "the late original is declined, never posted"
    assert late.response.get(38) is None
    # An unrelated withdrawal at the same terminal is unaffected.
    assert (await atm.send(atm.withdrawal(card(19), 1_000, "1234"))).code == "00"


def test_atm_cli_withdraw_then_reverse_later(switch_proc: SwitchProcess) -> None:
    import subprocess
    import sys

    def atm_cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "switch.cli", "atm", "--connect",
             f"127.0.0.1:{switch_proc.port}", *args],
            capture_output=True, text=True, timeout=60, check=False)
        return result.stdout + result.stderr

    pan = demo_pan(25)
    out = atm_cli("withdraw", "--pan", pan, "--pin", "1234", "--amount", "3000")
    assert "39=00" in out, out
    fields = dict(part.split("=", 1) for part in out.split() if part.count("=") == 1
                  and part.split("=")[0] in ("STAN", "time", "RRN"))
    out = atm_cli("reverse", "--pan", pan, "--amount", "3000", "--stan", fields["STAN"],
                  "--time", fields["time"], "--rrn", fields["RRN"], "--dispensed", "1000")
    assert "0430 39=00" in out, out
    out = atm_cli("balance", "--pan", pan, "--pin", "1234")
    assert "2001840C000000099000" in out, out  # 100,000 - 3,000 + 2,000 given back
