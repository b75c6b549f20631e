"""Hostile frames for the live-server fuzz test: random bytes and mutations of
valid messages (flipped, truncated, oversized fields, wrong lengths, bad bitmaps).

Pure and seeded: `FrameFuzzer(seed).frames(n)` yields wire bytes (length
header included) and the name of the mutation, so a failure can be replayed.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator, Sequence

from messages.codec import IsoMessage, encode
from messages.profiles import ASCII
from switch.atm import AtmClient, CardData

HEX = b"0123456789ABCDEF"
BITMAP_AT = 4          # ascii profile: MTI (4) then the primary bitmap as 16 hex digits
BITMAP_HEX = 16


def base_messages(client: AtmClient, cards: Sequence[CardData], pin: str) -> list[IsoMessage]:
    """Valid messages of every class, as the fuzz terminal would send them."""
    msgs: list[IsoMessage] = []
    for card in cards:
        wd = client.withdrawal(card, 100, pin)
        msgs += [
            wd,
            client.repeat_of(wd),
            client.balance_inquiry(card, pin),
            client.financial(card, processing="012000", amount=200, pin=pin, mti="0100"),
            client.financial(card, processing="210000", amount=300, pin=pin),
            client.financial(card, processing="402010", amount=300, pin=pin),
            client.financial(card, processing="010000", amount=100, pin=None, mti="0220"),
            client.reversal(wd),
            client.reversal(wd, dispensed=50, advice=False),
        ]
    for code in ("001", "002", "161", "201", "301", "999"):
        msgs.append(client.network(code))
    return msgs


def frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload) & 0xFFFF) + payload


class FrameFuzzer:
    def __init__(self, seed: int, payloads: Sequence[bytes], frame_bytes_max: int) -> None:
        assert payloads
        self.rng = random.Random(seed)
        self.payloads = list(payloads)
        self.frame_bytes_max = frame_bytes_max
        self._mutations = (
            (self.flip_bits, 14), (self.replace_bytes, 12), (self.truncate, 12),
            (self.append_junk, 8), (self.bad_bitmap, 12), (self.oversized_llvar, 10),
            (self.insert_bytes, 8), (self.random_bytes, 8), (self.bad_mti, 5),
            (self.swap_fields, 5), (self.empty, 1), (self.valid, 4),
        )
        self._weights = [w for _, w in self._mutations]

    def frames(self, count: int) -> Iterator[tuple[str, bytes]]:
        for _ in range(count):
            mutate = self.rng.choices(self._mutations, self._weights)[0][0]
            yield mutate.__name__, mutate(self.rng.choice(self.payloads))

    def frames_of(self, name: str) -> tuple[str, bytes]:
        """One frame of the named mutation (e.g. "wrong_length", which puts the
        stream out of step and so is only ever sent last on a connection)."""
        mutate = getattr(self, name)
        return name, mutate(self.rng.choice(self.payloads))

    # -- mutations: each returns wire bytes --------------------------------------

    def valid(self, p: bytes) -> bytes:
        return frame(p)

    def empty(self, p: bytes) -> bytes:
        return frame(b"")

    def flip_bits(self, p: bytes) -> bytes:
        data = bytearray(p)
        for _ in range(self.rng.randint(1, 4)):
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        return frame(bytes(data))

    def replace_bytes(self, p: bytes) -> bytes:
        data = bytearray(p)
        for _ in range(self.rng.randint(1, 6)):
            data[self.rng.randrange(len(data))] = self.rng.randrange(256)
        return frame(bytes(data))

    def truncate(self, p: bytes) -> bytes:
        return frame(p[: self.rng.randrange(len(p))])

    def append_junk(self, p: bytes) -> bytes:
        return frame(p + self.rng.randbytes(self.rng.randint(1, 300)))

    def insert_bytes(self, p: bytes) -> bytes:
        i = self.rng.randrange(len(p))
        return frame(p[:i] + self.rng.randbytes(self.rng.randint(1, 40)) + p[i:])

    def random_bytes(self, p: bytes) -> bytes:
        return frame(self.rng.randbytes(self.rng.randint(0, 400)))

    def bad_mti(self, p: bytes) -> bytes:
        mti = self.rng.choice([b"0000", b"9999", b"02X0", b"\x00\x00\x00\x00", b"0210",
                               b"0810", b"0500", b"0620", b"1200", b"0130"])
        return frame(mti + p[4:])

    def bad_bitmap(self, p: bytes) -> bytes:
        data = bytearray(p)
        choice = self.rng.randrange(4)
        if choice == 0:      # random hex digits: fields that are not there
            for i in range(BITMAP_AT, BITMAP_AT + BITMAP_HEX):
                if self.rng.random() < 0.3:
                    data[i] = self.rng.choice(HEX)
        elif choice == 1:    # a secondary bitmap announced but absent
            data[BITMAP_AT] = self.rng.choice(b"89ABCDEF")
        elif choice == 2:    # not hex at all
            data[BITMAP_AT + self.rng.randrange(BITMAP_HEX)] = self.rng.choice(b"GZ-\x00 ")
        else:                # all bits set
            data[BITMAP_AT:BITMAP_AT + BITMAP_HEX] = b"F" * BITMAP_HEX
        return frame(bytes(data))

    def oversized_llvar(self, p: bytes) -> bytes:
        # Field 2 is the first field after the bitmap when present: "LL" + PAN.
        start = BITMAP_AT + BITMAP_HEX
        if p[start:start + 2].isdigit():
            data = bytearray(p)
            data[start:start + 2] = self.rng.choice([b"99", b"00", b"20", b"1A"])
            return frame(bytes(data))
        return frame(p + b"9" * self.rng.randint(1, 3000))

    def swap_fields(self, p: bytes) -> bytes:
        i, j = sorted(self.rng.sample(range(BITMAP_AT + BITMAP_HEX, len(p)), 2))
        return frame(p[:i] + p[j:] + p[i:j])

    def wrong_length(self, p: bytes) -> bytes:
        # The header lies: the stream is out of step from here on (the server
        # must survive it; it may close this connection).
        claimed = self.rng.choice([len(p) + 1, max(0, len(p) - 1), 0xFFFF,
                                   self.frame_bytes_max + 1])
        return struct.pack(">H", claimed) + p


def encoded(messages: Sequence[IsoMessage]) -> list[bytes]:
    return [encode(m, ASCII) for m in messages]

