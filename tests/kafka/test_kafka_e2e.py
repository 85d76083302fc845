"""Kafka end to end, on each implementation (Tansu, noida-db): a real sidecar configured
with a named kafka connection, driven through the generated PubSubService stubs: a plain
channel and a pattern, a reliable topic with a group, Acknowledge, dead letters after
max_deliveries and their replay, and ordering keys. Each test has its own topic prefix and
deletes its topics afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from kafka_servers import (
    connection_for_test,
    drop_topics,
    endpoint_for_test,
    kafka_bootstrap,
    kafka_servers,
)
from pubsub_scenarios import plain_channel_and_pattern, reliable_round_trip

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.connections.kafka import KafkaConnection
from sidecar.testing import serve_for_test

__all__ = ["kafka_bootstrap", "kafka_servers"]

pytestmark = pytest.mark.e2e
TIMEOUT = 10


def config(bootstrap: str, prefix: str) -> str:
    return f"""
connections:
  events:
    type: kafka
    bootstrap_servers: ["{bootstrap}"]
    topic_prefix: "{prefix}"
    topic_partitions: 3
    session_timeout: 6s
    heartbeat_interval: 500ms
services:
  pubsub:
    type: pubsub
    connection: events
    key_prefix: "svc."
    reliable_topics: ["jobs.*"]
    visibility_timeout: 300ms
    max_deliveries: 2
"""


@pytest.fixture
async def cluster(kafka_bootstrap: str) -> AsyncIterator[KafkaConnection]:
    """A connection of the test's own, under the topic prefix its sidecar uses."""
    cleanup = connection_for_test("cleanup", endpoint_for_test(kafka_bootstrap))
    yield cleanup
    await drop_topics(cleanup)
    await cleanup.close()


@pytest.fixture
async def pubsub(
    kafka_bootstrap: str, cluster: KafkaConnection
) -> AsyncIterator[PubSubServiceStub]:
    async with (
        serve_for_test(config(kafka_bootstrap, cluster.endpoint.topic_prefix)) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        integration = sidecar.integrations.get("pubsub")
        assert integration is not None and integration.backend_name == "kafka"
        yield PubSubServiceStub(channel)


async def test_a_plain_channel_and_a_pattern_reach_a_subscriber(pubsub: PubSubServiceStub) -> None:
    await plain_channel_and_pattern(pubsub, TIMEOUT)


async def test_topics_are_named_connection_prefix_then_key_prefix_then_channel(
    pubsub: PubSubServiceStub, cluster: KafkaConnection
) -> None:
    await pubsub.Publish(pubsub_pb2.PublishRequest(channel="a_b c", payload=b"x"))
    prefix = cluster.endpoint.topic_prefix
    assert f"{prefix}svc.a_5Fb_20c" in await cluster.list_topics()


async def test_a_reliable_topic_is_consumed_acknowledged_dead_lettered_and_replayed(
    pubsub: PubSubServiceStub,
) -> None:
    await reliable_round_trip(pubsub, TIMEOUT)


async def test_messages_with_one_ordering_key_share_a_partition(pubsub: PubSubServiceStub) -> None:
    ids = [
        (
            await pubsub.Publish(
                pubsub_pb2.PublishRequest(
                    channel="jobs.keyed", payload=str(i).encode(), ordering_key="order-7"
                )
            )
        ).message_id
        for i in range(5)
    ]
    partitions = {message_id.split("-")[0] for message_id in ids}
    offsets = [int(message_id.split("-")[1]) for message_id in ids]
    assert len(partitions) == 1
    assert offsets == sorted(offsets)
