"""The `websocket` connection type: config, the caller-path rules, close-code mapping,
health pings, TLS and mutual TLS, no redirects, shared named connections, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from faultproxy import FaultProxy
from redis_server import free_port
from support import error_info

from generated.integration.v1 import admin_pb2, admin_pb2_grpc, websocket_pb2, websocket_pb2_grpc
from sidecar.config import ConfigError, parse_config
from sidecar.connections import Connections, build_connections
from sidecar.connections.websocket import (
    WebSocketConnection,
    caller_path_problem,
    close_error,
    join_url,
)
from sidecar.errors import DeadlineExceeded, InvalidArgument, Unavailable
from sidecar.testing import serve_for_test

from .conftest import EchoServer, TlsFiles

Request = websocket_pb2.WebSocketServiceConnectRequest


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    return str(raised.value)


@pytest.fixture
async def open_connection() -> AsyncIterator[Callable[[str], WebSocketConnection]]:
    made: list[Connections] = []

    def open_connection(section: str) -> WebSocketConnection:
        connections = build_connections(parse_config(f"connections:\n  up: {section}\n"))
        made.append(connections)
        connection = connections.get("up")
        assert isinstance(connection, WebSocketConnection)
        return connection

    yield open_connection
    for connections in made:
        await connections.close()


# ---- pure rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "path", "joined"),
    [
        ("ws://h/base", "", "ws://h/base"),
        ("ws://h/base", "/echo", "ws://h/base/echo"),
        ("ws://h/base/", "/echo?a=1", "ws://h/base/echo?a=1"),
        ("ws://h/base?key=k", "/echo?a=1", "ws://h/base/echo?key=k&a=1"),
        ("wss://h:8443", "/x", "wss://h:8443/x"),
    ],
)
def test_a_caller_path_goes_under_the_configured_url(base: str, path: str, joined: str) -> None:
    assert caller_path_problem(path) is None
    assert join_url(base, path) == joined


@pytest.mark.parametrize(
    "path",
    [
        "x",
        "//h/x",
        "http://h/x",
        "/a/../b",
        "/..",
        "/a/./b",
        "/%2e%2e/x",
        "/%2F",
        "/%5c",
        "/a\r\n",
        "/a b",
        "/a#b",
        "/a\\b",
        "/a%00",
        "/" + "a" * 3000,
    ],
)
def test_paths_that_could_leave_the_url_have_a_problem(path: str) -> None:
    assert caller_path_problem(path) is not None


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        (1000, None, None),
        (4000, None, None),
        (1001, Unavailable, "STREAM_INTERRUPTED"),
        (1006, Unavailable, "STREAM_INTERRUPTED"),
        (1011, Unavailable, "STREAM_INTERRUPTED"),
        (1008, InvalidArgument, "UPSTREAM_REJECTED"),
        (1009, InvalidArgument, "UPSTREAM_REJECTED"),
    ],
)
def test_close_codes_map_to_errors_carrying_the_code(
    code: int, kind: type | None, reason: str | None
) -> None:
    error = close_error("up", code, "why")
    if kind is None:
        assert error is None
        return
    assert isinstance(error, kind) and error.reason == reason
    assert (error.metadata["close_code"], error.metadata["close_reason"]) == (str(code), "why")


# ---- config --------------------------------------------------------------------------------


def test_a_websocket_connection_and_services_on_it_load() -> None:
    config = parse_config(
        "connections:\n  feed: {type: websocket, url: 'wss://feed.example/v2', headers: {x-a: b}}\n"
        "services:\n"
        "  a: {type: websocket, connection: feed}\n"
        "  b: {type: websocket, connection: feed, allowed_headers: [X-Tenant]}\n"
        "  c: {type: websocket, url: 'ws://127.0.0.1:1/x'}\n"
    )
    assert [config.connection_of(name) for name in "abc"] == ["feed", "feed", "c"]
    assert config.services["b"].allowed_headers == ("x-tenant",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("connections:\n  w: {type: websocket}\n", "connections.w.url"),
        ("connections:\n  w: {type: websocket, url: 'http://h/'}\n", "ws:// or wss://"),
        ("connections:\n  w: {type: websocket, url: 'ws://h/', tls: true}\n", "wss://"),
        ("services:\n  w: {type: websocket}\n", "set url"),
        (
            "connections:\n  f: {type: websocket, url: 'ws://h/'}\n"
            "services:\n  w: {type: websocket, connection: f, url: 'ws://x/'}\n",
            "belong to connection",
        ),
        (
            "services:\n  w: {type: websocket, url: 'ws://h/', allowed_headers: [upgrade]}\n",
            "handshake",
        ),
        (
            "services:\n  w: {type: websocket, url: 'ws://h/', allowed_headers: ['a b']}\n",
            "not HTTP header names",
        ),
        (
            "services:\n  w: {type: websocket, url: 'ws://h/', buffered_frames: 0}\n",
            "buffered_frames",
        ),
        (
            "connections:\n  r: {type: redis}\nservices:\n  w: {type: websocket, connection: r}\n",
            "not a configured websocket connection",
        ),
    ],
)
def test_bad_websocket_settings_are_refused(text: str, message: str) -> None:
    assert message in problems(text)


# ---- the connection ------------------------------------------------------------------------


async def test_a_health_checked_connection_pings_with_a_handshake(
    ws_server: EchoServer, open_connection: Callable[[str], WebSocketConnection]
) -> None:
    connection = open_connection(
        f"{{type: websocket, url: 'ws://127.0.0.1:{ws_server.port}/echo', health_check: true}}"
    )
    assert connection.probed
    await connection.ping()
    assert [path for path, _ in ws_server.requests] == ["/echo"]
    await connection.close()
    await connection.close()
    with pytest.raises(Unavailable):
        await connection.ping()


async def test_without_health_check_the_connection_is_not_probed(
    open_connection: Callable[[str], WebSocketConnection],
) -> None:
    connection = open_connection(f"{{type: websocket, url: 'ws://127.0.0.1:{free_port()}/'}}")
    assert not connection.probed
    await connection.ping()  # nothing is sent


async def test_a_refused_upstream_is_unavailable(
    open_connection: Callable[[str], WebSocketConnection],
) -> None:
    connection = open_connection(
        f"{{type: websocket, url: 'ws://127.0.0.1:{free_port()}/', health_check: true}}"
    )
    with pytest.raises(Unavailable) as raised:
        await connection.ping()
    assert raised.value.metadata == {"target": "up", "upstream_status": "unreachable"}


async def test_a_black_holed_upstream_is_deadline_exceeded(
    ws_server: EchoServer, open_connection: Callable[[str], WebSocketConnection]
) -> None:
    async with FaultProxy("127.0.0.1", ws_server.port) as proxy:
        connection = open_connection(
            f"{{type: websocket, url: 'ws://{proxy.host}:{proxy.port}/echo', health_check: true"
            ", timeouts: {connect: 0.3s}}"
        )
        await connection.ping()
        proxy.paused = True
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(connection.ping(), 5)


async def test_a_redirect_is_never_followed(
    ws_server: EchoServer, open_connection: Callable[[str], WebSocketConnection]
) -> None:
    connection = open_connection(f"{{type: websocket, url: 'ws://127.0.0.1:{ws_server.port}/'}}")
    with pytest.raises(Unavailable) as raised:
        await connection.open("/redirect")
    assert "redirects are not followed" in raised.value.message


async def test_mutual_tls(
    mtls_ws_server: EchoServer,
    tls_files: TlsFiles,
    open_connection: Callable[[str], WebSocketConnection],
) -> None:
    url = f"wss://localhost:{mtls_ws_server.port}/echo"
    trusted = open_connection(
        f"{{type: websocket, url: '{url}', health_check: true, tls: {{ca_file: '{tls_files.ca}'"
        f", cert_file: '{tls_files.client_cert}', key_file: '{tls_files.client_key}'}}}}"
    )
    await trusted.ping()
    untrusted = open_connection(
        f"{{type: websocket, url: '{url}', health_check: true, tls: {{ca_file: "
        f"'{tls_files.other_ca}', cert_file: '{tls_files.client_cert}', key_file: "
        f"'{tls_files.client_key}'}}}}"
    )
    with pytest.raises(Unavailable):
        await untrusted.ping()
    anonymous = open_connection(
        f"{{type: websocket, url: '{url}', health_check: true, tls: {{ca_file: '{tls_files.ca}'}}}}"
    )
    with pytest.raises(Unavailable):
        await anonymous.ping()


# ---- through the sidecar -------------------------------------------------------------------


async def test_services_share_a_named_connection_listed_by_admin(ws_server: EchoServer) -> None:
    config = (
        f"connections:\n  feed: {{type: websocket, url: 'ws://127.0.0.1:{ws_server.port}/base'}}\n"
        "services:\n"
        "  a: {type: websocket, connection: feed, headers: {x-service: a}}\n"
        "  b: {type: websocket, connection: feed}\n"
    )
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        listed = await admin_pb2_grpc.AdminServiceStub(channel).ListConnections(
            admin_pb2.ListConnectionsRequest()
        )
        (feed,) = [c for c in listed.connections if c.name == "feed"]
        assert (feed.type, list(feed.users), feed.implicit) == ("websocket", ["a", "b"], False)
        stub = websocket_pb2_grpc.WebSocketServiceStub(channel)
        for target in "ab":
            call = stub.Connect()
            await call.write(Request(open=websocket_pb2.WebSocketOpen(target=target, path="/echo")))
            await call.read()
            await call.done_writing()
            assert (await call.read()).closed.code == 1000
    assert [path for path, _ in ws_server.requests] == ["/base/echo", "/base/echo"]
    assert ws_server.requests[0][1]["x-service"] == "a"
    assert "x-service" not in ws_server.requests[1][1]


async def test_shutdown_ends_open_bridges_with_ok(ws_server: EchoServer) -> None:
    config = f"services:\n  ws: {{type: websocket, url: 'ws://127.0.0.1:{ws_server.port}'}}\n"
    async with serve_for_test(config) as running:
        channel = grpc.aio.insecure_channel(running.address)
        call = websocket_pb2_grpc.WebSocketServiceStub(channel).Connect()
        await call.write(Request(open=websocket_pb2.WebSocketOpen(path="/echo")))
        await call.read()
        await running.stop(grace=2.0)
        closed = await call.read()
        assert closed.closed.code == 1001
        assert await call.code() == grpc.StatusCode.OK
        await channel.close()
    for _ in range(100):  # the server thread notes the close once its handler ends
        if ws_server.closed_codes:
            break
        await asyncio.sleep(0.02)
    assert ws_server.closed_codes == [1001]


async def test_max_sessions_bounds_open_websockets(ws_server: EchoServer) -> None:
    config = (
        f"services:\n  ws: {{type: websocket, url: 'ws://127.0.0.1:{ws_server.port}'"
        ", max_sessions: 1}\n"
    )
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = websocket_pb2_grpc.WebSocketServiceStub(channel)
        first = stub.Connect()
        await first.write(Request(open=websocket_pb2.WebSocketOpen(path="/echo")))
        await first.read()
        second = stub.Connect()
        await second.write(Request(open=websocket_pb2.WebSocketOpen(path="/echo")))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(caught.value).reason == "OVER_CAPACITY"
        await first.done_writing()
        assert (await first.read()).closed.code == 1000
        third = stub.Connect()  # the slot is free again
        await third.write(Request(open=websocket_pb2.WebSocketOpen(path="/echo")))
        assert (await third.read()).WhichOneof("kind") == "opened"
        third.cancel()
