"""Fixtures for the WebSocketService tests: a real WebSocket server (the `websockets`
library) on a free port, in a thread with its own event loop, and the real sidecar bridging
to it.

Routes: `/echo` sends every frame back as it came (text or binary); `/close1011` closes at
once with 1011 "boom"; `/sink` reads nothing until `sink_released` is set;
`/flood?count=N&size=B` sends N binary frames of B bytes as fast as the socket takes them
(each starting with its number), counting those sent in `flood_sent`, then closes 1000;
`/redirect` answers the handshake with a 302. Every path asked for and its headers are kept
in `requests`.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve

from generated.integration.v1 import websocket_pb2_grpc
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test


@dataclass
class EchoServer:
    """The server's state, read by the tests."""

    port: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    flood_sent: int = 0
    flood_done: threading.Event = field(default_factory=threading.Event)
    closed_codes: list[int | None] = field(default_factory=list)
    sink_released: threading.Event = field(default_factory=threading.Event)

    async def handle(self, socket: ServerConnection) -> None:
        request = socket.request
        assert request is not None
        self.requests.append((request.path, {k.lower(): v for k, v in request.headers.raw_items()}))
        route = urlsplit(request.path)
        try:
            if route.path.endswith("/echo"):
                async for message in socket:
                    await socket.send(message)
            elif route.path.endswith("/sink"):
                # reads nothing until released (a threading.Event: the test runs elsewhere)
                await asyncio.to_thread(self.sink_released.wait, 30)
                async for _ in socket:
                    pass
            elif route.path.endswith("/close1011"):
                await socket.close(1011, "boom")
            elif route.path.endswith("/flood"):
                query = parse_qs(route.query)
                count, size = int(query["count"][0]), int(query["size"][0])
                for number in range(count):
                    await socket.send(number.to_bytes(4, "big") + bytes(size - 4))
                    self.flood_sent = number + 1
                self.flood_done.set()
                await socket.close(1000)
            else:
                await socket.close(1008, "no such route")
        finally:
            self.closed_codes.append(socket.close_code)


def _redirect(connection: ServerConnection, request: Any) -> Any:
    """`/redirect` answers the handshake with a 302 to another port (never followed)."""
    if not request.path.endswith("/redirect"):
        return None
    response = connection.respond(302, "")
    response.headers["Location"] = "ws://127.0.0.1:9/elsewhere"
    return response


def _serve_in_thread(
    state: EchoServer, ssl_context: ssl.SSLContext | None = None
) -> Iterator[EchoServer]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Future[None] | None = None

    async def main() -> None:
        nonlocal stop
        stop = loop.create_future()
        # The server's own buffers are small so back-pressure shows at once.
        async with serve(
            state.handle,
            "127.0.0.1",
            0,
            max_size=None,
            write_limit=16 * 1024,
            compression=None,
            ssl=ssl_context,
            process_request=_redirect,
            close_timeout=1,
        ) as server:
            state.port = next(iter(server.sockets)).getsockname()[1]
            ready.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield state
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()


@pytest.fixture
def ws_server() -> Iterator[EchoServer]:
    yield from _serve_in_thread(EchoServer())


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("ws-tls")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("sidecar-client")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    other.cert_pem.write_to_path(str(folder / "other-ca.pem"))
    server.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    return TlsFiles(
        folder / "ca.pem", folder / "client.pem", folder / "client.key", folder / "other-ca.pem"
    )


@pytest.fixture
def mtls_ws_server(tls_files: TlsFiles) -> Iterator[EchoServer]:
    """The echo server over TLS, requiring a client certificate signed by the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls_files.ca.parent / "server.pem"))
    context.load_verify_locations(str(tls_files.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    yield from _serve_in_thread(EchoServer(), context)


def config_for(port: int, **settings: Any) -> str:
    """A config with one websocket service `ws` on the test server."""
    extra = "".join(f"    {key}: {value}\n" for key, value in settings.items())
    return (
        "services:\n"
        "  ws:\n"
        "    type: websocket\n"
        f"    url: ws://127.0.0.1:{port}/base\n"
        "    allowed_headers: [x-tenant]\n" + extra
    )


@pytest.fixture
async def bridge(ws_server: EchoServer) -> AsyncIterator[RunningServer]:
    async with serve_for_test(config_for(ws_server.port)) as running:
        yield running


@pytest.fixture
async def stub(bridge: RunningServer) -> AsyncIterator[websocket_pb2_grpc.WebSocketServiceStub]:
    async with grpc.aio.insecure_channel(bridge.address) as channel:
        yield websocket_pb2_grpc.WebSocketServiceStub(channel)
