"""A third-party codec talks to the host: pyiso8583's own published specs
(`default_ascii` and `default`), with none of this project's codec on the
client side. Our two profiles are those specs, field for field."""

from __future__ import annotations

import asyncio
import datetime as dt
import struct

import iso8583
import pytest
from iso8583.specs import default, default_ascii

from hsm.terminal import encrypt_pin_block
from switch.demo import demo_pan
from tests.e2e.conftest import next_stan_start
from tests.e2e.harness import ACQUIRER, TPK, SwitchProcess

pytestmark = pytest.mark.e2e


Spec = dict[str, dict[str, object]]


async def exchange(port: int, doc: dict[str, str], spec: Spec,
                   ascii_length: bool) -> dict[str, str]:
    raw, _ = iso8583.encode(doc, spec)
    header = f"{len(raw):04d}".encode() if ascii_length else struct.pack(">H", len(raw))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(header + bytes(raw))
        await writer.drain()
        size_bytes = await asyncio.wait_for(reader.readexactly(len(header)), 10)
        size = int(size_bytes) if ascii_length else struct.unpack(">H", size_bytes)[0]
        answer, _ = iso8583.decode(await asyncio.wait_for(reader.readexactly(size), 10), spec)
        return {k: v for k, v in answer.items() if isinstance(v, str)}
    finally:
        writer.close()


def withdrawal(stan: int, n: int) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    pan = demo_pan(n)
    pin_block = encrypt_pin_block(TPK, "1234", pan, 0)
    return {
        "t": "0200", "2": pan, "3": "010000", "4": "000000001000",
        "7": now.strftime("%m%d%H%M%S"), "11": f"{stan:06d}", "12": now.strftime("%H%M%S"),
        "13": now.strftime("%m%d"), "14": "3012", "18": "6011", "22": "021", "25": "02",
        "32": ACQUIRER, "35": f"{pan}D30121010000000000", "37": f"{stan:012d}",
        "41": "ATM00001", "42": "INTEROP00000001", "43": "Interop test ATM".ljust(40),
        "49": "840", "52": pin_block,  # pyiso8583 takes hex text for a binary field too
    }


def listener(proc: SwitchProcess, spec_name: str) -> tuple[Spec, int, bool]:
    """The pyiso8583 spec, the port that speaks it and whether its length is ASCII."""
    if spec_name == "default_ascii":
        return default_ascii, proc.port, False
    # The binary profile listener of the e2e host uses a 4-digit ASCII length.
    return default, proc.ports["binary"], True


def network(stan: int, code: str) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {"t": "0800", "7": now.strftime("%m%d%H%M%S"), "11": f"{stan:06d}", "70": code}


@pytest.mark.parametrize("spec_name", ["default_ascii", "default"])
async def test_pyiso8583_published_specs(switch_proc: SwitchProcess, spec_name: str) -> None:
    stan = next_stan_start()
    spec, port, ascii_length = listener(switch_proc, spec_name)
    answer = await exchange(port, network(stan, "301"), spec, ascii_length)
    assert answer["t"] == "0810"
    assert answer["39"] == "00"
    answer = await exchange(port, withdrawal(stan + 1, 18), spec, ascii_length)
    assert answer["t"] == "0210"
    assert answer["39"] == "00", answer.get("39")
    assert answer["11"] == f"{stan + 1:06d}"
    assert len(answer["38"]) == 6
    assert "54" in answer


@pytest.mark.parametrize("spec_name", ["default_ascii", "default"])
async def test_pyiso8583_network_sign_on_unused_fields_and_reversal(
        switch_proc: SwitchProcess, spec_name: str) -> None:
    """What a third-party acquirer sends beyond the basics: a link sign-on without a
    terminal, EMV and private fields the host does not use, and a 0420 naming its
    original in field 90 with a partial amount in 95."""
    stan = next_stan_start()
    spec, port, ascii_length = listener(switch_proc, spec_name)
    answer = await exchange(port, network(stan, "001"), spec, ascii_length)
    assert (answer["t"], answer["39"]) == ("0810", "00")
    original = withdrawal(stan + 1, 19)
    original.update({"23": "001", "60": "private", "123": "POS data"})
    answer = await exchange(port, original, spec, ascii_length)
    assert (answer["t"], answer["39"]) == ("0210", "00"), answer.get("39")
    assert "23" not in answer and "60" not in answer
    reversal = {k: v for k, v in original.items() if k not in ("52", "23", "60", "123")}
    reversal.update({
        "t": "0420", "11": f"{stan + 2:06d}",
        "90": "0200" + original["11"] + original["7"] + ACQUIRER.rjust(11, "0") + "0" * 11,
        "95": "000000000400" + "000000000400" + "C00000000" + "C00000000",
    })
    answer = await exchange(port, reversal, spec, ascii_length)
    assert (answer["t"], answer["39"]) == ("0430", "00")
