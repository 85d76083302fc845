"""Services naming one Redis connection share its client objects: `CLIENT LIST` shows one
multiplexed data link, one pool and one subscriber link for a cache (with a near cache), a
pub/sub and a global rate limiter together; services with inline settings keep their own."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis_server import free_port

from generated.integration.v1 import admin_pb2, admin_pb2_grpc, cache_pb2, pubsub_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.backends.ratelimit.redis import RedisTokenBucket
from sidecar.connections.redis import RedisConnection
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e
TIMEOUT = 5


def shared_config(host: str, port: int, connection: str, prefix: str) -> str:
    return f"""
connections:
  {connection}: {{type: redis, host: {host}, port: {port}}}
services:
  cache:
    type: cache
    backend: redis
    connection: {connection}
    key_prefix: "{prefix}"
    near_cache: {{enabled: true}}
    rate_limit:
      {{requests_per_second: 1000, burst_size: 1000, store: redis, connection: {connection}}}
  events: {{type: pubsub, backend: redis, connection: {connection}, key_prefix: "{prefix}"}}
"""


async def names_on(client: aioredis.Redis, *prefixes: str) -> Counter[str]:
    """CLIENT NAMEs of the server's connections that start with one of `prefixes`, counted;
    subscriber links (`sidecar-sub:<connection>:<random>`) lose their random part."""
    counted: Counter[str] = Counter()
    for entry in await client.client_list():
        name = entry.get("name", "")
        if name.startswith(prefixes):
            counted[name.rsplit(":", 1)[0] if name.startswith("sidecar-sub:") else name] += 1
    return counted


async def exercise(cache: CacheServiceStub, pubsub: PubSubServiceStub) -> None:
    """Single commands, a batch (it needs a pooled connection), a near-cache read, a
    subscription with one message through it."""
    stream = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["orders"]))
    assert (await asyncio.wait_for(stream.read(), TIMEOUT)).WhichOneof("event") == "started"
    for i in range(5):
        await cache.Set(cache_pb2.SetRequest(key=f"k{i}", value=b"v"))
        await cache.Get(cache_pb2.GetRequest(key=f"k{i}"))
    await cache.Batch(
        cache_pb2.BatchRequest(
            atomic=True,
            operations=[cache_pb2.BatchOperation(set=cache_pb2.SetRequest(key="b", value=b"1"))],
        )
    )
    reply = await pubsub.Publish(pubsub_pb2.PublishRequest(channel="orders", payload=b"o"))
    assert reply.receivers == 1
    event = await asyncio.wait_for(stream.read(), TIMEOUT)
    assert event.message.payload == b"o"
    stream.cancel()


async def test_services_on_one_connection_share_one_data_link_one_pool_and_one_subscriber(
    redis_address: tuple[str, int], redis_client: aioredis.Redis, key_prefix: str
) -> None:
    connection = f"shared-{uuid.uuid4().hex[:8]}"
    config = shared_config(*redis_address, connection, key_prefix)
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        await exercise(CacheServiceStub(channel), PubSubServiceStub(channel))
        limited = running.integrations.get("cache")
        assert limited is not None
        assert isinstance(limited.pipeline.rate_limiter, RedisTokenBucket)
        shared = running.integrations.connections.get(connection)
        assert isinstance(shared, RedisConnection)
        # Subscriber links of this connection, or of a service of this test's own (a second
        # link would be named after it); other processes' links are not this test's.
        seen = await names_on(
            redis_client,
            f"sidecar:{connection}",
            f"sidecar-sub:{connection}",
            "sidecar-sub:cache:",
            "sidecar-sub:events:",
        )
        # The data link and one pooled connection (the batch) carry the connection's
        # name; one subscriber link serves the pub/sub and the near cache's invalidations.
        assert seen == {
            f"sidecar:{connection}": 2,
            f"sidecar-sub:{connection}": 1,
        }, seen
        entry = running.integrations.connections.entry(connection)
        assert sorted(entry.users) == ["cache", "cache.rate_limit", "events"]
        assert not entry.implicit


async def test_inline_settings_make_a_connection_per_service(
    redis_address: tuple[str, int], redis_client: aioredis.Redis, key_prefix: str
) -> None:
    host, port = redis_address
    tag = uuid.uuid4().hex[:6]
    config = f"""
services:
  c{tag}: {{type: cache, backend: redis, host: {host}, port: {port}, key_prefix: "{key_prefix}"}}
  p{tag}: {{type: pubsub, backend: redis, host: {host}, port: {port}, key_prefix: "{key_prefix}"}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        cache, pubsub = CacheServiceStub(channel), PubSubServiceStub(channel)
        await cache.Set(cache_pb2.SetRequest(target=f"c{tag}", key="k", value=b"v"))
        await pubsub.Publish(pubsub_pb2.PublishRequest(target=f"p{tag}", channel="x", payload=b"p"))
        seen = await names_on(redis_client, f"sidecar:c{tag}", f"sidecar:p{tag}")
        assert seen == {f"sidecar:c{tag}": 1, f"sidecar:p{tag}": 1}, seen
        entries = dict(running.integrations.connections)
        assert {name: e.implicit for name, e in entries.items()} == {
            f"c{tag}": True,
            f"p{tag}": True,
        }


async def test_admin_lists_connections_and_a_dead_one_takes_its_services_down(
    key_prefix: str,
) -> None:
    config = f"""
integration:
  retry_policy: {{max_retries: 0}}
  health_monitoring: {{check_interval: 0.1s, consecutive_failures: 1}}
connections:
  dead: {{type: redis, port: {free_port()}}}
services:
  cache: {{type: cache, backend: redis, connection: dead, key_prefix: "{key_prefix}"}}
  events: {{type: pubsub, backend: redis, connection: dead}}
  local: {{type: cache}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        statuses: dict[str, int] = {}
        for _ in range(100):
            statuses = {
                name: (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
                for name in ("cache", "events", "local")
            }
            if statuses["cache"] == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.05)
        assert statuses == {
            "cache": health_pb2.HealthCheckResponse.NOT_SERVING,
            "events": health_pb2.HealthCheckResponse.NOT_SERVING,
            "local": health_pb2.HealthCheckResponse.SERVING,
        }
        listed = await admin.ListConnections(admin_pb2.ListConnectionsRequest())
        assert [
            (c.name, c.type, c.health, list(c.users), c.implicit) for c in listed.connections
        ] == [("dead", "redis", admin_pb2.HEALTH_STATE_NOT_SERVING, ["cache", "events"], False)]
        described = await admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="events"))
        assert described.integration.connection == "dead"
        assert described.integration.health == admin_pb2.HEALTH_STATE_NOT_SERVING
        local = await admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="local"))
        assert local.integration.connection == ""
