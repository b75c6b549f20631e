"""The load generator: ATM connections over real TCP, in its own process.

One process (or several, each with a share of the connections) runs an
asyncio loop with one TCP connection per ATM. Each connection signs on
(0800 70=001) and then sends the benchmark mix.

- Closed loop: each connection keeps exactly one request outstanding, as a
  real ATM does; concurrency = number of connections. Latency is measured
  from send to answer; a request counts when it completes inside the window.
- Open loop: arrivals at a fixed rate, spread round-robin over the
  connections (requests are pipelined; the host matches by STAN). Latency is
  measured from the *intended* send time, so a stalled host or a late
  scheduler shows up in the figures (no coordinated omission). A request
  counts when it was due inside the window; the loop drains afterwards.

Phases share the machine's CLOCK_MONOTONIC (`time.monotonic()` is the same
clock in every process on Linux): the harness hands out absolute times for
begin, measure and end, and samples the switch's CPU and metrics at the same
instants.

The parent talks to a process through a `multiprocessing` pipe:
child → ("ready", info), parent → ("go", t_begin, t_measure, t_end),
child → ("result", dict). Nothing here prints a PAN or PIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import operator
import os
import random
import resource
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from hdrh.histogram import HdrHistogram

from benchmarks.workload import (
    EXPECTED_CODE,
    INSUFFICIENT_AMOUNT,
    WITHDRAWAL_AMOUNTS,
    Atm,
    Card,
    CardState,
    Mix,
    Op,
    OpChooser,
    Withdrawn,
)
from hsm.terminal import encrypt_pin_block
from messages.codec import IsoMessage, decode, encode, encode_with_spans
from messages.errors import DecodeError, EmptyFrame, FramingError
from messages.framing import Framer, LengthHeader, encode_frame
from messages.profiles import Profile, get_profile
from switch.atm import AtmClient, AtmConfig, CardData
from switch.heap import GcPauseWatch, freeze_long_lived

FRAME_BYTES_MAX = 8192
LATENCY_US_MAX = 120_000_000      # histogram range: 1 µs .. 120 s
HDR_DIGITS = 3
CONNECT_TIMEOUT_S = 10.0
GO_TIMEOUT_S = 600.0              # how long a ready process waits for the parent
REQUESTS_PER_CONNECTION_MAX = 50_000_000  # bound on every send loop
YIELD_EVERY = 64                  # open loop: let responses in while catching up
# Open loop: the shortest wait between sends. The event loop's timers count whole
# milliseconds (uvloop, like libuv, rounds a shorter delay to zero), so waiting for an
# arrival less than 1 ms away returned at once and the scheduler spun until it was
# due: at 2,000 arrivals/s the load generator burnt 0.43 ms of CPU per request (80% of
# a core) against 0.09 in the closed loop, on the cores the switch needs. Arrivals
# that fall due during the wait are sent together when it ends; every latency is
# still counted from its arrival's intended time, so the wait is in the figures.
SEND_TICK_S = 0.001
PROGRESS_EVERY = 32               # requests counted locally before the shared counter
SWEEP_S = 0.1                     # how often each connection looks for timed-out requests
RESPONSE_MTI = {"0200": "0210", "0420": "0430", "0800": "0810"}


@dataclass(frozen=True)
class LoadSpec:
    """What one load-generator process does (pickled to the child)."""

    host: str
    port: int
    mode: str                          # "closed" | "open"
    connections: tuple[tuple[Atm, tuple[Card, ...]], ...]
    mix: Mix
    rate_tps: float = 0.0              # open loop: this process's share
    timeout_s: float = 10.0
    in_flight_max: int = 20_000        # open loop: outstanding requests, all connections
    seed: int = 1
    profile: str = "ascii"
    length_header: str = "binary2"

    def __post_init__(self) -> None:
        assert self.mode in ("closed", "open"), self.mode
        assert self.connections, "at least one connection"
        assert self.mode == "closed" or self.rate_tps > 0, "open loop needs a rate"


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, LATENCY_US_MAX, HDR_DIGITS)


def encode_histogram(hist: HdrHistogram) -> str:
    data = hist.encode()
    return data.decode("ascii") if isinstance(data, bytes) else str(data)


def decode_histogram(text: str) -> HdrHistogram:
    hist = new_histogram()
    if text:
        hist.add(HdrHistogram.decode(text.encode("ascii")))
    return hist


# -- wire ----------------------------------------------------------------------

Callback = Callable[[IsoMessage | None, str | None, float], None]


class BenchConnection(asyncio.Protocol):
    """One ATM's TCP connection: frames out, frames in, answers matched by (MTI, STAN).

    A callback gets (response, None, t_done) or (None, error_kind, t_done) with
    error_kind "timeout" or "connection".
    """

    def __init__(self, profile: str, length_header: str) -> None:
        self._profile = get_profile(profile)
        self._header = LengthHeader.BINARY2 if length_header == "binary2" else LengthHeader.ASCII4
        self._framer = Framer(self._header, tpdu=False, frame_bytes_max=FRAME_BYTES_MAX)
        # In flight: response key -> (send number, callback).
        self._pending: dict[tuple[str, str], tuple[int, Callback]] = {}
        self._sent = 0
        # (deadline, key, send number) in send order: one sweep timer per connection
        # instead of a timer per request (every request has the same timeout). Plain
        # values only: an entry outlives its answer by the whole timeout, and holding
        # the callback (and through it the request, its future and the response) made
        # the collector's full passes long pauses of the load generator.
        self._deadlines: deque[tuple[float, tuple[str, str], int]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        # uvloop's transports are not asyncio.Transport subclasses: typed loosely.
        self._transport: Any = None
        self.closed = asyncio.get_running_loop().create_future()
        self.unmatched = 0
        self.undecodable = 0

    @property
    def alive(self) -> bool:
        return self._transport is not None and not self.closed.done()

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, key, number = deadlines.popleft()
            entry = self._pending.get(key)
            if entry is not None and entry[0] == number:
                del self._pending[key]
                entry[1](None, "timeout", now)
        if not self.closed.done():
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def data_received(self, data: bytes) -> None:
        self._framer.feed(data)
        for _ in range(100_000):  # bounded: a read holds at most a few hundred frames
            try:
                frame = self._framer.next_frame()
            except EmptyFrame:
                continue
            except FramingError:
                self._abort()
                return
            if frame is None:
                return
            self._deliver(frame.payload)

    def _deliver(self, payload: bytes) -> None:
        try:
            msg = decode(payload, self._profile)
        except DecodeError:
            self.undecodable += 1
            return
        entry = self._pending.pop((msg.mti, msg.get(11) or ""), None)
        if entry is None:
            self.unmatched += 1
            return
        entry[1](msg, None, time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._fail_all("connection")
        if not self.closed.done():
            self.closed.set_result(None)

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _fail_all(self, kind: str) -> None:
        pending, self._pending = self._pending, {}
        self._deadlines.clear()
        now = time.monotonic()
        for _, callback in pending.values():
            callback(None, kind, now)

    def send(self, out: Outgoing | IsoMessage, callback: Callback, timeout_s: float) -> None:
        if isinstance(out, IsoMessage):
            out = Outgoing.of(out, self._profile)
        if not self.alive:
            callback(None, "connection", time.monotonic())
            return
        assert self._transport is not None
        key = (RESPONSE_MTI[out.mti], out.stan)
        assert key not in self._pending, "STAN reused while in flight"
        self._sent += 1
        self._pending[key] = (self._sent, callback)
        self._deadlines.append((time.monotonic() + timeout_s, key, self._sent))
        self._transport.write(encode_frame(out.payload, length_header=self._header,
                                           frame_bytes_max=FRAME_BYTES_MAX))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Outgoing:
    """A request as it goes on the wire: MTI, STAN (how its answer is matched) and
    the encoded message. The message itself is decoded again only when needed (a
    reversal copies fields of the withdrawal it undoes)."""

    __slots__ = ("mti", "payload", "profile", "stan")

    def __init__(self, mti: str, stan: str, payload: bytes, profile: Profile) -> None:
        self.mti = mti
        self.stan = stan
        self.payload = payload
        self.profile = profile

    @classmethod
    def of(cls, msg: IsoMessage, profile: Profile) -> Outgoing:
        return cls(msg.mti, msg.get(11) or "", encode(msg, profile), profile)

    def message(self) -> IsoMessage:
        return decode(self.payload, self.profile)


# What changes from one financial request of a card to the next: the processing
# code, amount, transmission date/time, STAN, local time and date, RRN, PIN block.
# All are fixed-length, so each request is the card's encoded template with these
# written over it (the encoder has checked the card's fields once, on the template).
_PER_REQUEST_FIELDS = (3, 4, 7, 11, 12, 13, 37, 52)


# -- one ATM ---------------------------------------------------------------------


@dataclass
class _CardWire:
    data: CardData
    pin_ok: str     # encrypted PIN blocks under this ATM's TPK (format 0 is deterministic)
    pin_wrong: str
    # The encoded 0200 of this card, where each per-request field lies in it, and
    # the two PIN blocks as they travel (made before the load starts).
    template: bytes
    spans: dict[int, tuple[int, int]]
    pin_wire: dict[str, bytes]

    def __repr__(self) -> str:
        return "_CardWire(<masked>)"


class AtmSession:
    """One ATM: its connection, message builder, card partition and operation chooser."""

    def __init__(self, atm: Atm, cards: tuple[Card, ...], mix: Mix, rng: random.Random,
                 spec: LoadSpec) -> None:
        self.atm = atm
        self.spec = spec
        self.profile = get_profile(spec.profile)
        self.rng = rng
        self.builder = AtmClient(AtmConfig(terminal_id=atm.terminal_id,
                                           acquirer_id=atm.acquirer_id),
                                 stan_start=rng.randrange(1, 990_000))
        # Index cards by position in this session; the chooser works on indexes. Every
        # card's template is made now, before the load: most cards of a run are used a
        # few times only, so making them on first use was a steady cost inside the
        # measured window (a tenth of the load generator's CPU at 10,000 cards).
        self.wire = [self._card_wire(atm, c) for c in cards]
        self.chooser = OpChooser(mix, list(range(len(cards))), rng)
        self.conn: BenchConnection | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: BenchConnection(self.spec.profile, self.spec.length_header),
                self.spec.host, self.spec.port),
            CONNECT_TIMEOUT_S)
        self.conn = proto

    def build(self, op: Op, state: CardState, original: Withdrawn | None
              ) -> tuple[Outgoing, Withdrawn | None]:
        """The request for `op`; for a withdrawal also what a later reversal needs."""
        card = self.wire[state.index]
        b = self.builder
        if op is Op.REVERSAL:
            assert original is not None
            partial = self.rng.random() < 0.5
            dispensed = (original.amount // 2000) * 1000 if partial else None
            return Outgoing.of(b.reversal(original.request.message(), dispensed=dispensed),
                               self.profile), None
        if op is Op.BALANCE:
            return self._financial(card, "310000", 0, card.pin_ok), None
        amount = (INSUFFICIENT_AMOUNT if op is Op.INSUFFICIENT
                  else WITHDRAWAL_AMOUNTS[self.rng.randrange(len(WITHDRAWAL_AMOUNTS))])
        pin = card.pin_wrong if op is Op.WRONG_PIN else card.pin_ok
        out = self._financial(card, "010000", amount, pin)
        return out, (Withdrawn(state.index, out, amount) if op is Op.WITHDRAWAL else None)

    def _financial(self, card: _CardWire, processing: str, amount: int,
                   pin_block: str) -> Outgoing:
        """A 0200 as the ATM client builds it, written into the card's template."""
        assert 0 <= amount < 10**12 and len(processing) == 6, (amount, processing)
        base = self.builder.base_fields()
        buf = bytearray(card.template)
        spans = card.spans
        for number, text in ((3, processing), (4, f"{amount:012d}"), (7, base[7]),
                             (11, base[11]), (12, base[12]), (13, base[13]), (37, base[37])):
            start, end = spans[number]
            buf[start:end] = text.encode("ascii")
        start, end = spans[52]
        buf[start:end] = card.pin_wire[pin_block]
        return Outgoing("0200", base[11], bytes(buf), self.profile)

    def _card_wire(self, atm: Atm, card: Card) -> _CardWire:
        data = CardData(card.pan, card.expiry)
        pin_ok = encrypt_pin_block(atm.tpk_hex, card.pin, card.pan, 0)
        pin_wrong = encrypt_pin_block(atm.tpk_hex, card.wrong_pin, card.pan, 0)
        # The per-request fields are written over (a placeholder STAN: none is used up).
        # Encoding with either PIN block checks every field this card sends.
        fields = self.builder.financial_fields(data, processing="000000", amount=0,
                                               pin=None, stan="000000")
        pin_wire: dict[str, bytes] = {}
        for block in (pin_ok, pin_wrong):
            payload, spans = encode_with_spans(IsoMessage("0200", {**fields, 52: block}),
                                               self.profile)
            start, end = spans[52]
            pin_wire[block] = payload[start:end]
        return _CardWire(data, pin_ok, pin_wrong, template=payload,
                         spans={n: spans[n] for n in _PER_REQUEST_FIELDS}, pin_wire=pin_wire)


