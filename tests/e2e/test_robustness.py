"""Malformed input, disconnects, metrics and shutdown against a real switch process."""

from __future__ import annotations

import asyncio
import struct

import pytest
from prometheus_client.parser import text_string_to_metric_families

from messages.codec import decode, encode
from messages.profiles import ASCII
from switch.atm import AtmClient, AtmError, CardData
from switch.demo import demo_pan
from tests.e2e.conftest import atm_config, next_stan_start
from tests.e2e.harness import SwitchProcess

pytestmark = pytest.mark.e2e


def frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


async def raw_connection(proc: SwitchProcess) -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proc.port)


async def echo_still_works(proc: SwitchProcess) -> None:
    client = AtmClient(atm_config(), stan_start=next_stan_start())
    await client.connect("127.0.0.1", proc.port)
    try:
        assert (await client.send(client.network("301"))).code == "00"
    finally:
        await client.close()


async def test_garbage_frames_do_not_hurt_the_server(switch_proc: SwitchProcess) -> None:
    reader, writer = await raw_connection(switch_proc)
    for payload in (b"", b"\x00" * 7, b"0200zzzz", b"9999" + b"F" * 16, bytes(range(256))):
        writer.write(frame(payload))
    await writer.drain()
    # A keep-alive is never answered, garbage gets no answer: nothing comes back.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.5)
    writer.close()
    await echo_still_works(switch_proc)


async def test_decodable_message_with_bad_fields_gets_30(switch_proc: SwitchProcess) -> None:
    client = AtmClient(atm_config(), stan_start=next_stan_start())
    msg = client.withdrawal(CardData(demo_pan(1), "3012"), 1_000, "1234")
    payload = encode(msg.with_fields({49: "777"}), ASCII)
    assert payload.count(b"777") == 1
    # Letters in a numeric field: our own encoder refuses that, so patch the bytes.
    payload = payload.replace(b"777", b"ABC")
    reader, writer = await raw_connection(switch_proc)
    try:
        writer.write(frame(payload))
        await writer.drain()
        length = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), 10))[0]
        answer = decode(await asyncio.wait_for(reader.readexactly(length), 10), ASCII)
    finally:
        writer.close()
    assert answer.mti == "0210"
    assert answer.get(39) == "30"
    assert answer.get(11) == msg.get(11)
    assert answer.get(49) is None, "the field that cannot be echoed is left out"


async def test_oversized_frame_closes_only_that_connection(
        switch_proc: SwitchProcess) -> None:
    reader, writer = await raw_connection(switch_proc)
    writer.write(struct.pack(">H", 60_000) + b"x" * 100)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(100), 5.0)
    assert data == b"", "the connection is closed"
    writer.close()
    await echo_still_works(switch_proc)


async def test_disconnect_mid_frame_and_mid_request(switch_proc: SwitchProcess) -> None:
    client = AtmClient(atm_config(), stan_start=next_stan_start())
    msg = client.withdrawal(CardData(demo_pan(18), "3012"), 1_000, "1234")
    payload = encode(msg, ASCII)
    # Mid-frame: half a message, then gone.
    _, writer = await raw_connection(switch_proc)
    writer.write(frame(payload)[: len(payload) // 2])
    await writer.drain()
    writer.close()
    # Mid-request: a whole request, then gone before the answer.
    _, writer = await raw_connection(switch_proc)
    writer.write(frame(payload))
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.5)
    await echo_still_works(switch_proc)
    # The abandoned withdrawal was committed (commit before respond) and a
    # repeat of it replays the stored answer instead of posting again.
    await client.connect("127.0.0.1", switch_proc.port)
    try:
        first = await client.send(msg)
        again = await client.send(client.repeat_of(msg))
        assert first.code == again.code == "00"
        assert first.response.get(38) == again.response.get(38)
    finally:
        await client.close()


async def test_metrics_page_parses_and_has_the_documented_metrics(
        switch_proc: SwitchProcess) -> None:
    await echo_still_works(switch_proc)
    text = await asyncio.to_thread(switch_proc.metrics_text)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("atm_switch_messages", "atm_switch_authorization_duration_seconds",
                 "atm_switch_in_flight_requests", "atm_switch_connections",
                 "atm_switch_ledger_retries", "atm_switch_hsm_errors",
                 "atm_switch_decode_errors", "atm_switch_load_shed",
                 "atm_switch_ledger_batch_operations", "atm_switch_ledger_set_wise_operations",
                 "atm_switch_gc_pause_seconds", "atm_switch_cache_misses",
                 "atm_switch_ledger_commit_seconds"):
        assert name in families, name
    # The collector's pauses are timed per generation from start-up on.
    assert {s.labels.get("generation") for s in families["atm_switch_gc_pause_seconds"].samples
            if s.name.endswith("_count")} == {"0", "1", "2"}
    samples = families["atm_switch_messages"].samples
    assert any(s.labels.get("mti") == "0800" and s.labels.get("response_code") == "00"
               for s in samples)
    for family in families.values():
        for sample in family.samples:
            for value in sample.labels.values():
                assert not value.startswith("4761739"), "no PAN in labels"
                assert not value.startswith("ATM0"), "no terminal id in labels"


async def test_health_endpoints(switch_proc: SwitchProcess) -> None:
    import urllib.request

    def status(path: str) -> int:
        with urllib.request.urlopen(switch_proc.url(path), timeout=5) as resp:
            return int(resp.status)

    for path in ("/healthz", "/readyz"):
        assert await asyncio.to_thread(status, path) == 200


async def test_client_timeout_raises_cleanly(switch_proc: SwitchProcess) -> None:
    client = AtmClient(atm_config(), stan_start=next_stan_start())
    with pytest.raises(AtmError):
        await client.connect("127.0.0.1", 1, timeout_s=1.0)


async def test_a_burst_of_frames_in_one_write_is_answered_whole(
        switch_proc: SwitchProcess) -> None:
    # Far more frames than one connection handles per pass of the event loop (the
    # rest wait for the next pass, other connections go in between): every one
    # is answered, and a connected ATM is served meanwhile.
    client = AtmClient(atm_config(), stan_start=next_stan_start())
    echoes = [client.network("301") for _ in range(50)]   # in-flight bound per connection: 64
    reader, writer = await raw_connection(switch_proc)
    try:
        writer.write(b"".join(frame(encode(msg, ASCII)) for msg in echoes))
        await writer.drain()
        await echo_still_works(switch_proc)
        stans = set()
        for _ in echoes:
            length = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), 10))[0]
            answer = decode(await asyncio.wait_for(reader.readexactly(length), 10), ASCII)
            assert (answer.mti, answer.get(39)) == ("0810", "00")
            stans.add(answer.get(11))
    finally:
        writer.close()
    assert stans == {msg.get(11) for msg in echoes}
