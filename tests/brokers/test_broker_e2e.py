"""RabbitMQ and NATS end to end: a real sidecar (in-process) configured with a named broker
connection, driven through the generated PubSubService stubs: a plain channel with a
pattern, a reliable topic with a group, Acknowledge, the dead letters after max_deliveries
and their replay. Each test has its own key prefix and deletes what it declared."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from broker_support import declared_names, delete_names
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
    assert [(m.channel, m.pattern) for m in got] == [("news", ""), ("news.eu", "news.*")]
    call.cancel()


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
    call.cancel()


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