# -- recording -------------------------------------------------------------------


@dataclass
class Recorder:
    t_measure: float
    t_end: float
    op_hists: dict[str, HdrHistogram] = field(default_factory=dict)
    codes: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    errors: Counter[str] = field(default_factory=Counter)        # whole run, warm-up included
    unexpected: Counter[str] = field(default_factory=Counter)    # "op:code"
    completed: int = 0                                           # inside the window
    per_second: Counter[int] = field(default_factory=Counter)
    per_second_max_us: dict[int, int] = field(default_factory=dict)
    # Open loop: how late each request left against its intended time (the load
    # generator's own delay, inside the latency it reports), by intended second.
    late: HdrHistogram = field(default_factory=new_histogram)
    per_second_late_max_us: dict[int, int] = field(default_factory=dict)
    progress: Any = None                                         # shared counter or None
    unreported: int = 0                                          # not yet added to progress

    def record(self, op: Op, t_ref: float, t_done: float, response: IsoMessage | None,
               error: str | None, *, window_by: float) -> str | None:
        """Count one finished request; `window_by` decides window membership
        (completion time in closed loop, intended time in open loop). Returns field 39."""
        self.unreported += 1
        if self.unreported >= PROGRESS_EVERY:
            self.report_progress()
        code = response.get(39) if response is not None else None
        if error is not None:
            self.errors[error] += 1
        elif code != EXPECTED_CODE[op]:
            self.errors["unexpected_code"] += 1
            self.unexpected[f"{op.value}:{code}"] += 1
        if not self.t_measure <= window_by < self.t_end:
            return code
        if error is None:
            latency_us = max(1, int((t_done - t_ref) * 1e6))
            # Per operation only; the overall histogram is their sum (result()).
            op_hist = self.op_hists.get(op.value)
            if op_hist is None:
                op_hist = self.op_hists[op.value] = new_histogram()
            op_hist.record_value(min(latency_us, LATENCY_US_MAX))
            self.completed += 1
            second = int(t_done - self.t_measure)
            self.per_second[second] += 1
            if latency_us > self.per_second_max_us.get(second, 0):
                self.per_second_max_us[second] = latency_us
        self.codes[op.value][code or error or "?"] += 1
        return code

    def record_late(self, intended: float, sent: float) -> None:
        """Count how late a request of the open loop left (inside the window only)."""
        if not self.t_measure <= intended < self.t_end:
            return
        late_us = max(1, int((sent - intended) * 1e6))
        self.late.record_value(min(late_us, LATENCY_US_MAX))
        second = int(intended - self.t_measure)
        if late_us > self.per_second_late_max_us.get(second, 0):
            self.per_second_late_max_us[second] = late_us

    def report_progress(self) -> None:
        # The shared counter (one per process, written only here) is shared memory
        # behind ctypes: add in steps, not per request.
        if self.progress is not None and self.unreported:
            self.progress.value += self.unreported
        self.unreported = 0

    def result(self) -> dict[str, Any]:
        self.report_progress()
        overall = new_histogram()
        for op_hist in self.op_hists.values():
            overall.add(op_hist)
        return {
            "hist": encode_histogram(overall),
            "op_hists": {k: encode_histogram(v) for k, v in self.op_hists.items()},
            "codes": {op: dict(c) for op, c in self.codes.items()},
            "errors": dict(self.errors),
            "unexpected": dict(self.unexpected),
            "completed": self.completed,
            "per_second": _by_second(self.per_second, self.per_second),
            "per_second_max_us": _by_second(self.per_second_max_us, self.per_second),
            "late_hist": encode_histogram(self.late),
            "per_second_late_max_us": _by_second(self.per_second_late_max_us,
                                                 self.per_second_late_max_us),
        }


