"""Kafka end to end, on each implementation (Tansu, noida-db): a real sidecar configured
with a named kafka connection, driven through the generated PubSubService stubs: a plain
channel and a pattern, a reliable topic with a group, Acknowledge, dead letters after
max_deliveries and their replay, and ordering keys. Each test has its own topic prefix and
deletes its topics afterwards."""

from __future__ import annotations

import asyncio
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


async def read(call: grpc.aio.UnaryStreamCall, kind: str) -> pubsub_pb2.SubscribeResponse:
    response = await asyncio.wait_for(call.read(), TIMEOUT)
    assert response.WhichOneof("event") == kind, response
    return response


async def test_a_plain_channel_and_a_pattern_reach_a_subscriber(pubsub: PubSubServiceStub) -> None:
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["news"], patterns=["news.*"]))
    await read(call, "started")
    for channel in ("news", "news.eu"):
        reply = await pubsub.Publish(pubsub_pb2.PublishRequest(channel=channel, payload=b"x"))
        assert reply.receivers == 1
    got = [(await read(call, "message")).message for _ in range(2)]
    assert sorted((m.channel, m.pattern) for m in got) == [("news", ""), ("news.eu", "news.*")]
    call.cancel()


async def test_topics_are_named_connection_prefix_then_key_prefix_then_channel(
    pubsub: PubSubServiceStub, cluster: KafkaConnection
) -> None:
    await pubsub.Publish(pubsub_pb2.PublishRequest(channel="a_b c", payload=b"x"))
    prefix = cluster.endpoint.topic_prefix
    assert f"{prefix}svc.a_5Fb_20c" in await cluster.list_topics()


async def test_a_reliable_topic_is_consumed_acknowledged_dead_lettered_and_replayed(
    pubsub: PubSubServiceStub,
) -> None:
    call = pubsub.Subscribe(
        pubsub_pb2.SubscribeRequest(channels=["jobs.mail"], group="mailers", consumer="m1")
    )
    assert (await read(call, "started")).started.consumer == "m1"
    good = await pubsub.Publish(pubsub_pb2.PublishRequest(channel="jobs.mail", payload=b"ok"))
    bad = await pubsub.Publish(pubsub_pb2.PublishRequest(channel="jobs.mail", payload=b"bad"))
    assert good.message_id and bad.message_id and good.message_id != bad.message_id
    seen: list[pubsub_pb2.PubSubMessage] = []
    while len([m for m in seen if m.message_id == bad.message_id]) < 2:
        message = (await read(call, "message")).message
        seen.append(message)
        if message.message_id == good.message_id:
            acked = await pubsub.Acknowledge(
                pubsub_pb2.AcknowledgeRequest(
                    topic="jobs.mail", group="mailers", message_ids=[message.message_id]
                )
            )
            assert acked.acknowledged == 1
    request = pubsub_pb2.ReadDeadLettersRequest(topic="jobs.mail")
    async with asyncio.timeout(TIMEOUT):
        while not (letters := (await pubsub.ReadDeadLetters(request)).dead_letters):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # moved once its last visibility timeout passes
    [letter] = letters
    assert (letter.message_id, letter.payload, letter.group, letter.consumer) == (
        bad.message_id,
        b"bad",
        "mailers",
        "m1",
    )
    replay = await pubsub.ReplayDeadLetters(
        pubsub_pb2.ReplayDeadLettersRequest(topic="jobs.mail", replay_all=True)
    )
    assert (len(replay.replayed), replay.remaining) == (1, 0)
    again = (await read(call, "message")).message
    assert (again.message_id, again.payload, again.delivery_count) == (
        replay.replayed[0].message_id,
        b"bad",
        1,
    )
    assert not (await pubsub.ReadDeadLetters(request)).dead_letters
    call.cancel()


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
