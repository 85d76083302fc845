"""Traces end to end: an OTLP receiver started here gets one trace per call, rooted at the
caller's traceparent, with a client span per upstream attempt under the server span, for
Redis (Cache.Get), PostgreSQL (Sql.Query) and an OpenAI-compatible upstream that sees the
attempt's traceparent; an AI fallback and an HTTP retry show each attempt as its own span; a
pub/sub Publish carries the traceparent to subscribers; a sampled-out call makes no span."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import grpc
import pytest
from ai.fake_http import FakeHTTPServer, Request, Responder
from ai.fake_llm import FakeLLM, Step
from ai.helpers import API_KEY, model, user
from observability.otlp_receiver import OtlpReceiver, ReceivedSpan
from observability.pg_for_tests import postgres_dsn
from redis_server import key_prefix, redis_address

from generated.integration.v1 import (
    ai_pb2,
    ai_pb2_grpc,
    cache_pb2,
    cache_pb2_grpc,
    http_pb2,
    http_pb2_grpc,
    pubsub_pb2,
    pubsub_pb2_grpc,
    sql_pb2,
    sql_pb2_grpc,
)
from sidecar.testing import serve_for_test

__all__ = ["key_prefix", "postgres_dsn", "redis_address"]  # fixtures used by name

SERVER, CLIENT = 2, 3  # OTLP SpanKind values


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """(header, trace id, parent span id) of a fresh caller trace."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


def config(receiver: OtlpReceiver, redis: tuple[str, int], prefix: str, dsn: str, llm: str) -> str:
    on_redis = f'host: {redis[0]}, port: {redis[1]}, key_prefix: "{prefix}"'
    return f"""
server: {{access_log: false}}
integration:
  retry_policy: {{max_retries: 0}}
  tracing:
    sampling_ratio: 1.0
    export_delay: 20ms
    otlp: {{endpoint: "{receiver.endpoint}"}}
services:
  cache: {{type: cache, backend: redis, {on_redis}}}
  events: {{type: pubsub, backend: redis, {on_redis}}}
  db: {{type: sql, backend: postgres, dsn: "{dsn}"}}
{model("primary", llm)}{model("backup", llm)}
  chat:
    type: ai_alias
    retry_policy: {{max_retries: 0}}
    deployments: [primary, backup]
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    server = await FakeLLM(api_key=API_KEY).start()
    yield server
    await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def channel(
    receiver: OtlpReceiver,
    redis_address: tuple[str, int],
    key_prefix: str,
    postgres_dsn: str,
    fake: FakeLLM,
) -> AsyncIterator[grpc.aio.Channel]:
    text = config(receiver, redis_address, key_prefix, postgres_dsn, fake.url)
    async with (
        serve_for_test(text) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield channel


def of_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.trace_id == trace_id]


async def one_trace(
    receiver: OtlpReceiver, trace_id: str, parent: str, clients: int
) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The server span of `trace_id` (child of the caller's `parent`) and its client spans,
    once `clients` of them arrived; nothing else in the trace."""
    spans = await receiver.spans_until(
        lambda spans: (
            sum(s.kind == CLIENT for s in of_trace(spans, trace_id)) >= clients
            and any(s.kind == SERVER for s in of_trace(spans, trace_id))
        )
    )
    mine = of_trace(spans, trace_id)
    (server,) = [span for span in mine if span.kind == SERVER]
    assert server.parent_span_id == parent
    children = [span for span in mine if span is not server]
    assert len(children) == clients, children
    assert all(span.parent_span_id == server.span_id for span in children)
    assert all(span.kind == CLIENT for span in children)
    assert server.service_name == "integration-sidecar"
    return server, children


async def test_cache_get_is_a_server_span_over_one_redis_attempt(
    channel: grpc.aio.Channel, receiver: OtlpReceiver
) -> None:
    header, trace_id, parent = traceparent()
    await cache_pb2_grpc.CacheServiceStub(channel).Get(
        cache_pb2.GetRequest(key="k"), metadata=(("traceparent", header),)
    )
    server, (attempt,) = await one_trace(receiver, trace_id, parent, clients=1)
    assert server.name == "integration.v1.CacheService/Get"
    assert server.attributes == {
        "rpc.system": "grpc",
        "rpc.service": "integration.v1.CacheService",
        "rpc.method": "Get",
        "rpc.grpc.status_code": 0,
    }
    assert attempt.attributes["db.system"] == "redis"
    assert attempt.attributes["db.operation"] == "Get"
    assert attempt.attributes["sidecar.attempt"] == 1
    assert attempt.name == "Get redis"


async def test_sql_query_is_a_server_span_over_one_postgresql_attempt(
    channel: grpc.aio.Channel, receiver: OtlpReceiver
) -> None:
    header, trace_id, parent = traceparent()
    await sql_pb2_grpc.SqlServiceStub(channel).Query(
        sql_pb2.QueryRequest(sql="SELECT 1"), metadata=(("traceparent", header),)
    )
    server, (attempt,) = await one_trace(receiver, trace_id, parent, clients=1)
    assert server.attributes["rpc.method"] == "Query"
    assert (attempt.attributes["db.system"], attempt.attributes["db.operation"]) == (
        "postgresql",
        "Query",
    )


