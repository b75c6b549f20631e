"""Fuzz the messages contract: any bytes decode to an IsoMessage or raise DecodeError,
and a view's from_iso either returns the view or raises FieldError. Nothing else.

Inputs are a third purely random bytes, a third mutations of valid messages of
every view in both profiles (byte flips, inserts, deletions, truncation, bitmap
bit flips, length-prefix edits, splices of two messages), and a third
well-formed messages with random fields and random (format-valid) content, so
that view parsing sees every kind of missing and wrong field.

    python -m benchmarks.fuzz_messages [--count N] [--seed S]

Prints the counts; exits 1 if the contract was broken (the offending input is
printed in hex: it is synthetic data, never a real card).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from messages.codec import IsoMessage, decode, encode
from messages.errors import DecodeError, FieldError, FramingError
from messages.fields import (
    AdditionalAmount,
    OriginalData,
    PinBlock,
    ProcessingCode,
    ReplacementAmounts,
    Track2,
)
from messages.framing import Framer, LengthHeader
from messages.mti import Mti
from messages.profiles import ASCII, BINARY, FIELD_DEFS, FieldKind, Profile
from messages.views import (
    NetworkRequest,
    NetworkResponse,
    ReversalRequest,
    TransactionRequest,
    TransactionResponse,
    respond,
)

PROFILES = (ASCII, BINARY)
VIEWS: tuple[Callable[[IsoMessage], object], ...] = (
    TransactionRequest.from_iso,
    ReversalRequest.from_iso,
    NetworkRequest.from_iso,
    TransactionResponse.from_iso,
    NetworkResponse.from_iso,
)
SYNTHETIC_PAN = "4761739001010010"  # a published test card number


class ContractBroken(AssertionError):
    pass


@dataclass
class FuzzReport:
    inputs: int = 0
    random_inputs: int = 0
    mutated_inputs: int = 0
    generated_inputs: int = 0
    decoded: int = 0
    decode_errors: int = 0
    views_parsed: int = 0
    field_errors: int = 0
    framer_streams: int = 0
    framing_errors: int = 0
    decode_error_fields: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        top = ", ".join(f"{k}: {v}" for k, v in self.decode_error_fields.most_common(8))
        return [
            f"inputs            {self.inputs} ({self.random_inputs} random, "
            f"{self.mutated_inputs} mutated, {self.generated_inputs} generated)",
            f"decoded           {self.decoded}",
            f"decode errors     {self.decode_errors}",
            f"views parsed      {self.views_parsed}",
            f"field errors      {self.field_errors}",
            f"framer streams    {self.framer_streams} ({self.framing_errors} framing errors)",
            f"error locations   {top}",
            f"time              {self.seconds:.2f} s ({rate:,.0f} inputs/s)",
            "contract          held",
        ]


def seed_messages() -> list[IsoMessage]:
    """Valid messages of every view, built through the views themselves."""
    request = TransactionRequest(
        mti=Mti.parse("0200"),
        pan=Track2.parse(SYNTHETIC_PAN + "=2712201").pan,
        processing=ProcessingCode("01", "10", "00"),
        amount=20000,
        currency="840",
        transmission_dt="1124031502",
        stan="000002",
        acquirer_id="123456",
        terminal_id="ATM00001",
        rrn="432803000002",
        track2=Track2.parse(SYNTHETIC_PAN + "=27122011234500000"),
        expiry="2712",
        pin_block=PinBlock("8C2A4D7E91F03B56"),
        local_time="031502",
        local_date="1124",
        card_acceptor_location="MAIN ST BRANCH          SPRINGFIELD   US",
        icc_data="9F2608AABBCCDDEEFF0011",
        mac="0011223344556677",
    )
    original = OriginalData("0200", "000002", "1124031502", "123456")
    reversal = ReversalRequest(
        **{
            name: getattr(request, name)
            for name in ("pan", "processing", "amount", "currency", "transmission_dt", "stan",
                         "acquirer_id", "terminal_id", "rrn")
        },
        mti=Mti.parse("0420"),
        original=original,
        replacement=ReplacementAmounts(10000, 10000),
        response_code="22",
    )
    sign_on = NetworkRequest(
        mti=Mti.parse("0800"), transmission_dt="1124031500", stan="000001", info_code="001",
        terminal_id="ATM00001", additional_data=None,
    )
    balances = [AdditionalAmount("10", "01", "840", 980000), AdditionalAmount("10", "02", "840", 5)]
    messages = [request.to_iso(), reversal.to_iso(), sign_on.to_iso()]
    messages.append(respond(messages[0], "00", approval_code="A1B2C3", additional_amounts=balances))
    messages.append(respond(messages[1], "00"))
    messages.append(respond(messages[2], "00"))
    return messages


def _flip_bitmap_bit(data: bytearray, rng: random.Random, binary: bool) -> None:
    """A field appears or vanishes."""
    if binary and len(data) >= 12:
        data[4 + rng.randrange(8)] ^= 1 << rng.randrange(8)
    elif not binary and len(data) >= 20:
        at = 4 + rng.randrange(16)
        data[at] = ord(rng.choice("0123456789ABCDEFabcdef"))


_ALPHABETS = {
    FieldKind.NUMERIC: "0123456789",
    FieldKind.TEXT: "".join(chr(c) for c in range(0x20, 0x7F)),
    FieldKind.TRACK: "0123456789=DF",
    FieldKind.BINARY: "0123456789ABCDEF",
}
_MTIS = ("0100", "0101", "0200", "0201", "0220", "0221", "0400", "0401", "0420", "0421",
         "0800", "0110", "0210", "0230", "0410", "0430", "0810")


def _generated(rng: random.Random, profile: Profile) -> bytes:
    """A well-formed message: random MTI, random set of fields, random valid content."""
    fields = {}
    for number in rng.sample(sorted(FIELD_DEFS), rng.randint(0, 20)):
        d = FIELD_DEFS[number]
        size = d.length if d.prefix == 0 else rng.randint(0, min(d.length, 40))
        if d.kind is FieldKind.BINARY:
            size *= 2
        fields[number] = "".join(rng.choice(_ALPHABETS[d.kind]) for _ in range(size))
    return encode(IsoMessage(rng.choice(_MTIS), fields), profile)


def _mutate(raw: bytes, rng: random.Random, others: Sequence[bytes], binary: bool) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not data:
            break
        at = rng.randrange(len(data))
        action = rng.randrange(8)
        if action == 0:
            data[at] = rng.randrange(256)
        elif action == 1:
            data.insert(at, rng.randrange(256))
        elif action == 2:
            del data[at]
        elif action == 3:
            del data[at:]
        elif action == 4:
            _flip_bitmap_bit(data, rng, binary)
        elif action == 5:  # a digit becomes another digit: length prefixes, values
            if 0x30 <= data[at] <= 0x39:
                data[at] = 0x30 + rng.randrange(10)
        elif action == 6:  # splice with another message
            other = rng.choice(others)
            data[at:] = other[rng.randrange(len(other)) :]
        else:
            data[at] = data[at] ^ 0x20  # case flip of letters, printable to control
    return bytes(data)


def _check_one(data: bytes, profile: Profile, report: FuzzReport) -> None:
    try:
        msg = decode(data, profile)
    except DecodeError as error:
        report.decode_errors += 1
        report.decode_error_fields["-" if error.field is None else str(error.field)] += 1
        return
    except Exception as error:
        raise ContractBroken(
            f"decode raised {type(error).__name__} for {profile.name} input {data.hex()}"
        ) from error
    if not isinstance(msg, IsoMessage):
        raise ContractBroken(f"decode returned {type(msg).__name__}")
    report.decoded += 1
    for parse in VIEWS:
        try:
            parse(msg)
        except FieldError:
            report.field_errors += 1
        except Exception as error:
            raise ContractBroken(
                f"{parse.__qualname__} raised {type(error).__name__} for {profile.name} "
                f"input {data.hex()}"
            ) from error
        else:
            report.views_parsed += 1


def _check_framer(stream: bytes, rng: random.Random, report: FuzzReport) -> None:
    framer = Framer(rng.choice(list(LengthHeader)), tpdu=rng.random() < 0.3, frame_bytes_max=512)
    report.framer_streams += 1
    position = 0
    try:
        while position < len(stream):
            step = rng.randint(1, 64)
            framer.feed(stream[position : position + step])
            position += step
            while True:
                try:
                    if framer.next_frame() is None:
                        break
                except FramingError as error:
                    if type(error).__name__ != "EmptyFrame":
                        raise
        framer.eof()
    except FramingError:
        report.framing_errors += 1
    except Exception as error:
        raise ContractBroken(f"framer raised {type(error).__name__} for {stream.hex()}") from error


def run(count: int, seed: int = 0) -> FuzzReport:
    """Run ``count`` inputs; raises ContractBroken on the first violation."""
    rng = random.Random(seed)
    report = FuzzReport()
    started = time.perf_counter()
    seeds = {p.name: [encode(m, p) for m in seed_messages()] for p in PROFILES}
    for index in range(count):
        profile = PROFILES[index % 2]
        kind = rng.randrange(3)
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 300))
            if rng.random() < 0.5:  # a plausible start gets random bytes past the MTI check
                data = rng.choice(("0200", "0420", "0800", "0210")).encode() + data
            report.random_inputs += 1
        elif kind == 1:
            pool = seeds[profile.name]
            data = _mutate(rng.choice(pool), rng, pool, profile.binary)
            report.mutated_inputs += 1
        else:
            data = _generated(rng, profile)
            report.generated_inputs += 1
        report.inputs += 1
        _check_one(data, profile, report)
        if index % 20 == 0:
            _check_framer(rng.randbytes(rng.randrange(0, 400)), rng, report)
    report.seconds = time.perf_counter() - started
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_messages")
    parser.add_argument("--count", type=int, default=100_000, help="inputs to try")
    parser.add_argument("--seed", type=int, default=0, help="random seed (runs are repeatable)")
    args = parser.parse_args(argv)
    try:
        report = run(args.count, args.seed)
    except ContractBroken as broken:
        print(f"CONTRACT BROKEN: {broken}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
