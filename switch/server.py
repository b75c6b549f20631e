"""The TCP server: listeners, connections, framing, pipelining, load shedding.

Connection policy (documented for acquirers in docs/INTERFACE_SPEC.md):

- Frames are cut by the listener's length header; a frame longer than
  `frame_bytes_max` closes the connection (the stream can no longer be trusted
  to be in step). A zero-length frame is a keep-alive: it is counted and never
  answered (two peers answering keep-alives would loop forever).
- A frame that does not decode is counted and logged (masked) and skipped; a
  connection that sends `decode_errors_max` of them in a row is closed.
- A decodable request with bad fields is answered with 39=30.
- Requests on one connection may be pipelined; each is answered as soon as it
  is done, so responses may come out of order (the ATM matches by STAN).
- Over a bound (in-flight requests per connection or overall) a request is
  answered 91 at once without processing, and counted as shed load.
- A connection idle for `idle_timeout_s` is closed, and so is one whose frame
  does not arrive whole within `frame_timeout_s` of its first byte (slow
  senders). Over `connections_max`, a new connection is closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

from messages.codec import IsoMessage, decode, encode
from messages.errors import DecodeError, EmptyFrame, EncodeError, FramingError
from messages.framing import Framer, LengthHeader, encode_frame, reply_tpdu
from messages.profiles import Profile, get_profile
from messages.views import respond
from switch.config import ListenerConfig
from switch.logs import mask_pan
from switch.metrics import Metrics
from switch.pipeline import Pipeline, Session

log = logging.getLogger("atm_switch.server")

DECODE_ERRORS_MAX = 16
DECODE_LOG_INTERVAL_S = 1.0  # at most one undecodable-message warning per second per process
WRITE_BUFFER_HIGH_BYTES = 256 * 1024
FRAMES_PER_TURN = 16  # frames one connection handles per pass of the event loop


@dataclass
class ServerState:
    """What all connections of one process share."""

    pipeline: Pipeline
    metrics: Metrics
    in_flight_max: int
    in_flight: int = 0
    accepting: bool = True
    decode_log_at: float = 0.0
    decode_errors_unlogged: int = 0

    def __post_init__(self) -> None:
        self.total_latency = self.metrics.latency.labels(stage="total")
        # Label children of the messages counter, resolved once per (MTI, code):
        # labels() costs a locked lookup per call.
        self._answered: dict[tuple[str, str], Any] = {}

    def count_answer(self, mti: str, response_code: str) -> None:
        key = (mti, response_code)
        child = self._answered.get(key)
        if child is None:
            child = self._answered[key] = self.metrics.messages.labels(
                mti=mti, response_code=response_code)
        child.inc()


class Connection(asyncio.Protocol):
    def __init__(self, state: ServerState, listener: ListenerConfig, profile: Profile,
                 registry: set[Connection]) -> None:
        self._state = state
        self._listener = listener
        self._profile = profile
        self._registry = registry
        self._header = (LengthHeader.BINARY2 if listener.length_header == "binary2"
                        else LengthHeader.ASCII4)
        self._framer = Framer(self._header, tpdu=listener.tpdu,
                              frame_bytes_max=listener.frame_bytes_max)
        self._transport: asyncio.Transport | None = None
        self._session = Session(peer="?", profile=profile)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._decode_errors = 0
        self._last_activity = time.monotonic()
        self._frame_started: float | None = None  # first byte of an incomplete frame
        self._idle_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._paused = False   # reading paused: the peer does not read its answers
        self._held = False     # reading paused: frames still buffered (fair share)

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._session.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        metrics = self._state.metrics
        name = self._listener.name
        metrics.connections_opened.labels(listener=name).inc()
        if not self._state.accepting or \
                sum(1 for c in self._registry if c._listener is self._listener) \
                >= self._listener.connections_max:
            metrics.connections_refused.labels(listener=name).inc()
            self._closing = True
            transport.abort()  # type: ignore[attr-defined]
            return
        self._registry.add(self)
        metrics.connections.labels(listener=name).inc()
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)  # type: ignore[attr-defined]
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._registry:
            self._registry.discard(self)
            self._state.metrics.connections.labels(listener=self._listener.name).dec()
        self._closing = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self._held:
            # Frames read but held for a later pass are dropped with the connection,
            # as if lost on the way: their answers could not be delivered, and the
            # acquirer repeats what it did not get answered (advices included).
            self._state.metrics.decode_errors.labels(kind="held_at_close").inc()
            return
        try:
            self._framer.eof()
        except FramingError:
            self._state.metrics.decode_errors.labels(kind="truncated_frame").inc()
        # In-flight requests run to completion (commit before respond): the
        # journal stays; only the answer has nowhere to go.

    def pause_writing(self) -> None:
        # The peer does not read its answers: stop reading its requests.
        if self._transport is not None and not self._paused:
            self._paused = True
            if not self._held:
                self._transport.pause_reading()

    def _hold_reading(self, hold: bool) -> None:
        if self._transport is None or self._closing or hold == self._held:
            return
        self._held = hold
        if self._paused:
            return
        if hold:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and self._paused:
            self._paused = False
            if not self._held:
                self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._last_activity = time.monotonic()
        self._framer.feed(data)
        self._next_frames()

    def _next_frames(self) -> None:
        """Handle at most FRAMES_PER_TURN buffered frames, then let the other
        connections have the event loop: a peer that sends thousands of frames
        at once (a flood) cannot keep an ATM on another connection waiting."""
        for _ in range(FRAMES_PER_TURN):
            if self._closing:
                return
            try:
                frame = self._framer.next_frame()
            except EmptyFrame:
                self._state.metrics.decode_errors.labels(kind="keepalive").inc()
                continue
            except FramingError as exc:
                self._state.metrics.decode_errors.labels(kind=type(exc).__name__).inc()
                log.warning("closing connection from %s: %s", self._session.peer, exc)
                self._abort()
                return
            if frame is None:
                self._hold_reading(False)
                break
            self._on_frame(frame.payload, frame.tpdu)
        else:
            # More may be buffered: stop reading this peer and go on at the next pass.
            self._hold_reading(True)
            asyncio.get_running_loop().call_soon(self._next_frames)
        # A frame must arrive whole within frame_timeout_s of its first byte, or a
        # sender trickling bytes would hold the connection forever (each byte
        # resets the idle timer). Frames held for the next pass are complete: the
        # clock starts when only a partial frame is left.
        if self._framer.pending_bytes and not self._held:
            if self._frame_started is None:
                self._frame_started = self._last_activity
        else:
            self._frame_started = None

    # -- frames --------------------------------------------------------------

    def _on_frame(self, payload: bytes, tpdu: bytes | None) -> None:
        try:
            msg = decode(payload, self._profile)
        except DecodeError as exc:
            self._state.metrics.decode_errors.labels(kind="message").inc()
            self._log_decode_error(exc)
            if isinstance(exc.partial, IsoMessage) and exc.partial.mti[2] in "02":
                # The structure decoded; only field content is wrong: answer 30.
                self._answer_format_error(exc.partial, tpdu)
                return
            self._decode_errors += 1
            if self._decode_errors >= DECODE_ERRORS_MAX:
                log.warning("closing connection from %s after %d undecodable messages",
                            self._session.peer, self._decode_errors)
                self._abort()
            return
        self._decode_errors = 0
        state = self._state
        if self._in_flight >= self._listener.in_flight_max_per_connection:
            self._shed(msg, tpdu, "connection_in_flight")
            return
        if state.in_flight >= state.in_flight_max:
            self._shed(msg, tpdu, "in_flight")
            return
        if not state.accepting:
            self._shed(msg, tpdu, "shutting_down")
            return
        self._in_flight += 1
        state.in_flight += 1
        state.metrics.in_flight.inc()
        task = asyncio.get_running_loop().create_task(self._process(msg, payload, tpdu))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log_decode_error(self, exc: DecodeError) -> None:
        # Garbage arrives in floods; the counter has every one, the log a sample.
        now = time.monotonic()
        state = self._state
        state.decode_errors_unlogged += 1
        if now - state.decode_log_at >= DECODE_LOG_INTERVAL_S:
            log.warning("undecodable message from %s: %s (%d since the last such line)",
                        self._session.peer, exc, state.decode_errors_unlogged)
            state.decode_log_at = now
            state.decode_errors_unlogged = 0

    def _answer_format_error(self, partial: IsoMessage, tpdu: bytes | None) -> None:
        try:
            answer = respond(partial, "30")
        except Exception:  # an MTI that has no response: nothing to answer
            return
        self._send(partial, answer, tpdu)

    def _shed(self, msg: IsoMessage, tpdu: bytes | None, reason: str) -> None:
        self._state.metrics.load_shed.labels(reason=reason).inc()
        try:
            answer = respond(msg, "91")
        except Exception:  # a message we cannot even answer is dropped, and counted
            self._state.metrics.decode_errors.labels(kind="unanswerable").inc()
            return
        self._send(msg, answer, tpdu)

    async def _process(self, msg: IsoMessage, raw: bytes, tpdu: bytes | None) -> None:
        start = time.perf_counter()
        try:
            answer = await self._state.pipeline.handle(msg, self._session, raw)
        except Exception:
            # A broken invariant of our own: answer 96, keep the server up, and say so.
            log.exception("pipeline failed on an MTI %s message", msg.mti)
            try:
                answer = respond(msg, "96")
            except Exception:
                answer = None
        finally:
            self._in_flight -= 1
            self._state.in_flight -= 1
            self._state.metrics.in_flight.dec()
        if answer is not None:
            self._send(msg, answer, tpdu)
        elapsed = time.perf_counter() - start
        self._state.total_latency.observe(elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("answered", extra={"fields": {
                "mti": msg.mti, "stan": msg.get(11), "terminal": msg.get(41),
                "pan": mask_pan(msg.get(2) or "") if msg.get(2) else None,
                "rc": answer.get(39) if answer is not None else None,
                "ms": round(elapsed * 1000, 2)}})

    def _send(self, request: IsoMessage, answer: IsoMessage, tpdu: bytes | None) -> None:
        self._state.count_answer(
            request.mti if request.mti.isdigit() and len(request.mti) == 4 else "other",
            answer.get(39) or "none")
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        try:
            payload = self._encode_answer(answer)
            frame = encode_frame(payload, length_header=self._header,
                                 tpdu=reply_tpdu(tpdu) if tpdu is not None else None,
                                 frame_bytes_max=self._listener.frame_bytes_max)
        except (EncodeError, FramingError) as exc:
            log.error("cannot encode a %s response: %s", answer.mti, exc)
            return
        transport.write(frame)

    def _encode_answer(self, answer: IsoMessage) -> bytes:
        """Encode `answer`; an echoed field that cannot be encoded (the request
        carried garbage there, e.g. letters in field 49 of a message answered 30)
        is left out rather than leaving the request unanswered.

        Raises EncodeError when even the fields the host itself set fail.
        """
        for _ in range(len(answer.fields) + 1):
            try:
                return encode(answer, self._profile)
            except EncodeError as exc:
                if exc.field is None or exc.field in (39, 38, 54, 48) \
                        or answer.get(exc.field) is None:
                    raise
                answer = answer.with_fields({exc.field: None})
        raise EncodeError(None, "response cannot be encoded")

    # -- timers and closing --------------------------------------------------

    def _arm_idle_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle_handle = loop.call_later(self._listener.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        if self._closing:
            return
        now = time.monotonic()
        idle = now - self._last_activity
        if idle >= self._listener.idle_timeout_s and self._in_flight == 0:
            self._state.metrics.decode_errors.labels(kind="idle_timeout").inc()
            self._abort()
            return
        started = self._frame_started
        if started is not None and now - started >= self._listener.frame_timeout_s:
            self._state.metrics.decode_errors.labels(kind="frame_timeout").inc()
            log.warning("closing connection from %s: a frame took over %.0f s to arrive",
                        self._session.peer, self._listener.frame_timeout_s)
            self._abort()
            return
        loop = asyncio.get_running_loop()
        remaining = max(self._listener.idle_timeout_s - idle, 0.05)
        if started is not None:
            remaining = min(remaining, max(self._listener.frame_timeout_s - (now - started),
                                           0.05))
        else:
            remaining = min(remaining, self._listener.frame_timeout_s)
        self._idle_handle = loop.call_later(remaining, self._check_idle)

    def _abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class SwitchServer:
    """All listeners of one process, with staged shutdown."""

    def __init__(self, state: ServerState, listeners: tuple[ListenerConfig, ...],
                 reuse_port: bool = False) -> None:
        self._state = state
        self._listeners = listeners
        self._reuse_port = reuse_port
        self._servers: list[asyncio.Server] = []
        self._connections: set[Connection] = set()

    async def start(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        for listener in self._listeners:
            profile = get_profile(listener.profile)
            tls = _tls_context(listener) if listener.tls else None
            server = await loop.create_server(
                lambda lst=listener, p=profile: Connection(self._state, lst, p,
                                                           self._connections),
                host=listener.host, port=listener.port, ssl=tls, backlog=1024,
                reuse_port=self._reuse_port or None, start_serving=True)
            self._servers.append(server)
            sock = server.sockets[0].getsockname()
            bound.append((sock[0], sock[1]))
        return bound

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting, let in-flight requests finish within `grace_s`, then close."""
        self._state.accepting = False
        for server in self._servers:
            server.close()
        pending = [c.drain() for c in list(self._connections) if c.busy]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), timeout=grace_s)
            except TimeoutError:
                log.warning("shutdown grace period over with requests still in flight")
        for conn in list(self._connections):
            conn.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
            except TimeoutError:
                pass


def _tls_context(listener: ListenerConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert listener.tls_cert_file and listener.tls_key_file
    ctx.load_cert_chain(listener.tls_cert_file, listener.tls_key_file)
    if listener.tls_client_ca_file:
        ctx.load_verify_locations(listener.tls_client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
