"""CacheService and PubSubService on `backend: redis`, end to end through the real server:
gRPC status codes, the key prefix, health, admin, and 100 subscribers on one connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis_server import free_port
from support import error_info

from generated.integration.v1 import admin_pb2, admin_pb2_grpc, cache_pb2, pubsub_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.backends.pubsub.redis import RedisBroker
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e
TIMEOUT = 5


def redis_config(host: str, port: int, prefix: str, integration: str = "") -> str:
    return f"""
integration:
  retry_policy: {{max_retries: 0}}
{integration}
services:
  cache: {{type: cache, backend: redis, host: {host}, port: {port}, key_prefix: "{prefix}"}}
  pubsub: {{type: pubsub, backend: redis, host: {host}, port: {port}, key_prefix: "{prefix}"}}
"""


@pytest.fixture
async def sidecar(redis_address: tuple[str, int], key_prefix: str) -> AsyncIterator[RunningServer]:
    async with serve_for_test(redis_config(*redis_address, key_prefix)) as running:
        yield running


@pytest.fixture
async def channel(sidecar: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        yield channel


async def test_set_then_get_round_trips_through_redis_under_the_prefix(
    channel: grpc.aio.Channel, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    cache = CacheServiceStub(channel)
    await cache.Set(cache_pb2.SetRequest(key="user:1", value=b"ada"))
    reply = await cache.Get(cache_pb2.GetRequest(key="user:1"))
    assert (reply.found, reply.value) == (True, b"ada")
    assert await redis_client.get(key_prefix + "user:1") == b"ada"


async def test_failing_atomic_batch_applies_nothing_and_answers_failed_precondition(
    channel: grpc.aio.Channel, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    cache = CacheServiceStub(channel)
    await cache.Set(cache_pb2.SetRequest(key="text", value=b"words"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await cache.Batch(
            cache_pb2.BatchRequest(
                atomic=True,
                operations=[
                    cache_pb2.BatchOperation(set=cache_pb2.SetRequest(key="a", value=b"1")),
                    cache_pb2.BatchOperation(delete=cache_pb2.DeleteRequest(keys=["text"])),
                    cache_pb2.BatchOperation(set=cache_pb2.SetRequest(key="text", value=b"x")),
                    cache_pb2.BatchOperation(increment=cache_pb2.IncrementRequest(key="text")),
                ],
            )
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "NOT_AN_INTEGER"
    assert await redis_client.mget(key_prefix + "a", key_prefix + "text") == [None, b"words"]


async def test_wrong_type_answers_failed_precondition_with_its_reason(
    channel: grpc.aio.Channel,
) -> None:
    cache = CacheServiceStub(channel)
    await cache.HashSet(cache_pb2.HashSetRequest(key="h", fields={"f": b"1"}))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await cache.Get(cache_pb2.GetRequest(key="h"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "WRONG_TYPE"


async def test_admin_lists_the_redis_backends(channel: grpc.aio.Channel) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    reply = await admin.ListIntegrations(admin_pb2.ListIntegrationsRequest())
    backends = {item.name: item.backend for item in reply.integrations}
    assert (backends["cache"], backends["pubsub"]) == ("redis", "redis")


async def test_unreachable_redis_answers_unavailable_and_turns_health_not_serving(
    key_prefix: str,
) -> None:
    health_checks = "  health_monitoring: {check_interval: 0.1s, consecutive_failures: 1}"
    config = redis_config("127.0.0.1", free_port(), key_prefix, health_checks)
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await CacheServiceStub(channel).Get(cache_pb2.GetRequest(key="k"))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(raised.value).reason == "UPSTREAM_UNAVAILABLE"
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(50):
            reply = await health.Check(health_pb2.HealthCheckRequest(service="cache"))
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.05)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_hundred_subscribers_share_one_redis_subscriber_connection(
    sidecar: RunningServer, channel: grpc.aio.Channel, redis_client: aioredis.Redis
) -> None:
    pubsub = PubSubServiceStub(channel)
    calls = [pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["news"])) for _ in range(100)]
    for call in calls:
        first = await asyncio.wait_for(call.read(), TIMEOUT)
        assert first.WhichOneof("event") == "started"
    integration = sidecar.integrations.get("pubsub")
    assert integration is not None and isinstance(integration.backend, RedisBroker)
    name = integration.backend.connection_name
    connections = [c for c in await redis_client.client_list() if c.get("name") == name]
    assert (len(connections), connections[0]["flags"]) == (1, "P")
    reply = await pubsub.Publish(pubsub_pb2.PublishRequest(channel="news", payload=b"extra"))
    received = [await asyncio.wait_for(call.read(), TIMEOUT) for call in calls]
    assert reply.receivers == 100
    assert {event.message.payload for event in received} == {b"extra"}
    for call in calls:
        call.cancel()
