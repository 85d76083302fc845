"""GraphQL service settings and edges: config validation, a named http connection with a
path, an upstream `error` message, response and subscription bounds, health, shutdown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from support import error_info

from generated.integration.v1 import graphql_pb2, graphql_pb2_grpc
from sidecar.config import ConfigError, parse_config
from sidecar.testing import serve_for_test

from .conftest import GraphQLServer, config_for

Execute = graphql_pb2.GraphQLServiceExecuteRequest
Subscribe = graphql_pb2.GraphQLServiceSubscribeRequest


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    return str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services:\n  g: {type: graphql}\n", "set endpoint"),
        ("services:\n  g: {type: graphql, endpoint: 'ftp://h/'}\n", "http:// or https://"),
        (
            "connections:\n  a: {type: http, base_url: 'http://h'}\n"
            "services:\n  g: {type: graphql, connection: a, endpoint: 'http://h/graphql'}\n",
            "endpoint belong to connection",
        ),
        (
            "services:\n  g: {type: graphql, endpoint: 'http://h/', path: /graphql}\n",
            "path goes with connection",
        ),
        (
            "services:\n  g: {type: graphql, endpoint: 'http://h/', auth: {type: bearer}}\n",
            "needs token",
        ),
        (
            "services:\n  g: {type: graphql, endpoint: 'http://h/', subscriptions: "
            "{url: 'http://h/'}}\n",
            "ws:// or wss://",
        ),
        (
            "services:\n  g: {type: graphql, endpoint: 'http://h/', max_variables_depth: 0}\n",
            "max_variables_depth",
        ),
        (
            "connections:\n  w: {type: websocket, url: 'ws://h'}\n"
            "services:\n  g: {type: graphql, connection: w}\n",
            "not a configured http connection",
        ),
    ],
)
def test_bad_graphql_settings_are_refused(text: str, message: str) -> None:
    assert message in problems(text)


def test_the_spec_s_endpoint_is_the_implicit_connection_s_url() -> None:
    config = parse_config("services:\n  g: {type: graphql, endpoint: 'https://h/graphql'}\n")
    assert config.connection_of("g") == "g"
    assert config.services["g"].base_url == "https://h/graphql"  # type: ignore[union-attr]


async def test_a_named_http_connection_and_a_path(gql_server: GraphQLServer) -> None:
    config = (
        f"connections:\n  api: {{type: http, base_url: 'http://127.0.0.1:{gql_server.port}'}}\n"
        "services:\n  shop: {type: graphql, connection: api, path: /graphql}\n"
    )
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        answer = await stub.Execute(Execute(target="shop", query='{ hello(name: "named") }'))
        assert json.loads(answer.data_json) == {"hello": "hello named"}
        call = stub.Subscribe(Subscribe(target="shop", query="subscription { counter(upTo: 2) }"))
        kinds = []
        while (message := await call.read()) is not grpc.aio.EOF:
            kinds.append(message.WhichOneof("event"))
        assert kinds == ["started", "next", "next"]


async def test_an_upstream_error_message_ends_the_subscription_with_its_errors(
    gql_server: GraphQLServer,
) -> None:
    async with (
        serve_for_test(config_for(gql_server.url)) as running,  # no schema: upstream validates
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        call = graphql_pb2_grpc.GraphQLServiceStub(channel).Subscribe(
            Subscribe(query="subscription { nothing }")
        )
        assert (await call.read()).WhichOneof("event") == "started"
        last = await call.read()
        assert "Cannot query field 'nothing'" in last.next.errors[0].message
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK


async def test_an_answer_over_max_response_size_is_refused(gql_server: GraphQLServer) -> None:
    async with (
        serve_for_test(config_for(gql_server.url, max_response_size="1KiB")) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(Execute(query=f'{{ hello(name: "{"x" * 2000}") }}'))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(caught.value).reason == "RESULT_TOO_LARGE"


async def test_max_subscriptions_bounds_open_subscriptions(gql_server: GraphQLServer) -> None:
    async with (
        serve_for_test(config_for(gql_server.url, max_subscriptions=1)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        first = stub.Subscribe(Subscribe(query="subscription { forever }"))
        assert (await first.read()).WhichOneof("event") == "started"
        second = stub.Subscribe(Subscribe(query="subscription { forever }"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(caught.value).reason == "OVER_CAPACITY"
        first.cancel()


async def test_shutdown_ends_a_subscription_with_ok_and_complete(
    gql_server: GraphQLServer,
) -> None:
    async with serve_for_test(config_for(gql_server.url)) as running:
        channel = grpc.aio.insecure_channel(running.address)
        call = graphql_pb2_grpc.GraphQLServiceStub(channel).Subscribe(
            Subscribe(query="subscription { forever }")
        )
        assert (await call.read()).WhichOneof("event") == "started"
        await call.read()
        await running.stop(grace=2.0)
        while await call.read() is not grpc.aio.EOF:
            pass
        assert await call.code() == grpc.StatusCode.OK
        await channel.close()
    assert gql_server.ws_messages[-1] == {"id": "1", "type": "complete"}


async def test_health_asks_for_the_typename(gql_server: GraphQLServer) -> None:
    async with serve_for_test(config_for(gql_server.url)) as running:
        await running.integrations.resolve("graphql", "").backend.ping()
    assert gql_server.posts == [{"query": "{ __typename }"}]


async def test_a_schema_that_cannot_load_leaves_validation_to_the_upstream() -> None:
    from redis_server import free_port

    config = config_for(f"http://127.0.0.1:{free_port()}/graphql", introspection="true")
    async with serve_for_test(config) as running:
        backend = running.integrations.resolve("graphql", "").backend
        for _ in range(100):
            if backend._schema_task is not None and backend._schema_task.done():
                break
            await asyncio.sleep(0.02)
        assert backend.schema is None
        prepared = await backend.prepare("{ anything }", "")
        assert prepared.kind == "query"


async def test_a_redirect_is_not_followed(gql_server: GraphQLServer) -> None:
    moved = gql_server.url.replace("/graphql", "/moved")
    async with (
        serve_for_test(config_for(moved)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(Execute(query="{ notes }"))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(caught.value).metadata["upstream_status"] == "307"
    assert gql_server.posts == []


async def test_a_query_is_retried_a_mutation_only_with_an_idempotency_key(
    gql_server: GraphQLServer,
) -> None:
    retrying = "{max_retries: 2, base_delay: 1ms, max_delay: 1ms}"
    async with (
        serve_for_test(config_for(gql_server.url, retry_policy=retrying)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
        gql_server.fail_next_posts = 1
        answer = await stub.Execute(Execute(query="{ notes }"))
        assert json.loads(answer.data_json) == {"notes": []}
        gql_server.fail_next_posts = 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Execute(Execute(query='mutation { note(text: "a") }'))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        gql_server.fail_next_posts = 1
        answer = await stub.Execute(
            Execute(query='mutation { note(text: "b") }'), metadata=(("idempotency-key", "k1"),)
        )
        assert json.loads(answer.data_json) == {"note": ["b"]}
    assert gql_server.failed_posts == 3 and gql_server.notes == ["b"]


async def test_https_and_wss_share_the_service_s_tls_settings(
    tmp_path: Path,
) -> None:
    import trustme

    from .conftest import GraphQLServer, _serve_in_thread

    ca = trustme.CA()
    certificate = ca.issue_cert("localhost")
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    certificate.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    served = _serve_in_thread(
        GraphQLServer(), (str(tmp_path / "server.pem"), str(tmp_path / "server.key"))
    )
    server = next(served)
    try:
        url = f"https://localhost:{server.port}/graphql"
        config = config_for(url, tls=f"{{ca_file: '{tmp_path / 'ca.pem'}'}}")
        async with (
            serve_for_test(config) as running,
            grpc.aio.insecure_channel(running.address) as channel,
        ):
            stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
            answer = await stub.Execute(Execute(query='{ hello(name: "tls") }'))
            assert json.loads(answer.data_json) == {"hello": "hello tls"}
            call = stub.Subscribe(Subscribe(query="subscription { counter(upTo: 2) }"))
            kinds = []
            while (message := await call.read()) is not grpc.aio.EOF:
                kinds.append(message.WhichOneof("event"))
            assert kinds == ["started", "next", "next"]
        untrusted = config_for(url)  # the system's CAs do not know the test CA
        async with (
            serve_for_test(untrusted + "    retry_policy: {max_retries: 0}\n") as running,
            grpc.aio.insecure_channel(running.address) as channel,
        ):
            stub = graphql_pb2_grpc.GraphQLServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Execute(Execute(query="{ notes }"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        served.close()
