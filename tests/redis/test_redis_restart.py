"""A Redis restart under an open subscription: the gRPC stream stays open and receives what
is published once Redis is back, without restarting the sidecar. The test owns that Redis
(the shared one is never killed)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from redis_server import OwnedRedis

from generated.integration.v1 import cache_pb2, pubsub_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e
TIMEOUT = 10


@pytest.fixture
def owned_redis() -> Iterator[OwnedRedis]:
    server = OwnedRedis()
    server.start()
    yield server
    server.kill()


def config(port: int) -> str:
    return f"""
integration:
  retry_policy: {{max_retries: 0}}
  circuit_breaker: {{enabled: false}}
services:
  cache: {{type: cache, backend: redis, port: {port}}}
  pubsub: {{type: pubsub, backend: redis, port: {port}}}
"""


async def publish_until_received(pubsub: PubSubServiceStub, payload: bytes) -> None:
    """Publish until Redis is back and the sidecar has resubscribed both the channel and the
    pattern (SUBSCRIBE and PSUBSCRIBE go out separately, so one may be back before the
    other): Redis then counts two receivers."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + TIMEOUT
    while loop.time() < give_up:
        try:
            reply = await pubsub.Publish(pubsub_pb2.PublishRequest(channel="news", payload=payload))
            if reply.receivers >= 2:
                return
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(0.05)
    pytest.fail("the subscription never came back")


async def test_open_subscription_resumes_after_redis_restarts(owned_redis: OwnedRedis) -> None:
    async with (
        serve_for_test(config(owned_redis.port)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        pubsub = PubSubServiceStub(channel)
        call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["news"], patterns=["n*"]))
        assert (await asyncio.wait_for(call.read(), TIMEOUT)).WhichOneof("event") == "started"
        await publish_until_received(pubsub, b"before")
        before = [await asyncio.wait_for(call.read(), TIMEOUT) for _ in range(2)]

        owned_redis.kill()
        owned_redis.start()  # same port, empty: it knows nothing of the old subscriptions

        await publish_until_received(pubsub, b"after")
        events = []
        while len([e for e in events if e.message.payload == b"after"]) < 2:
            events.append(await asyncio.wait_for(call.read(), TIMEOUT))
        still_open = not call.done()
        call.cancel()
    assert {e.message.payload for e in before} == {b"before"}
    # no end, no error: the messages, and the gap reported when the link dropped and was back
    assert {e.WhichOneof("event") for e in events} == {"message", "gap"}
    gaps = [e.gap for e in events if e.WhichOneof("event") == "gap"]
    assert [gap.HasField("ended_at") for gap in gaps] == [False, True]
    assert still_open


async def test_cache_serves_again_after_redis_restarts(owned_redis: OwnedRedis) -> None:
    async with (
        serve_for_test(config(owned_redis.port)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        cache = CacheServiceStub(channel)
        await cache.Set(cache_pb2.SetRequest(key="k", value=b"v"))
        owned_redis.kill()
        owned_redis.start()
        for _ in range(100):
            try:
                await cache.Set(cache_pb2.SetRequest(key="k", value=b"again"))
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.05)
        reply = await cache.Get(cache_pb2.GetRequest(key="k"))
    assert reply.value == b"again"
