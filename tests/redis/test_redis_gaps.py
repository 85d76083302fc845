"""A plain-channel subscription told about the gap when its Redis link is lost: a `gap`
event when the link drops, another with the time it came back once the channel is
subscribed again, then messages flow again, all on the same open Subscribe stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from faultproxy import FaultProxy
from redis_server import unique_prefix

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e
TIMEOUT = 10


@pytest.fixture
async def proxy(redis_address: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*redis_address) as proxy:
        yield proxy


async def test_a_lost_link_is_reported_as_a_gap_when_it_drops_and_when_it_is_back(
    proxy: FaultProxy,
) -> None:
    config = f"""
server: {{access_log: false}}
services:
  events: {{type: pubsub, backend: redis, host: {proxy.host}, port: {proxy.port},
            key_prefix: "{unique_prefix()}"}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        pubsub = PubSubServiceStub(channel)
        stream = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["news"]))
        assert (await stream.read()).WhichOneof("event") == "started"

        await proxy.stop_accepting()
        await proxy.cut()
        dropped = await asyncio.wait_for(stream.read(), TIMEOUT)
        await asyncio.sleep(0.5)  # half a second of outage
        await proxy.start_accepting()
        back = await asyncio.wait_for(stream.read(), TIMEOUT)

        async def publish_until_delivered() -> pubsub_pb2.SubscribeResponse:
            read = asyncio.ensure_future(stream.read())
            while not read.done():
                await pubsub.Publish(pubsub_pb2.PublishRequest(channel="news", payload=b"again"))
                await asyncio.wait({read}, timeout=0.1)
            return read.result()

        after = await asyncio.wait_for(publish_until_delivered(), TIMEOUT)
        stream.cancel()

    assert dropped.WhichOneof("event") == "gap"
    assert dropped.gap.HasField("started_at") and not dropped.gap.HasField("ended_at")
    assert back.WhichOneof("event") == "gap"
    lost, returned = back.gap.started_at.ToDatetime(), back.gap.ended_at.ToDatetime()
    assert back.gap.started_at == dropped.gap.started_at
    assert (returned - lost).total_seconds() >= 0.5
    assert after.message.payload == b"again"
