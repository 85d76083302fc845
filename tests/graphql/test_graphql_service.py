"""GraphQLService against a real GraphQL server (ariadne under uvicorn): queries with
variables, mutations, local validation, GraphQL errors as data, the document cache, and
subscriptions over `graphql-transport-ws`."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from support import error_info

from generated.integration.v1 import graphql_pb2, graphql_pb2_grpc
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

from .conftest import GraphQLServer, config_for

Execute = graphql_pb2.GraphQLServiceExecuteRequest
Subscribe = graphql_pb2.GraphQLServiceSubscribeRequest


async def _schema_loaded(running: RunningServer) -> Any:
    backend = running.integrations.resolve("graphql", "").backend
    for _ in range(200):
        if backend.schema is not None:
            return backend
        await asyncio.sleep(0.02)
    raise AssertionError("the schema never loaded")


async def test_a_query_with_variables(
    stub: graphql_pb2_grpc.GraphQLServiceStub, gql_server: GraphQLServer
) -> None:
    answer = await stub.Execute(
        Execute(
            query="query Hello($name: String!) { hello(name: $name) }",
            variables_json='{"name": "grpc"}',
            operation_name="Hello",
        )
    )
    assert json.loads(answer.data_json) == {"hello": "hello grpc"}
    assert list(answer.errors) == []
    assert answer.http_status == 200
    sent = gql_server.posts[-1]
    assert sent["variables"] == {"name": "grpc"} and sent["operationName"] == "Hello"


async def test_a_mutation(
    stub: graphql_pb2_grpc.GraphQLServiceStub, gql_server: GraphQLServer
) -> None:
    answer = await stub.Execute(Execute(query="mutation { add(a: 2, b: 3) }"))
    assert json.loads(answer.data_json) == {"add": 5}
    answer = await stub.Execute(
        Execute(query="mutation Note($t: String!) { note(text: $t) }", variables_json='{"t": "x"}')
    )
    assert json.loads(answer.data_json) == {"note": ["x"]}
    assert gql_server.adds == 1 and gql_server.notes == ["x"]


async def test_an_invalid_query_is_refused_locally_without_an_upstream_request(
    stub: graphql_pb2_grpc.GraphQLServiceStub,
    gql_server: GraphQLServer,
    sidecar_on: RunningServer,
) -> None:
    await _schema_loaded(sidecar_on)
    posts_before = len(gql_server.posts)  # the introspection query
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Execute(Execute(query="{ nope hello(name: 1) }"))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert info.reason == "INVALID_REQUEST" and info.metadata["field"] == "query"
    problems = [info.metadata[f"problem_{i}"] for i in range(1, int(info.metadata["problems"]) + 1)]
    assert any(p.startswith("Cannot query field 'nope' on type 'Query'.") for p in problems)
    assert any("String cannot represent a non string value: 1" in p for p in problems)
    assert "Cannot query field 'nope'" in error.details()
    assert len(gql_server.posts) == posts_before


async def test_a_document_that_does_not_parse_is_refused_without_introspection(
    gql_server: GraphQLServer,
) -> None:
    async with (
        serve_for_test(config_for(gql_server.url)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(Execute(query="{ hello(name: "))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Syntax Error" in error_info(caught.value).metadata["problem_1"]
        # Without a schema an unknown field goes upstream, whose errors are data.
        answer = await stub.Execute(Execute(query="{ nope }"))
        assert "Cannot query field 'nope'" in answer.errors[0].message
        assert answer.http_status == 400
    assert gql_server.posts == [{"query": "{ nope }"}]


async def test_graphql_errors_are_data(stub: graphql_pb2_grpc.GraphQLServiceStub) -> None:
    answer = await stub.Execute(Execute(query='{ fail hello(name: "a") }'))
    assert json.loads(answer.data_json) == {"fail": None, "hello": "hello a"}
    (error,) = answer.errors
    assert error.message == "this field always fails"
    assert list(error.path) == ["fail"]
    assert (error.locations[0].line, error.locations[0].column) == (1, 3)


async def test_parsed_documents_are_cached_by_hash(
    stub: graphql_pb2_grpc.GraphQLServiceStub, sidecar_on: RunningServer
) -> None:
    backend = await _schema_loaded(sidecar_on)
    query = 'query { hello(name: "cache") }'
    for _ in range(3):
        await stub.Execute(Execute(query=query))
    assert (backend.documents.misses, backend.documents.hits) == (1, 2)


async def test_the_query_cache_is_bounded(gql_server: GraphQLServer) -> None:
    async with (
        serve_for_test(config_for(gql_server.url, query_cache_size=2)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        for name in "abcd":
            await stub.Execute(Execute(query=f'{{ hello(name: "{name}") }}'))
        assert len(running.integrations.resolve("graphql", "").backend.documents) == 2


@pytest.mark.parametrize(
    ("request_fields", "field", "reason"),
    [
        ({"query": "x" * 70_000}, "query", "VALUE_TOO_LARGE"),
        ({"query": ""}, "query", "INVALID_REQUEST"),
        (
            {"query": '{ hello(name: "a") }', "variables_json": "[1]"},
            "variables_json",
            "INVALID_REQUEST",
        ),
        (
            {"query": '{ hello(name: "a") }', "variables_json": "{"},
            "variables_json",
            "INVALID_REQUEST",
        ),
        (
            {
                "query": '{ hello(name: "a") }',
                "variables_json": '{"a":' + "[" * 40 + "]" * 40 + "}",
            },
            "variables_json",
            "INVALID_REQUEST",
        ),
        ({"query": "query A { notes } query B { notes }"}, "operation_name", "INVALID_REQUEST"),
        (
            {"query": "query A { notes }", "operation_name": "C"},
            "operation_name",
            "INVALID_REQUEST",
        ),
        ({"query": "subscription { forever }"}, "query", "INVALID_REQUEST"),
    ],
)
async def test_bad_requests_are_refused_before_the_upstream(
    stub: graphql_pb2_grpc.GraphQLServiceStub,
    gql_server: GraphQLServer,
    sidecar_on: RunningServer,
    request_fields: dict[str, str],
    field: str,
    reason: str,
) -> None:
    await _schema_loaded(sidecar_on)
    posts_before = len(gql_server.posts)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Execute(Execute(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert (info.metadata["field"], info.reason) == (field, reason)
    assert len(gql_server.posts) == posts_before


async def test_variables_over_the_size_limit_are_refused(gql_server: GraphQLServer) -> None:
    async with (
        serve_for_test(config_for(gql_server.url, max_variables_size="1KiB")) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(
                Execute(query="{ notes }", variables_json=json.dumps({"x": "y" * 2000}))
            )
        assert error_info(caught.value).reason == "VALUE_TOO_LARGE"


async def test_an_upstream_that_is_down_is_unavailable() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = config_for(f"http://127.0.0.1:{port}/graphql", retry_policy="{max_retries: 0}")
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(Execute(query="{ notes }"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# ---- subscriptions --------------------------------------------------------------------------


async def test_a_subscription_delivers_1000_events_in_order_then_completes(
    stub: graphql_pb2_grpc.GraphQLServiceStub, gql_server: GraphQLServer
) -> None:
    call = stub.Subscribe(
        Subscribe(
            query="subscription Count($n: Int!) { counter(upTo: $n) }",
            variables_json='{"n": 1000}',
        )
    )
    first = await call.read()
    assert first.WhichOneof("event") == "started"
    numbers = []
    while (message := await call.read()) is not grpc.aio.EOF:
        assert message.WhichOneof("event") == "next"
        assert list(message.next.errors) == []
        numbers.append(json.loads(message.next.data_json)["counter"])
    assert numbers == list(range(1000))
    assert await call.code() == grpc.StatusCode.OK
    init = gql_server.ws_messages[0]
    assert init["type"] == "connection_init"
    assert init["payload"]["authorization"] == "Bearer s3cret"
    assert gql_server.ws_headers[0]["authorization"] == "Bearer s3cret"
    assert gql_server.ws_headers[0]["sec-websocket-protocol"] == "graphql-transport-ws"


async def test_a_subscription_ended_by_the_client_sends_complete(
    stub: graphql_pb2_grpc.GraphQLServiceStub,
    gql_server: GraphQLServer,
    sidecar_on: RunningServer,
) -> None:
    call = stub.Subscribe(Subscribe(query="subscription { forever }"))
    assert (await call.read()).WhichOneof("event") == "started"
    for expected in range(3):
        message = await call.read()
        assert json.loads(message.next.data_json) == {"forever": expected}
    call.cancel()
    for _ in range(200):
        if "complete" in gql_server.ws_types() and gql_server.forever_stopped.is_set():
            break
        await asyncio.sleep(0.02)
    assert gql_server.ws_types() == ["connection_init", "subscribe", "complete"]
    assert gql_server.ws_messages[-1] == {"id": "1", "type": "complete"}
    assert gql_server.forever_stopped.is_set()
    backend = sidecar_on.integrations.resolve("graphql", "").backend
    for _ in range(100):
        if backend.open_subscriptions == 0:
            break
        await asyncio.sleep(0.02)
    assert backend.open_subscriptions == 0


async def test_an_invalid_subscription_is_refused_locally(
    stub: graphql_pb2_grpc.GraphQLServiceStub,
    gql_server: GraphQLServer,
    sidecar_on: RunningServer,
) -> None:
    await _schema_loaded(sidecar_on)
    call = stub.Subscribe(Subscribe(query="subscription { nothing }"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert gql_server.ws_headers == []


async def test_a_subscription_reconnects_with_backoff_when_configured(
    gql_server: GraphQLServer,
) -> None:
    config = config_for(
        gql_server.url,
        subscriptions="{reconnect: {enabled: true, base_delay: 1ms, max_attempts: 2}}",
    )
    gql_server.cut_next_socket = True
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        call = stub.Subscribe(Subscribe(query="subscription { counter(upTo: 3) }"))
        kinds = [message.WhichOneof("event") async for message in call]
        assert await call.code() == grpc.StatusCode.OK
    # started, the first event, the cut, then the whole counter again
    assert kinds == ["started", "next", "reconnected", "next", "next", "next"]
    assert gql_server.ws_types().count("connection_init") == 2


async def test_a_cut_subscription_without_reconnect_is_unavailable_with_the_close_code(
    gql_server: GraphQLServer,
) -> None:
    gql_server.cut_next_socket = True
    async with (
        serve_for_test(config_for(gql_server.url)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        call = stub.Subscribe(Subscribe(query="subscription { counter(upTo: 3) }"))
        assert (await call.read()).WhichOneof("event") == "started"
        assert (await call.read()).WhichOneof("event") == "next"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(caught.value).metadata["close_code"] == "1011"


async def test_a_large_answer_is_decoded_off_the_loop(
    stub: graphql_pb2_grpc.GraphQLServiceStub,
) -> None:
    name = "x" * 100_000  # an answer over OFF_LOOP_JSON_BYTES
    answer = await stub.Execute(
        Execute(
            query="query($n: String!) { hello(name: $n) }",
            variables_json=json.dumps({"n": name}),
        )
    )
    assert json.loads(answer.data_json) == {"hello": f"hello {name}"}


@pytest.mark.e2e
async def test_grpcurl_runs_a_query_through_reflection(
    sidecar_on: RunningServer, gql_server: GraphQLServer
) -> None:
    from support import grpcurl_path

    process = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        "-plaintext",
        "-d",
        json.dumps(
            {
                "query": "query($n: String!) { hello(name: $n) }",
                "variables_json": json.dumps({"n": "curl"}),
            }
        ),
        sidecar_on.address,
        "integration.v1.GraphQLService/Execute",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    reply = json.loads(out)  # grpcurl 1.8 prints the proto field names
    assert json.loads(reply["data_json"]) == {"hello": "hello curl"}
    assert reply["http_status"] == 200


async def test_a_subscriber_that_stops_reading_holds_the_upstream(
    stub: graphql_pb2_grpc.GraphQLServiceStub, gql_server: GraphQLServer
) -> None:
    """With the caller not reading, the upstream is held after a bounded amount: what gRPC's
    flow-control windows, the sockets and the sidecar's receive queue (16 frames, plus one
    socket read) hold. Events are small (~40 bytes), so that is many events but a few MB,
    and far from the million offered. Reading again resumes in order."""
    count = 1_000_000
    call = stub.Subscribe(Subscribe(query=f"subscription {{ counter(upTo: {count}) }}"))
    assert (await call.read()).WhichOneof("event") == "started"
    last, still_since, give_up = -1, time.monotonic(), time.monotonic() + 30
    while time.monotonic() < give_up:
        await asyncio.sleep(0.1)
        if gql_server.counter_yielded != last:
            last, still_since = gql_server.counter_yielded, time.monotonic()
        elif time.monotonic() - still_since > 0.5:
            break
    held = gql_server.counter_yielded
    assert held < 300_000, held
    print(f"events produced while the subscriber did not read: {held} of {count}")
    numbers = [json.loads((await call.read()).next.data_json)["counter"] for _ in range(5000)]
    assert numbers == list(range(5000))
    call.cancel()
