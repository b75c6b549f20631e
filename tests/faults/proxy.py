"""A fault-injecting TCP proxy for the ISO 8583 wire, for fault tests.

It sits between ATMs and the switch on 127.0.0.1 and understands just enough
of the wire to act on whole messages: frames with a 2-byte big-endian length
header. For every frame, in either direction, a seeded RNG chooses to pass it,
drop it, hold it back (stalling the direction, like a TCP stall, for longer
than the ATM waits), send it twice, write it in pieces, or cut the connection.
`heal()` turns every fault off; `cut_all()` cuts every open connection at once.

Everything is bounded: connections (`connections_max`), frame size (the header
allows 65535 bytes at most), connect and write deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field

CONNECT_TIMEOUT_S = 2.0
READ_CHUNK_BYTES = 65536
HEADER_BYTES = 2


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities per frame (each in 0..1), checked in this order."""

    cut: float = 0.0          # close both sides of the connection at this frame
    drop: float = 0.0         # the frame vanishes
    delay: float = 0.0        # the direction stalls for `delay_s` before the frame
    duplicate: float = 0.0    # the frame is written twice
    split: float = 0.0        # the frame is written in 2-4 pieces with tiny pauses
    delay_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("cut", "drop", "delay", "duplicate", "split"):
            value = getattr(self, name)
            assert 0.0 <= value <= 1.0, f"{name} must be a probability"
        assert self.delay_s >= 0


NO_FAULTS = FaultPlan()


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def cut(self) -> None:
        for writer in (self.client, self.upstream):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int,
                 plan: FaultPlan = NO_FAULTS, connections_max: int = 256) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.plan = plan
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._connections_max = connections_max
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut_all()
        tasks = [t for link in list(self._links) for t in link.tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def heal(self) -> None:
        self.plan = NO_FAULTS

    def cut_all(self) -> None:
        for link in list(self._links):
            link.cut()
        self.stats["cut_all"] += 1

    @property
    def open_connections(self) -> int:
        return len(self._links)

    # -- connections ---------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._links) >= self._connections_max:
            self.stats["refused"] += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port),
                CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            # The switch is down: the ATM sees its connection closed.
            self.stats["upstream_unreachable"] += 1
            writer.transport.abort()
            return
        self.stats["connections"] += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        loop = asyncio.get_running_loop()
        link.tasks = [loop.create_task(self._pump(reader, up_writer, link, "to_switch")),
                      loop.create_task(self._pump(up_reader, writer, link, "to_atm"))]
        try:
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            link.cut()
            for task in link.tasks:
                task.cancel()
            await asyncio.wait(link.tasks, timeout=5.0)
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: _Link, direction: str) -> None:
        buffer = bytearray()
        try:
            while True:
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    return
                buffer += data
                while len(buffer) >= HEADER_BYTES:
                    size = int.from_bytes(buffer[:HEADER_BYTES], "big")
                    if len(buffer) < HEADER_BYTES + size:
                        break
                    frame = bytes(buffer[:HEADER_BYTES + size])
                    del buffer[:HEADER_BYTES + size]
                    if not await self._forward(frame, writer, link, direction):
                        return
        except (OSError, TimeoutError):
            return

    async def _forward(self, frame: bytes, writer: asyncio.StreamWriter, link: _Link,
                       direction: str) -> bool:
        """Apply the plan to one frame; False when the connection was cut."""
        plan, rng = self.plan, self._rng
        self.stats[f"{direction}_frames"] += 1
        if rng.random() < plan.cut:
            self.stats[f"{direction}_cut"] += 1
            link.cut()
            return False
        if rng.random() < plan.drop:
            self.stats[f"{direction}_dropped"] += 1
            return True
        if rng.random() < plan.delay:
            self.stats[f"{direction}_delayed"] += 1
            await asyncio.sleep(plan.delay_s)
        copies = 2 if rng.random() < plan.duplicate else 1
        if copies == 2:
            self.stats[f"{direction}_duplicated"] += 1
        for _ in range(copies):
            if rng.random() < plan.split and len(frame) > 2:
                self.stats[f"{direction}_split"] += 1
                cuts = sorted(rng.sample(range(1, len(frame)), min(3, len(frame) - 1)))
                pieces = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)],
                                                     strict=True)]
                for piece in pieces:
                    writer.write(piece)
                    await asyncio.wait_for(writer.drain(), 5.0)
                    await asyncio.sleep(rng.random() * 0.002)
            else:
                writer.write(frame)
                await asyncio.wait_for(writer.drain(), 5.0)
        return True
