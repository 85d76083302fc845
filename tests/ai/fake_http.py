"""A tiny real HTTP/1.1 server for fake upstreams: keep-alive, chunked streaming, and a
record of every exchange, including the moment the client closed its connection.

It is an `asyncio.Protocol` rather than a streams server for two reasons the tests need:
`connection_lost` fires the instant the peer closes (so a test can assert the sidecar
closed the upstream stream within 100 ms of a cancel), and `pause_writing` tells whether
the reader stopped reading (so a test can see backpressure reach the upstream).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Exchange", "FakeHTTPServer", "Request", "Responder"]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Exchange:
    """One request and how its response ended (times are `time.monotonic()`)."""

    request: Request
    started: float
    finished: float | None = None
    client_closed: float | None = None
    cut: bool = False
    chunks_sent: int = 0
    tokens_sent: int = 0
    """Answer tokens in the chunks sent (the fake LLM counts one per word)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class Responder:
    """What a handler answers with: a head, then chunks (streaming) or one JSON body."""

    def __init__(self, connection: _Connection, exchange: Exchange) -> None:
        self._connection = connection
        self.exchange = exchange

    async def send_head(self, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append("transfer-encoding: chunked")
        await self._connection.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def send_chunk(self, data: bytes) -> None:
        await self._connection.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.exchange.chunks_sent += 1

    async def finish(self) -> None:
        await self._connection.write(b"0\r\n\r\n")
        self.exchange.finished = time.monotonic()

    async def send_json(
        self, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        await self.send_head(status, {"content-type": "application/json", **(headers or {})})
        await self.send_chunk(data)
        await self.finish()

    def cut(self) -> None:
        """Drop the connection mid-response, as a crashing upstream or proxy would."""
        self.exchange.cut = True
        self._connection.abort()


Handler = Callable[[Request, Responder], Awaitable[None]]


class _Connection(asyncio.Protocol):
    def __init__(self, server: FakeHTTPServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._exchange: Exchange | None = None
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)
        self._server.accepted += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        exchange = self._exchange
        if exchange is not None and exchange.finished is None:
            if not exchange.cut:
                exchange.client_closed = time.monotonic()
            exchange.closed.set()
        self._writable.set()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._server.write_pauses += 1
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def write(self, data: bytes) -> None:
        if not self._writable.is_set():
            await self._writable.wait()
        if self._closed or self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("client went away")
        self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _next(self) -> None:
        if self._task is not None or self._closed:
            return
        request = self._parse()
        if request is not None:
            self._task = asyncio.get_running_loop().create_task(self._serve(request))

    def _parse(self) -> Request | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self._buffer) < end + 4 + length:
            return None
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        return Request(method, path, headers, body)

    async def _serve(self, request: Request) -> None:
        exchange = Exchange(request, time.monotonic())
        self._server.exchanges.append(exchange)
        self._server.arrived.set()
        self._exchange = exchange
        try:
            await self._server.handler(request, Responder(self, exchange))
        except (ConnectionResetError, asyncio.CancelledError):
            return
        finally:
            if exchange.finished is not None:
                exchange.closed.set()
            self._exchange = None
            self._task = None
        self._next()


class FakeHTTPServer:
    """Serve `handler` on 127.0.0.1 and a free port.

    Attributes:
        exchanges: every request seen, in arrival order.
        write_pauses: how often a client stopped reading long enough to fill the socket.
        accepted: TCP connections accepted so far.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.exchanges: list[Exchange] = []
        self.arrived = asyncio.Event()  # set at every new request
        self.connections: set[_Connection] = set()
        self.write_pauses = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeHTTPServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self.connections):
                connection.abort()
            await self._server.wait_closed()
