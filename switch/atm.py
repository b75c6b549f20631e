"""An ATM client: what a terminal sends, for people trying the host, tests and load.

It speaks the same wire as a real ATM (profile, length header, optional TPDU),
keeps a STAN counter, builds ISO 9564 PIN blocks under its clear TPK (the ATM's
own key, which the host only knows wrapped), and matches responses to requests
by MTI and STAN, so requests may be pipelined on one connection.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from secrets import randbelow

from hsm.terminal import encrypt_pin_block, retail_mac
from messages.codec import IsoMessage, decode, encode, mac_data, put_mac
from messages.errors import DecodeError, EmptyFrame, FramingError
from messages.fields import OriginalData, ReplacementAmounts
from messages.framing import Framer, LengthHeader, encode_frame
from messages.mti import Mti
from messages.profiles import get_profile

FRAME_BYTES_MAX = 8192


class AtmError(Exception):
    """The exchange with the host failed (connection, timeout, undecodable answer)."""


@dataclass(frozen=True)
class CardData:
    pan: str
    expiry: str  # YYMM
    service_code: str = "101"

    @property
    def track2(self) -> str:
        return f"{self.pan}={self.expiry}{self.service_code}0000000000"[:37]


@dataclass
class AtmConfig:
    terminal_id: str
    acquirer_id: str = "123456"
    tpk_hex: str | None = None  # clear TPK, the ATM's side of the key
    pin_block_format: int = 0
    currency: str = "840"
    profile: str = "ascii"
    length_header: str = "binary2"
    tpdu: bytes | None = None
    card_acceptor_id: str = "ATMSWITCHDEMO01"
    location: str = "1 Main Street            Springfield  US"


@dataclass
class Exchange:
    request: IsoMessage
    response: IsoMessage
    latency_s: float

    @property
    def code(self) -> str:
        return self.response.get(39) or ""


@dataclass
class _Pending:
    future: asyncio.Future[IsoMessage]
    sent_at: float = 0.0


@dataclass
class AtmClient:
    config: AtmConfig
    # A real ATM keeps its STAN counter across sessions; a fresh client starts at a
    # random point so two clients of one terminal do not reuse keys (which gives 94).
    stan_start: int | None = None
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    _stan: itertools.count[int] = field(init=False)
    _read_task: asyncio.Task[None] | None = None
    _stamp_second: int = field(default=-1, init=False, repr=False)
    _stamp_text: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        start = self.stan_start if self.stan_start is not None else randbelow(999_000) + 1
        self._stan = itertools.count(start)
        self._profile = get_profile(self.config.profile)
        self._header = (LengthHeader.BINARY2 if self.config.length_header == "binary2"
                        else LengthHeader.ASCII4)

    # -- connection ----------------------------------------------------------

    async def connect(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                      timeout_s: float = 5.0) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=tls), timeout_s)
        except (OSError, TimeoutError) as exc:
            raise AtmError(f"cannot connect to {host}:{port}: {exc}") from None
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)
            except (TimeoutError, OSError):
                pass
        if self._read_task is not None:
            self._read_task.cancel()
            try:
                await self._read_task
            except (asyncio.CancelledError, Exception):  # noqa: S110 - closing anyway
                pass
        self._fail_pending(AtmError("connection closed"))

    async def __aenter__(self) -> AtmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _fail_pending(self, exc: Exception) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
        self._pending.clear()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        framer = Framer(self._header, tpdu=self.config.tpdu is not None,
                        frame_bytes_max=FRAME_BYTES_MAX)
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                framer.feed(data)
                while True:
                    try:
                        frame = framer.next_frame()
                    except EmptyFrame:
                        continue
                    if frame is None:
                        break
                    self._deliver(frame.payload)
        except (OSError, FramingError) as exc:
            self._fail_pending(AtmError(f"connection failed: {exc}"))
            return
        self._fail_pending(AtmError("connection closed by the host"))

    def _deliver(self, payload: bytes) -> None:
        try:
            msg = decode(payload, self._profile)
        except DecodeError:
            return
        pending = self._pending.pop((msg.mti, msg.get(11) or ""), None)
        if pending is not None and not pending.future.done():
            pending.future.set_result(msg)

    # -- sending -------------------------------------------------------------

    def next_stan(self) -> str:
        return f"{next(self._stan) % 1_000_000:06d}"

    async def send(self, msg: IsoMessage, *, timeout_s: float = 10.0) -> Exchange:
        """Send `msg` and wait for its response (matched by response MTI and STAN)."""
        if self._writer is None:
            raise AtmError("not connected")
        loop = asyncio.get_running_loop()
        key = (str(Mti.parse(msg.mti).response()), msg.get(11) or "")
        future: asyncio.Future[IsoMessage] = loop.create_future()
        self._pending[key] = _Pending(future, loop.time())
        payload = encode(msg, self._profile)
        self._writer.write(encode_frame(payload, length_header=self._header,
                                        tpdu=self.config.tpdu, frame_bytes_max=FRAME_BYTES_MAX))
        start = loop.time()
        try:
            response = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self._pending.pop(key, None)
            raise AtmError(f"no answer to {msg.mti} STAN {key[1]} within {timeout_s}s") from None
        return Exchange(msg, response, loop.time() - start)

    # -- message builders ----------------------------------------------------

    def base_fields(self, stan: str | None = None) -> dict[int, str]:
        """The fields every request carries (7, 11, 12, 13, 32, 37, 41), with the
        next STAN unless one is given."""
        return self._base(stan)

    def _base(self, stan: str | None = None) -> dict[int, str]:
        stamp = self._stamp()
        stan = stan or self.next_stan()
        return {
            7: stamp[:10],
            11: stan,
            12: stamp[4:10],
            13: stamp[:4],
            32: self.config.acquirer_id,
            37: stamp[10:15] + stamp[4:6] + stan[-5:],
            41: self.config.terminal_id,
        }

    def _stamp(self) -> str:
        """UTC now as MMDDhhmmss then YYJJJ (year and day of year, for the RRN),
        formatted once per second."""
        second = int(time.time())
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_text = time.strftime("%m%d%H%M%S%y%j", time.gmtime(second))
        return self._stamp_text

    def network(self, code: str) -> IsoMessage:
        base = self._base()
        return IsoMessage("0800", {7: base[7], 11: base[11], 41: self.config.terminal_id,
                                   70: code})

    def financial(self, card: CardData, *, processing: str, amount: int, pin: str | None,
                  mti: str = "0200", stan: str | None = None,
                  extra: Mapping[int, str] | None = None) -> IsoMessage:
        return IsoMessage(mti, self.financial_fields(card, processing=processing, amount=amount,
                                                     pin=pin, stan=stan, extra=extra))

    def financial_fields(self, card: CardData, *, processing: str, amount: int,
                         pin: str | None, stan: str | None = None,
                         extra: Mapping[int, str] | None = None) -> dict[int, str]:
        """The fields of :meth:`financial`, as a plain dict (for load generators that
        check a card's fields once and then build many messages from them)."""
        fields = self._base(stan)
        fields.update({
            2: card.pan,
            3: processing,
            4: f"{amount:012d}",
            14: card.expiry,
            18: "6011",
            22: "021",
            25: "02",
            35: card.track2,
            42: self.config.card_acceptor_id,
            43: self.config.location,
            49: self.config.currency,
        })
        if pin is not None:
            if self.config.tpk_hex is None:
                raise AtmError("this ATM has no TPK to encrypt the PIN under")
            fields[52] = encrypt_pin_block(self.config.tpk_hex, pin, card.pan,
                                           self.config.pin_block_format).upper()
        if extra:
            fields.update(extra)
        return fields

    def withdrawal(self, card: CardData, amount: int, pin: str, *,
                   account: str = "00") -> IsoMessage:
        return self.financial(card, processing=f"01{account}00", amount=amount, pin=pin)

    def balance_inquiry(self, card: CardData, pin: str, *, account: str = "00") -> IsoMessage:
        return self.financial(card, processing=f"31{account}00", amount=0, pin=pin)

    def reversal(self, original: IsoMessage, *, dispensed: int | None = None,
                 advice: bool = True, repeat: bool = False) -> IsoMessage:
        """A 0420 (or 0400) for `original`, with field 90 and, for a partial
        reversal, field 95 carrying the amount actually dispensed."""
        mti = ("0420" if advice else "0400") if not repeat else ("0421" if advice else "0401")
        fields = dict(self._base())
        for n in (2, 3, 4, 14, 18, 22, 25, 35, 37, 42, 43, 49):
            value = original.get(n)
            if value is not None:
                fields[n] = value
        fields[90] = OriginalData(
            mti=original.mti,
            stan=original.get(11) or "000000",
            transmission_dt=original.get(7) or "0000000000",
            acquirer_id=original.get(32) or "0",
            forwarding_id=original.get(33) or "0",
        ).to_iso()
        if dispensed is not None:
            fields[95] = ReplacementAmounts(actual_amount=dispensed, settlement_amount=dispensed,
                                            transaction_fee=0, settlement_fee=0).to_iso()
        return IsoMessage(mti, fields)

    def with_mac(self, msg: IsoMessage, tak_hex: str) -> IsoMessage:
        """`msg` with its MAC field (64, or 128 when a field above 64 is present) set
        to the X9.19 retail MAC of the message as it will travel, up to (not
        including) the MAC field."""
        return put_mac(msg, retail_mac(tak_hex, mac_data(msg, self._profile))[:16].upper())

    def repeat_of(self, reversal: IsoMessage) -> IsoMessage:
        """The repeat (0401/0421/0201/0221) of a message: same fields, MTI origin 1."""
        return IsoMessage(reversal.mti[:3] + "1", dict(reversal.fields))
