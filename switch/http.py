"""Operator HTTP endpoint: /metrics, /healthz and /readyz on their own port.

A deliberately small HTTP/1.1 server on asyncio: GET only, one request per
connection, bounded request size and read time, so a misbehaving scraper
cannot hold resources.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from switch.metrics import Metrics

log = logging.getLogger("atm_switch.http")

REQUEST_BYTES_MAX = 8192
READ_TIMEOUT_S = 5.0
CONNECTIONS_MAX = 64


class OperatorHttp:
    def __init__(self, metrics: Metrics, ready: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        self._metrics = metrics
        self._ready = ready
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port,
                                                  limit=REQUEST_BYTES_MAX,
                                                  reuse_port=reuse_port or None)
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
            except TimeoutError:
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > CONNECTIONS_MAX:
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ConnectionError):
                return
            status, ctype, body = await self._route(head)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._open -= 1
            writer.close()

    async def _route(self, head: bytes) -> tuple[str, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        path = parts[1].split(b"?", 1)[0]
        if path == b"/metrics":
            return ("200 OK", "text/plain; version=0.0.4; charset=utf-8",
                    self._metrics.render())
        if path == b"/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if path == b"/readyz":
            ok, why = await self._ready()
            if ok:
                return "200 OK", "text/plain", b"ready\n"
            return "503 Service Unavailable", "text/plain", f"not ready: {why}\n".encode()
        return "404 Not Found", "text/plain", b"not found\n"