def _by_second(values: Mapping[int, int], seconds: Mapping[int, int]) -> list[int]:
    """`values` as a list indexed by second, 0 where a second has none, as long as
    the last second `seconds` holds."""
    return [values.get(i, 0) for i in range(max(seconds, default=-1) + 1)]


def _merge_by_second(into: list[int], values: list[int],
                     combine: Callable[[int, int], int]) -> None:
    """Fold one process's per-second series into `into`, growing it as needed."""
    for i, value in enumerate(values):
        if i >= len(into):
            into.append(0)
        into[i] = combine(into[i], value)


# -- loops -----------------------------------------------------------------------


async def _closed_worker(session: AtmSession, rec: Recorder, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    conn = session.conn
    assert conn is not None
    for _ in range(REQUESTS_PER_CONNECTION_MAX):
        if time.monotonic() >= rec.t_end or not conn.alive:
            return
        op, state, original = session.chooser.next()
        msg, withdrawn = session.build(op, state, original)
        fut: asyncio.Future[tuple[IsoMessage | None, str | None, float]] = loop.create_future()

        def done(resp: IsoMessage | None, err: str | None, t: float,
                 fut: asyncio.Future[Any] = fut) -> None:
            if not fut.done():
                fut.set_result((resp, err, t))

        t_sent = time.monotonic()
        conn.send(msg, done, timeout_s)
        resp, err, t_done = await fut
        code = rec.record(op, t_sent, t_done, resp, err, window_by=t_done)
        session.chooser.done(op, state, code, withdrawn)


def open_loop_count(t_begin: float, t_end: float, rate_tps: float) -> int:
    """Requests an open-loop window sends. The end is a monotonic-clock sum, so
    duration x rate can fall a hair under a whole count (899.99999 for 0.3 s at
    3,000/s from a begin of 8228.405492408): such a count is rounded back up."""
    return int((t_end - t_begin) * rate_tps + 1e-6)


async def _open_scheduler(sessions: list[AtmSession], rec: Recorder, spec: LoadSpec,
                          t_begin: float) -> None:
    interval = 1.0 / spec.rate_tps
    total = open_loop_count(t_begin, rec.t_end, spec.rate_tps)
    assert total <= REQUESTS_PER_CONNECTION_MAX * len(sessions)
    outstanding = 0
    scheduled_all = False
    drained = asyncio.Event()
    live = [s for s in sessions if s.conn is not None]

    def make_done(session: AtmSession, op: Op, state: CardState, withdrawn: Withdrawn | None,
                  intended: float) -> Callback:
        def done(resp: IsoMessage | None, err: str | None, t: float) -> None:
            nonlocal outstanding
            outstanding -= 1
            if scheduled_all and outstanding == 0:
                drained.set()
            code = rec.record(op, intended, t, resp, err, window_by=intended)
            session.chooser.done(op, state, code, withdrawn)
        return done

    i = 0
    while i < total:
        intended = t_begin + i * interval
        now = time.monotonic()
        if intended > now:
            await asyncio.sleep(max(intended - now, SEND_TICK_S))
            continue
        session = live[i % len(live)]
        i += 1
        if i % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if outstanding >= spec.in_flight_max:
            rec.errors["overload"] += 1
            continue
        rec.record_late(intended, now)
        op, state, original = session.chooser.next()
        msg, withdrawn = session.build(op, state, original)
        outstanding += 1
        assert session.conn is not None
        session.conn.send(msg, make_done(session, op, state, withdrawn, intended),
                          spec.timeout_s)
    scheduled_all = True
    if outstanding == 0:
        drained.set()
    # Every request has its own timeout, so this wait ends; the bound is a backstop.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drained.wait(), spec.timeout_s + 1.0)


async def _clear_wrong_pins(session: AtmSession, rec: Recorder, timeout_s: float) -> None:
    """After the window: a balance inquiry with the right PIN on every card whose last
    PIN was wrong, so the host's try counters start the next phase (or run) at zero."""
    conn = session.conn
    if conn is None or not conn.alive:
        return
    loop = asyncio.get_running_loop()
    for state in list(session.chooser.states.values()):  # bounded by the card count
        if state.wrong_streak == 0 or state.busy:
            continue
        card = session.wire[state.index]
        msg = session.builder.financial(card.data, processing="310000", amount=0, pin=None,
                                        extra={52: card.pin_ok})
        fut: asyncio.Future[str] = loop.create_future()

        def done(resp: IsoMessage | None, err: str | None, t: float,
                 fut: asyncio.Future[str] = fut) -> None:
            if not fut.done():
                fut.set_result(err or (resp.get(39) if resp is not None else None) or "?")

        conn.send(msg, done, timeout_s)
        code = await fut
        if code != "00":
            rec.errors["cleanup"] += 1
        state.wrong_streak = 0


async def _sign_on(session: AtmSession, timeout_s: float) -> str:
    conn = session.conn
    assert conn is not None
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()

    def done(resp: IsoMessage | None, err: str | None, t: float) -> None:
        if not fut.done():
            fut.set_result(err or (resp.get(39) if resp is not None else None) or "?")

    conn.send(session.builder.network("001"), done, timeout_s)
    return await fut


class GcPauses:
    """This process's cyclic garbage collections, added up (a pause of the load
    generator is latency the switch did not cause: reported, so it can be told apart)."""

    def __init__(self) -> None:
        self.count = 0
        self.total_s = 0.0
        self.max_s = 0.0

    def note(self, generation: int, pause_s: float) -> None:
        self.count += 1
        self.total_s += pause_s
        self.max_s = max(self.max_s, pause_s)

    def as_dict(self) -> dict[str, float]:
        return {"collections": self.count, "pause_total_ms": round(self.total_s * 1000, 3),
                "pause_max_ms": round(self.max_s * 1000, 3)}


async def _run(spec: LoadSpec, pipe: Connection, progress: Any) -> dict[str, Any]:
    rng = random.Random(spec.seed)
    sessions = [AtmSession(atm, cards, spec.mix, random.Random(rng.random()), spec)
                for atm, cards in spec.connections]
    connect_errors = 0
    for result in await asyncio.gather(*(s.connect() for s in sessions),
                                       return_exceptions=True):
        if isinstance(result, BaseException):
            connect_errors += 1
    live = [s for s in sessions if s.conn is not None]
    signons = Counter(await asyncio.gather(*(_sign_on(s, spec.timeout_s) for s in live)))
    # Everything built so far lives for the whole run (switch.heap).
    freeze_long_lived()
    pipe.send(("ready", {"connections": len(live), "connect_errors": connect_errors,
                         "signon": dict(signons)}))
    if not await asyncio.to_thread(pipe.poll, GO_TIMEOUT_S):
        raise TimeoutError("the harness never said go")
    tag, t_begin, t_measure, t_end = pipe.recv()
    assert tag == "go", tag
    rec = Recorder(t_measure, t_end, progress=progress)
    rec.errors["connect"] += connect_errors
    rec.errors["signon"] += sum(n for code, n in signons.items() if code != "00")
    await asyncio.sleep(max(0.0, t_begin - time.monotonic()))
    cpu: dict[str, float] = {}
    cpu_task = asyncio.get_running_loop().create_task(_cpu_marks(t_measure, t_end, cpu))
    pauses = GcPauses()
    # The cyclic collector is off while the load runs: its pauses (up to 45 ms at 128
    # ATMs, after freezing the start-up heap) were latency the switch did not cause.
    # The run is bounded in time and what it leaves behind is mostly freed by
    # reference counting; the rest is collected once the load is over (and the
    # memory it held reported, `loadgen_max_rss_mb`).
    gc.disable()
    try:
        with GcPauseWatch(pauses.note):  # counts any collection that still happens
            if spec.mode == "closed":
                await asyncio.gather(*(_closed_worker(s, rec, spec.timeout_s) for s in live))
            else:
                await _open_scheduler(live, rec, spec, t_begin)
    finally:
        gc.enable()
    gc.collect()
    await asyncio.gather(*(_clear_wrong_pins(s, rec, spec.timeout_s) for s in live))
    if not cpu_task.done():  # the loops ended early (connections lost): no CPU figure
        cpu_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cpu_task
    for s in live:
        assert s.conn is not None
        rec.errors["unmatched"] += s.conn.unmatched
        rec.errors["undecodable"] += s.conn.undecodable
        s.conn.close()
    result = rec.result()
    result["errors"] = {k: v for k, v in result["errors"].items() if v}
    result["loadgen_cpu_s"] = cpu.get("end", 0.0) - cpu.get("start", 0.0)
    result["substituted"] = sum(s.chooser.substituted for s in sessions)
    result["card_collisions"] = sum(s.chooser.collisions for s in sessions)
    result["signon"] = dict(signons)
    result["loadgen_gc"] = pauses.as_dict()
    result["loadgen_max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


async def _cpu_marks(t_measure: float, t_end: float, out: dict[str, float]) -> None:
    await asyncio.sleep(max(0.0, t_measure - time.monotonic()))
    t = os.times()
    out["start"] = t.user + t.system
    await asyncio.sleep(max(0.0, t_end - time.monotonic()))
    t = os.times()
    out["end"] = t.user + t.system


def process_main(spec: LoadSpec, pipe: Connection, progress: Any) -> None:
    """Entry point of a load-generator process (multiprocessing target)."""
    try:
        try:
            import uvloop

            result = uvloop.run(_run(spec, pipe, progress))
        except ImportError:
            result = asyncio.run(_run(spec, pipe, progress))
        pipe.send(("result", result))
    except BaseException as exc:
        # Report the failure by type and text (our own texts never hold a PAN or PIN).
        pipe.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        pipe.close()


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up several processes' results (histograms, counters, per-second series)."""
    hist = new_histogram()
    op_hists: dict[str, HdrHistogram] = {}
    codes: defaultdict[str, Counter[str]] = defaultdict(Counter)
    errors: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    per_second: list[int] = []
    per_second_max_us: list[int] = []
    late = new_histogram()
    late_max_us: list[int] = []
    merged: dict[str, Any] = {"completed": 0, "loadgen_cpu_s": 0.0, "substituted": 0,
                              "card_collisions": 0}
    signon: Counter[str] = Counter()
    gc_pauses = {"collections": 0, "pause_total_ms": 0.0, "pause_max_ms": 0.0}
    for r in results:
        for key, value in r.get("loadgen_gc", {}).items():
            gc_pauses[key] = (max(gc_pauses[key], value) if key == "pause_max_ms"
                              else gc_pauses[key] + value)
        hist.add(decode_histogram(r["hist"]))
        for op, text in r["op_hists"].items():
            op_hists.setdefault(op, new_histogram()).add(decode_histogram(text))
        for op, c in r["codes"].items():
            codes[op].update(c)
        errors.update(r["errors"])
        unexpected.update(r["unexpected"])
        signon.update(r.get("signon", {}))
        _merge_by_second(per_second, r["per_second"], operator.add)
        _merge_by_second(per_second_max_us, r["per_second_max_us"], max)
        late.add(decode_histogram(r["late_hist"]))
        _merge_by_second(late_max_us, r["per_second_late_max_us"], max)
        for key in ("completed", "loadgen_cpu_s", "substituted", "card_collisions"):
            merged[key] += r.get(key, 0)
        merged["loadgen_max_rss_mb"] = max(merged.get("loadgen_max_rss_mb", 0.0),
                                           r.get("loadgen_max_rss_mb", 0.0))
    merged.update(hist=hist, op_hists=op_hists, codes={k: dict(v) for k, v in codes.items()},
                  errors=dict(errors), unexpected=dict(unexpected), per_second=per_second,
                  per_second_max_us=per_second_max_us, late_hist=late,
                  per_second_late_max_us=late_max_us,
                  signon=dict(signon), loadgen_gc=gc_pauses)
    return merged

