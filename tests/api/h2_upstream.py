"""A minimal real HTTP/2 upstream over TLS (ALPN `h2` only), built on the `h2` state
machine: every request is answered 200 with a JSON body naming its method, path and the
protocol, so a test can see the sidecar spoke HTTP/2 when the upstream offers it."""

from __future__ import annotations

import asyncio
import json
import ssl

import h2.config
import h2.connection
import h2.events

__all__ = ["H2Upstream"]


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self._transport: asyncio.Transport | None = None
        self._heads: dict[int, dict[str, str]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        transport.write(self._h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        for event in self._h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self._heads[event.stream_id] = {
                    (k.decode() if isinstance(k, bytes) else k): (
                        v.decode() if isinstance(v, bytes) else v
                    )
                    for k, v in event.headers
                }
            elif isinstance(event, h2.events.DataReceived):
                self._h2.acknowledge_received_data(len(event.data), event.stream_id)
            if isinstance(event, h2.events.StreamEnded):
                self._answer(event.stream_id)
        self._transport.write(self._h2.data_to_send())

    def _answer(self, stream_id: int) -> None:
        head = self._heads.pop(stream_id, {})
        body = json.dumps(
            {"protocol": "h2", "method": head.get(":method"), "path": head.get(":path")}
        ).encode()
        self._h2.send_headers(
            stream_id,
            [
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ],
        )
        self._h2.send_data(stream_id, body, end_stream=True)


class H2Upstream:
    """`await H2Upstream(context).start()`, then `port`; `await close()` at the end."""

    def __init__(self, context: ssl.SSLContext) -> None:
        context.set_alpn_protocols(["h2"])
        self._context = context
        self._server: asyncio.Server | None = None

    async def start(self) -> H2Upstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(_Protocol, "127.0.0.1", 0, ssl=self._context)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
