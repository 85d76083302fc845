"""`TransportWsSubscription` against a scripted `graphql-transport-ws` server (the
`websockets` library, in this loop): pings answered with pongs before and after the ack,
close codes mapped, an ack that never comes, a server that speaks another protocol."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from sidecar.backends.graphql.transport_ws import (
    PROTOCOL,
    ReconnectPolicy,
    TransportWsSubscription,
)
from sidecar.config import TimeoutsConfig
from sidecar.config.websocket import WebSocketEndpoint
from sidecar.connections.websocket import WebSocketConnection
from sidecar.errors import DeadlineExceeded, FailedPrecondition, ResourceExhausted
from sidecar.resilience import SYSTEM_CLOCK

Script = Callable[[ServerConnection, list[dict[str, Any]]], Awaitable[None]]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script, str], Awaitable[TransportWsSubscription]]]:
    """`await scripted(script, protocol)`: a subscription to a server running `script`
    (which gets the socket and the list of messages it received so far)."""
    servers: list[Any] = []
    connections: list[WebSocketConnection] = []

    async def make(script: Script, protocol: str = PROTOCOL) -> TransportWsSubscription:
        received: list[dict[str, Any]] = []

        async def handler(socket: ServerConnection) -> None:
            await script(socket, received)

        # protocol "": the server accepts without choosing any subprotocol
        choose: Any = {"select_subprotocol": lambda *_: None} if not protocol else {}
        server = await serve(handler, "127.0.0.1", 0, subprotocols=[protocol or PROTOCOL], **choose)
        servers.append(server)
        port = next(iter(server.sockets)).getsockname()[1]
        connection = WebSocketConnection(
            "api", WebSocketEndpoint(url=f"ws://127.0.0.1:{port}/graphql"), TimeoutsConfig()
        )
        connections.append(connection)
        subscription = TransportWsSubscription(
            "api",
            lambda: connection.open("", {}, (PROTOCOL,)),
            init_payload={"authorization": "Bearer t"},
            operation={"query": "subscription { s }"},
            init_timeout=0.5,
            reconnect=ReconnectPolicy(),
            clock=SYSTEM_CLOCK,
        )
        subscription.received = received  # type: ignore[attr-defined]
        return subscription

    yield make
    for connection in connections:
        await connection.close()
    for server in servers:
        server.close()
        await server.wait_closed()


async def _take(socket: ServerConnection, received: list[dict[str, Any]]) -> dict[str, Any]:
    message = json.loads(await socket.recv())
    received.append(message)
    return message


async def test_pings_are_answered_with_pongs_before_and_after_the_ack(scripted: Any) -> None:
    async def script(socket: ServerConnection, received: list[dict[str, Any]]) -> None:
        await _take(socket, received)  # connection_init
        await socket.send('{"type":"ping"}')
        await _take(socket, received)  # pong
        await socket.send('{"type":"connection_ack"}')
        await _take(socket, received)  # subscribe
        await socket.send('{"type":"ping"}')
        await _take(socket, received)  # pong
        await socket.send('{"id":"1","type":"next","payload":{"data":{"s":1}}}')
        await socket.send('{"id":"1","type":"complete"}')
        await socket.wait_closed()

    subscription = await scripted(script)
    await subscription.start()
    events = [event async for event in subscription.events()]
    await subscription.close()
    assert [json.loads(event.data_json) for event in events] == [{"s": 1}]
    assert [m["type"] for m in subscription.received] == [
        "connection_init",
        "pong",
        "subscribe",
        "pong",
    ]
    assert subscription.received[0]["payload"] == {"authorization": "Bearer t"}


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        (4401, FailedPrecondition, "UPSTREAM_AUTH_FAILED"),
        (4403, FailedPrecondition, "UPSTREAM_AUTH_FAILED"),
        (4429, ResourceExhausted, "UPSTREAM_RATE_LIMITED"),
    ],
)
async def test_a_refused_init_maps_its_close_code(
    scripted: Any, code: int, kind: type, reason: str
) -> None:
    async def script(socket: ServerConnection, received: list[dict[str, Any]]) -> None:
        await _take(socket, received)
        await socket.close(code, "no")

    subscription = await scripted(script)
    with pytest.raises(kind) as raised:
        await subscription.start()
    assert raised.value.reason == reason
    assert raised.value.metadata["close_code"] == str(code)


async def test_an_ack_that_never_comes_is_deadline_exceeded(scripted: Any) -> None:
    async def script(socket: ServerConnection, received: list[dict[str, Any]]) -> None:
        await _take(socket, received)
        await socket.wait_closed()

    subscription = await scripted(script)
    with pytest.raises(DeadlineExceeded):
        await subscription.start()


async def test_a_server_without_the_protocol_is_refused(scripted: Any) -> None:
    async def script(socket: ServerConnection, received: list[dict[str, Any]]) -> None:
        await socket.wait_closed()

    subscription = await scripted(script, "")
    with pytest.raises(FailedPrecondition) as raised:
        await subscription.start()
    assert raised.value.reason == "UPSTREAM_REJECTED"


def test_reconnect_backoff_is_full_jitter_capped() -> None:
    policy = ReconnectPolicy(enabled=True, base_delay=0.5, max_delay=2.0)
    assert [policy.delay(n, lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.0]
    assert policy.delay(3, lambda: 0.25) == 0.5


async def test_a_large_document_is_parsed_off_the_loop_and_cached() -> None:
    from graphql import build_schema

    from sidecar.backends.graphql.documents import OFF_LOOP_BYTES, DocumentCache

    schema = build_schema("type Query { hello(name: String!): String! }")
    text = "{ " + " ".join(f'a{i}: hello(name: "n{i}")' for i in range(600)) + " }"
    assert len(text) > OFF_LOOP_BYTES
    cache = DocumentCache(max_entries=10, max_tokens=100_000)
    loop_thread = asyncio.current_task()
    prepared = await cache.prepare(text, None, schema)
    assert prepared.kind == "query" and loop_thread is asyncio.current_task()
    await cache.prepare(text, None, schema)
    assert (cache.misses, cache.hits) == (1, 1)