async def test_ai_fallback_shows_each_attempt_and_the_upstream_sees_its_traceparent(
    channel: grpc.aio.Channel, receiver: OtlpReceiver, fake: FakeLLM
) -> None:
    fake.then(Step(status=503))  # the primary fails: the alias falls back to the backup
    header, trace_id, parent = traceparent()
    reply = await ai_pb2_grpc.AIServiceStub(channel).Complete(
        ai_pb2.CompleteRequest(target="chat", messages=user("hi")),
        metadata=(("traceparent", header),),
    )
    assert reply.content
    _, attempts = await one_trace(receiver, trace_id, parent, clients=2)
    for attempt in attempts:
        assert attempt.name == "chat fake-model"
        assert attempt.attributes["gen_ai.system"] == "openai"
        assert attempt.attributes["gen_ai.request.model"] == "fake-model"
        assert attempt.attributes["http.request.method"] == "POST"
    assert sorted(a.attributes.get("http.response.status_code", 0) for a in attempts) == [0, 200]
    # Each request named its own attempt span as the parent, in the caller's trace.
    sent = [exchange.request.headers["traceparent"] for exchange in fake.completions]
    assert sorted(sent) == sorted(f"00-{trace_id}-{a.span_id}-01" for a in attempts)


async def test_publish_carries_the_traceparent_to_subscribers(
    channel: grpc.aio.Channel, receiver: OtlpReceiver
) -> None:
    pubsub = pubsub_pb2_grpc.PubSubServiceStub(channel)
    stream = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["news"]))
    assert (await stream.read()).HasField("started")
    header, trace_id, _ = traceparent()
    await pubsub.Publish(
        pubsub_pb2.PublishRequest(channel="news", payload=b"x"),
        metadata=(("traceparent", header),),
    )
    message = (await stream.read()).message
    stream.cancel()
    server, (attempt,) = await one_trace(receiver, trace_id, header.split("-")[2], clients=1)
    assert attempt.attributes["messaging.system"] == "redis"
    assert attempt.attributes["messaging.operation"] == "Publish"
    assert server.attributes["messaging.destination.name"] == "news"
    # The message names the Publish call's span (set before the pipeline's attempts).
    assert message.metadata["traceparent"] == f"00-{trace_id}-{server.span_id}-01"


async def test_a_sampled_out_call_exports_no_span_and_sends_no_sampled_flag(
    channel: grpc.aio.Channel, receiver: OtlpReceiver, fake: FakeLLM
) -> None:
    header, trace_id, _ = traceparent(sampled=False)
    await ai_pb2_grpc.AIServiceStub(channel).Complete(
        ai_pb2.CompleteRequest(target="primary", messages=user("hi")),
        metadata=(("traceparent", header),),
    )
    marker, marker_trace, _ = traceparent()  # a sampled call after it, to know export ran
    await cache_pb2_grpc.CacheServiceStub(channel).Get(
        cache_pb2.GetRequest(key="k"), metadata=(("traceparent", marker),)
    )
    spans = await receiver.spans_until(lambda spans: len(of_trace(spans, marker_trace)) >= 2)
    assert of_trace(spans, trace_id) == []
    # No attempt span under a span that does not record: the upstream gets no traceparent
    # of the sidecar's making.
    assert "traceparent" not in fake.completions[-1].request.headers


async def test_each_retry_of_an_http_call_is_a_span_the_upstream_is_told_of() -> None:
    answers = [503, 200]

    async def handler(request: Request, respond: Responder) -> None:
        await respond.send_json(answers.pop(0), {"ok": True})

    upstream = await FakeHTTPServer(handler).start()
    try:
        async with OtlpReceiver() as receiver:
            config = f"""
server: {{access_log: false}}
integration:
  tracing: {{export_delay: 20ms, otlp: {{endpoint: "{receiver.endpoint}"}}}}
services:
  rest:
    type: api
    base_url: {upstream.url}
    retry_policy: {{max_retries: 2, base_delay: 1ms, jitter: false}}
"""
            header, trace_id, parent = traceparent()
            async with (
                serve_for_test(config) as running,
                grpc.aio.insecure_channel(running.address) as channel,
            ):
                reply = await http_pb2_grpc.HttpServiceStub(channel).Call(
                    http_pb2.HttpServiceCallRequest(
                        request=http_pb2.HttpRequest(method="GET", path="thing")
                    ),
                    metadata=(("traceparent", header),),
                )
                assert reply.status == 200
                _, attempts = await one_trace(receiver, trace_id, parent, clients=2)
    finally:
        await upstream.close()
    assert sorted(a.attributes["sidecar.attempt"] for a in attempts) == [1, 2]
    assert all(a.name == "Call rest" for a in attempts)
    assert all(a.attributes["http.request.method"] == "GET" for a in attempts)
    statuses = [a.attributes["http.response.status_code"] for a in by_attempt(attempts)]
    assert statuses == [503, 200]
    # Each request named its own attempt, not the call or the caller.
    sent = [exchange.request.headers["traceparent"] for exchange in upstream.exchanges]
    assert sent == [f"00-{trace_id}-{a.span_id}-01" for a in by_attempt(attempts)]


def by_attempt(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return sorted(spans, key=lambda span: span.attributes["sidecar.attempt"])


async def test_without_a_tracing_block_nothing_is_traced() -> None:
    async with serve_for_test("services:\n  cache: {type: cache}\n") as running:
        assert running.tracing is None  # no tracer provider at all


async def test_an_embedding_is_a_gen_ai_span(
    channel: grpc.aio.Channel, receiver: OtlpReceiver
) -> None:
    header, trace_id, parent = traceparent()
    await ai_pb2_grpc.AIServiceStub(channel).Embed(
        ai_pb2.EmbedRequest(target="primary", inputs=["hello"]),
        metadata=(("traceparent", header),),
    )
    _, (attempt,) = await one_trace(receiver, trace_id, parent, clients=1)
    assert attempt.name == "embeddings fake-model"
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"
