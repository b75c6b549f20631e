"""The switch's own Python per request, without the network or the database.

One 0200 withdrawal as the switch handles it once its bytes have arrived: decode,
the pipeline (request view, terminal and card from memory, soft-HSM PIN check,
the ledger call answered from memory, the 0210 built), encode and frame. The
ledger and the caches are stand-ins that answer at once, so what is timed is the
Python the switch runs for every authorization, apart from the sockets, asyncpg
and the group commit.

Why it exists: the end-to-end figures on a shared virtual machine move by a third
from one hour to the next (other guests, stolen time); this one is the minimum
over several rounds of one process on one core, so a change to the request path
shows here even when the end-to-end run cannot resolve it.

    python -m benchmarks.request_path [--requests N] [--rounds N]

Prints one JSON line: microseconds per request (minimum and median over the
rounds). A benchmark, not a test: nothing is asserted but that the answers are
approvals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Sequence

from benchmarks.hsm_bench import PVK_HEX
from benchmarks.hsm_bench import TPK_TDES_HEX as TPK_HEX
from hsm.interface import AsyncSoftHsm
from hsm.keys import KeyAlgorithm, KeyUsage, MasterKey
from hsm.soft import SoftHsm
from ledger.model import (
    CardRecord,
    CardStatus,
    Operation,
    Outcome,
    Result,
    TerminalRecord,
)
from messages.codec import decode, encode
from messages.framing import LengthHeader, encode_frame
from messages.profiles import get_profile
from switch.atm import AtmClient, AtmConfig, CardData
from switch.metrics import Metrics
from switch.pipeline import Pipeline, PipelineSettings, Session

PAN = "4761739001010010"
PIN = "1111"


class _MemoryLedger:
    """Answers the pipeline's three calls at once (the one terminal, the one card,
    an approval); counts the operations it was given."""

    def __init__(self, terminal: TerminalRecord, card: CardRecord) -> None:
        self._terminal = terminal
        self._card = card
        self.operations = 0
        self._approved = Result(outcome=Outcome.APPROVED, replayed=False,
                                approval_code="123456", account_type="20", currency="840",
                                ledger_balance=100_000, available_balance=90_000,
                                authorization_id=1)

    async def terminal(self, terminal_id: str) -> TerminalRecord | None:
        return self._terminal if terminal_id == self._terminal.terminal_id else None

    async def card_by_pan(self, pan: str) -> CardRecord | None:
        return self._card

    async def authorize(self, op: Operation) -> Result:
        self.operations += 1
        return self._approved


def _setup(requests: int) -> tuple[Pipeline, _MemoryLedger, list[bytes]]:
    soft = SoftHsm(MasterKey.demo())
    tpk = soft.import_clear_key(KeyUsage.TPK, KeyAlgorithm.TDES2, TPK_HEX)
    pvk = soft.import_clear_key(KeyUsage.PVK, KeyAlgorithm.TDES2, PVK_HEX)
    terminal = TerminalRecord(terminal_id="ATM00001", acquirer_id="654321", status="active",
                              tpk=tpk.to_text(), tmk=None, tak=None, pin_block_format=0,
                              sign_on_required=False, mac_required=False, profile="ascii",
                              currency="840")
    card = CardRecord(card_id=7, expiry="3012", status=CardStatus.ACTIVE, pin_method="pvv",
                      pvv=soft.generate_pvv(pvk, PAN, "1", PIN), pvki="1", pin_offset=None,
                      pin_tries=0, account_types=("20",), default_account_type="20")
    ledger = _MemoryLedger(terminal, card)
    pipeline = Pipeline(ledger, AsyncSoftHsm(soft), pvk, Metrics(),
                        PipelineSettings())
    profile = get_profile("ascii")
    atm = AtmClient(AtmConfig(terminal_id="ATM00001", acquirer_id="654321", tpk_hex=TPK_HEX))
    frames = [encode(atm.withdrawal(CardData(PAN, "3012"), 2000, PIN), profile)
              for _ in range(requests)]
    return pipeline, ledger, frames


async def _rounds(pipeline: Pipeline, frames: Sequence[bytes], rounds: int) -> list[float]:
    profile = get_profile("ascii")
    session = Session(peer="bench", profile=profile)
    header = LengthHeader.BINARY2

    async def one(raw: bytes) -> str | None:
        answer = await pipeline.handle(decode(raw, profile), session, raw)
        assert answer is not None
        encode_frame(encode(answer, profile), length_header=header)
        return answer.get(39)

    for raw in frames[:200]:  # warm-up: caches, the HSM's unwrapped keys
        code = await one(raw)
        assert code == "00", code
    per_request: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        for raw in frames:
            await one(raw)
        per_request.append((time.perf_counter() - start) / len(frames))
    return per_request


def run(requests: int, rounds: int) -> dict[str, object]:
    pipeline, ledger, frames = _setup(requests)
    try:
        import uvloop

        times = uvloop.run(_rounds(pipeline, frames, rounds))
    except ImportError:
        times = asyncio.run(_rounds(pipeline, frames, rounds))
    best_us = min(times) * 1e6
    return {
        "benchmark": "request_path",
        "requests_per_round": requests,
        "rounds": rounds,
        "us_per_request_min": round(best_us, 1),
        "us_per_request_median": round(sorted(times)[len(times) // 2] * 1e6, 1),
        "ledger_operations": ledger.operations,
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    print(json.dumps(run(args.requests, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
