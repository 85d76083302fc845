"""Fixtures for the GraphQLService tests: a real GraphQL server (ariadne under uvicorn, HTTP
and `graphql-transport-ws`) on a free port, in a thread with its own event loop, and the
real sidecar in front of it.

The schema: `hello(name)`, `add(a, b)` (a mutation that counts its calls), `notes` (a list
mutations add to), `fail` (a field that errors), subscriptions `counter(upTo)` (0 .. upTo-1,
then complete) and `forever` (ticks until stopped). A middleware records what reached the
server: each HTTP body (`posts`), each `graphql-transport-ws` message a client sent
(`ws_messages`), and the handshake headers (`ws_headers`). `cut_next_socket` makes the
server close the next subscription's WebSocket with 1011 after its first event. `/moved`
answers 307 to `/graphql`; `fail_next_posts` answers that many POSTs with 503.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import uvicorn
from ariadne import MutationType, QueryType, SubscriptionType, make_executable_schema
from ariadne.asgi import GraphQL
from ariadne.asgi.handlers import GraphQLTransportWSHandler

from generated.integration.v1 import graphql_pb2_grpc
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

TYPE_DEFS = """
type Query {
  hello(name: String!): String!
  notes: [String!]!
  fail: String
}
type Mutation {
  add(a: Int!, b: Int!): Int!
  note(text: String!): [String!]!
}
type Subscription {
  counter(upTo: Int!): Int!
  forever: Int!
}
"""


@dataclass
class GraphQLServer:
    """The server's state, read by the tests."""

    port: int = 0
    posts: list[dict[str, Any]] = field(default_factory=list)
    ws_messages: list[dict[str, Any]] = field(default_factory=list)
    ws_headers: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    adds: int = 0
    forever_stopped: threading.Event = field(default_factory=threading.Event)
    cut_next_socket: bool = False
    fail_next_posts: int = 0
    counter_yielded: int = 0
    failed_posts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def ws_types(self) -> list[str]:
        return [str(message.get("type")) for message in self.ws_messages]


def _schema(state: GraphQLServer) -> Any:
    query, mutation, subscription = QueryType(), MutationType(), SubscriptionType()

    @query.field("hello")
    def hello(_: Any, info: Any, name: str) -> str:
        return f"hello {name}"

    @query.field("notes")
    def notes(_: Any, info: Any) -> list[str]:
        return state.notes

    @query.field("fail")
    def fail(_: Any, info: Any) -> str:
        raise ValueError("this field always fails")

    @mutation.field("add")
    def add(_: Any, info: Any, a: int, b: int) -> int:
        state.adds += 1
        return a + b

    @mutation.field("note")
    def note(_: Any, info: Any, text: str) -> list[str]:
        state.notes.append(text)
        return state.notes

    @subscription.source("counter")
    async def counter_source(_: Any, info: Any, upTo: int) -> AsyncIterator[int]:
        for number in range(upTo):
            state.counter_yielded = number + 1
            yield number

    @subscription.field("counter")
    def counter(number: int, info: Any, upTo: int) -> int:
        return number

    @subscription.source("forever")
    async def forever_source(_: Any, info: Any) -> AsyncIterator[int]:
        number = 0
        try:
            while True:
                yield number
                number += 1
                await asyncio.sleep(0.01)
        finally:
            state.forever_stopped.set()

    @subscription.field("forever")
    def forever(number: int, info: Any) -> int:
        return number

    return make_executable_schema(TYPE_DEFS, query, mutation, subscription)


def _recording(app: Any, state: GraphQLServer) -> Any:
    """ASGI middleware keeping what clients sent (and cutting a socket when asked)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/moved":
            await send(
                {
                    "type": "http.response.start",
                    "status": 307,
                    "headers": [(b"location", b"/graphql"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] == "http" and scope["method"] == "POST" and state.fail_next_posts:
            state.fail_next_posts -= 1
            state.failed_posts += 1
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"down"})
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            chunks: list[bytes] = []

            async def recording_receive() -> dict[str, Any]:
                message: dict[str, Any] = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    state.posts.append(json.loads(b"".join(chunks) or b"{}"))
                return message

            await app(scope, recording_receive, send)
            return
        if scope["type"] == "websocket":
            state.ws_headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
            cut = state.cut_next_socket
            state.cut_next_socket = False
            nexts = 0

            async def ws_receive() -> dict[str, Any]:
                message: dict[str, Any] = await receive()
                if message["type"] == "websocket.receive" and message.get("text"):
                    state.ws_messages.append(json.loads(message["text"]))
                return message

            async def ws_send(message: dict[str, Any]) -> None:
                nonlocal nexts
                if (
                    cut
                    and message["type"] == "websocket.send"
                    and '"next"' in (message.get("text") or "")
                ):
                    nexts += 1
                    if nexts > 1:
                        await send({"type": "websocket.close", "code": 1011, "reason": "cut"})
                        raise RuntimeError("cut by the test")
                await send(message)

            await app(scope, ws_receive, ws_send)
            return
        await app(scope, receive, send)

    return wrapped


def _serve_in_thread(
    state: GraphQLServer, tls: tuple[str, str] | None = None
) -> Iterator[GraphQLServer]:
    """Serve `state`'s app; `tls` (certificate chain file, key file) serves HTTPS/WSS."""
    app = GraphQL(_schema(state), websocket_handler=GraphQLTransportWSHandler())
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    state.port = listener.getsockname()[1]
    config = uvicorn.Config(
        _recording(app, state),
        log_level="critical",
        ws="websockets-sansio",
        lifespan="off",
        ws_ping_interval=None,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    give_up = time.monotonic() + 10
    while not server.started and time.monotonic() < give_up:
        time.sleep(0.01)
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


@pytest.fixture
def gql_server() -> Iterator[GraphQLServer]:
    yield from _serve_in_thread(GraphQLServer())


def config_for(url: str, **settings: Any) -> str:
    """A config with one graphql service `api` at `url`."""
    extra = "".join(f"    {key}: {value}\n" for key, value in settings.items())
    return f"services:\n  api:\n    type: graphql\n    endpoint: {url}\n" + extra


@pytest.fixture
async def sidecar_on(gql_server: GraphQLServer) -> AsyncIterator[RunningServer]:
    config = config_for(
        gql_server.url,
        introspection="true",
        auth='{type: bearer, token: "s3cret"}',
        retry_policy="{max_retries: 0}",
    )
    async with serve_for_test(config) as running:
        yield running


@pytest.fixture
async def stub(sidecar_on: RunningServer) -> AsyncIterator[graphql_pb2_grpc.GraphQLServiceStub]:
    async with grpc.aio.insecure_channel(sidecar_on.address) as channel:
        yield graphql_pb2_grpc.GraphQLServiceStub(channel)
