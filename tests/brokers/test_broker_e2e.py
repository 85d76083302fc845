"""RabbitMQ and NATS end to end: a real sidecar (in-process) configured with a named broker
connection, driven through the generated PubSubService stubs: a plain channel with a
pattern, a reliable topic with a group, Acknowledge, the dead letters after max_deliveries
and their replay. Each test has its own key prefix and deletes what it declared."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from broker_support import declared_names, delete_names
from pubsub_scenarios import plain_channel_and_pattern, reliable_round_trip
from redis_server import unique_prefix
from support import error_info

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e
TIMEOUT = 5


def config(kind: str, prefix: str) -> str:
    return f"""
connections:
  events: {{type: {kind}}}
services:
  pubsub:
    type: pubsub
    connection: events
    key_prefix: "{prefix}"
    reliable_topics: ["jobs.*"]
    visibility_timeout: 300ms
    max_deliveries: 2
"""


@pytest.fixture(params=["rabbitmq", "nats"])
async def pubsub(request: pytest.FixtureRequest) -> AsyncIterator[PubSubServiceStub]:
    prefix = unique_prefix().replace(":", "-")
    async with (
        serve_for_test(config(request.param, prefix)) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        integration = sidecar.integrations.get("pubsub")
        assert integration is not None and integration.backend_name == request.param
        try:
            yield PubSubServiceStub(channel)
        finally:
            names = declared_names(integration.backend)
    await delete_names(*names)


async def test_a_plain_channel_and_a_pattern_reach_a_subscriber(pubsub: PubSubServiceStub) -> None:
    await plain_channel_and_pattern(pubsub, TIMEOUT)


async def test_a_reliable_topic_is_consumed_acknowledged_dead_lettered_and_replayed(
    pubsub: PubSubServiceStub,
) -> None:
    await reliable_round_trip(pubsub, TIMEOUT)


async def test_an_ordering_key_is_accepted_and_bounded(pubsub: PubSubServiceStub) -> None:
    # Neither broker has the `ordering_keys` feature: the key is accepted and ignored.
    reply = await pubsub.Publish(
        pubsub_pb2.PublishRequest(channel="jobs.keyed", payload=b"x", ordering_key="order-7")
    )
    assert reply.message_id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pubsub.Publish(
            pubsub_pb2.PublishRequest(channel="jobs.keyed", payload=b"x", ordering_key="k" * 257)
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).metadata["field"] == "ordering_key"
