"""`/metrics` after a mix of calls, parsed with prometheus_client's parser: the
specification's metrics (requests, durations, error rate, connection status), the
OpenTelemetry RPC server duration, pool sizes per connection and pub/sub message counts,
each with its labels and counts. Real Redis (shared) and PostgreSQL; the broken cache
points at a port nothing listens on."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from observability.pg_for_tests import postgres_dsn
from prometheus_client.parser import text_string_to_metric_families
from redis_server import free_port, key_prefix, redis_address

from generated.integration.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    pubsub_pb2,
    pubsub_pb2_grpc,
    sql_pb2,
    sql_pb2_grpc,
)
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

__all__ = ["key_prefix", "postgres_dsn", "redis_address"]  # fixtures used by name

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def config(redis: tuple[str, int], prefix: str, dsn: str, listen: str) -> str:
    host, port = redis
    return f"""
server: {{access_log: false}}
integration:
  retry_policy: {{max_retries: 0}}
  health_monitoring: {{check_interval: 100ms, timeout: 500ms, consecutive_failures: 1}}
  metrics: {{prometheus_listen: "{listen}"}}
services:
  cache: {{type: cache, backend: redis, host: {host}, port: {port}, key_prefix: "{prefix}"}}
  broken:
    type: cache
    backend: redis
    host: 127.0.0.1
    port: {free_port()}
    timeouts: {{connect: 200ms}}
  db: {{type: sql, backend: postgres, dsn: "{dsn}"}}
  events:
    type: pubsub
    backend: redis
    host: {host}
    port: {port}
    key_prefix: "{prefix}"
    reliable_topics: ["jobs"]
    visibility_timeout: 300ms
  loose: {{type: pubsub, subscriber_buffer: 1}}
"""


@pytest.fixture
async def sidecar(
    redis_address: tuple[str, int], key_prefix: str, postgres_dsn: str
) -> AsyncIterator[RunningServer]:
    listen = f"127.0.0.1:{free_port()}"
    async with serve_for_test(config(redis_address, key_prefix, postgres_dsn, listen)) as running:
        yield running


async def scrape(running: RunningServer) -> Samples:
    url = f"http://{running.config.integration.metrics.prometheus_listen}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
        return body.decode()

    text = await asyncio.to_thread(get)
    return {  # without the otel_scope_* labels the SDK's exporter adds to every sample
        (
            sample.name,
            tuple(sorted(i for i in sample.labels.items() if "otel_scope" not in i[0])),
        ): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: Any) -> float | None:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


async def mixed_calls(channel: grpc.aio.Channel) -> tuple[int, int]:
    """Cache, SQL and pub/sub calls, some failing; (delivered, dropped) of the slow
    subscriber of `loose`."""
    cache = cache_pb2_grpc.CacheServiceStub(channel)
    for _ in range(3):
        await cache.Get(cache_pb2.GetRequest(key="k"))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await cache.Get(cache_pb2.GetRequest(target="broken", key="k"))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError):  # the caller's mistake: not an error rate
        await cache.Get(cache_pb2.GetRequest(key=""))
    await sql_pb2_grpc.SqlServiceStub(channel).Query(sql_pb2.QueryRequest(sql="SELECT 1"))

    pubsub = pubsub_pb2_grpc.PubSubServiceStub(channel)
    consumer = pubsub.Subscribe(
        pubsub_pb2.SubscribeRequest(target="events", channels=["jobs"], group="workers")
    )
    assert (await consumer.read()).HasField("started")
    await pubsub.Publish(pubsub_pb2.PublishRequest(target="events", channel="jobs", payload=b"1"))
    first = (await consumer.read()).message
    again = (await asyncio.wait_for(consumer.read(), 5)).message  # not acknowledged in time
    assert (again.message_id, again.delivery_count) == (first.message_id, 2)
    await pubsub.Acknowledge(
        pubsub_pb2.AcknowledgeRequest(
            target="events", topic="jobs", group="workers", message_ids=[first.message_id]
        )
    )
    consumer.cancel()

    # A subscriber that does not read while 20 large messages arrive loses most of them.
    slow = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(target="loose", channels=["c"]))
    assert (await slow.read()).HasField("started")
    big = pubsub_pb2.PublishRequest(target="loose", channel="c", payload=b"x" * 900_000)
    await asyncio.gather(*(pubsub.Publish(big) for _ in range(20)))
    delivered = dropped = 0
    while delivered + dropped < 20:
        event = await asyncio.wait_for(slow.read(), 5)
        if event.HasField("dropped"):
            dropped += event.dropped.count
        else:
            delivered += 1
    slow.cancel()
    assert dropped > 0
    return delivered, dropped


async def settled_scrape(sidecar: RunningServer) -> Samples:
    """A scrape once the health check has seen `broken` down (it runs every 100ms)."""
    samples: Samples = {}
    for _ in range(100):
        samples = await scrape(sidecar)
        if value(samples, "integration_connection_status", service="broken") == 0:
            break
        await asyncio.sleep(0.05)
    return samples


async def test_every_metric_is_exported_with_its_labels_and_counts(
    sidecar: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        delivered, dropped = await mixed_calls(channel)
    samples = await settled_scrape(sidecar)

    # The specification's four.
    requests = "integration_requests_total"
    assert value(samples, requests, service="cache", operation="CacheService.Get", status="OK") == 3
    assert (
        value(
            samples, requests, service="broken", operation="CacheService.Get", status="UNAVAILABLE"
        )
        == 1
    )
    durations = "integration_request_duration_seconds_count"
    assert value(samples, durations, service="db", operation="SqlService.Query") == 1
    assert value(samples, "integration_error_rate", service="broken") == 1.0
    assert value(samples, "integration_error_rate", service="cache") == 0.0  # INVALID_ARGUMENT
    assert value(samples, "integration_connection_status", service="cache") == 1
    assert value(samples, "integration_connection_status", service="db") == 1
    assert value(samples, "integration_connection_status", service="broken") == 0

    # OpenTelemetry's RPC server duration, by method and status.
    rpc = "rpc_server_duration_milliseconds_count"
    get = {"rpc_system": "grpc", "rpc_service": "integration.v1.CacheService", "rpc_method": "Get"}
    assert value(samples, rpc, **get, rpc_grpc_status_code=0) == 3
    assert value(samples, rpc, **get, rpc_grpc_status_code=14) == 1
    assert value(samples, rpc, **get, rpc_grpc_status_code=3) == 1

    # Pools: PostgreSQL's opened by the query, Redis's (blocking commands) known too.
    in_use = value(samples, "integration_pool_connections", connection="db", state="in_use")
    idle = value(samples, "integration_pool_connections", connection="db", state="idle")
    assert in_use == 0 and idle is not None and idle >= 1
    assert (
        value(samples, "integration_pool_connections", connection="cache", state="idle") is not None
    )

    # Pub/sub: two deliveries (one a redelivery), one acknowledgement.
    messages = "integration_pubsub_messages_total"
    assert value(samples, messages, service="events", event="delivered") == 2
    assert value(samples, messages, service="events", event="redelivered") == 1
    assert value(samples, messages, service="events", event="acknowledged") == 1
    # reported by the backend itself (the conformance suite counts a real move)
    assert value(samples, messages, service="events", event="dead_lettered") == 0
    assert value(samples, messages, service="loose", event="delivered") == delivered
    assert value(samples, messages, service="loose", event="dropped") == dropped
