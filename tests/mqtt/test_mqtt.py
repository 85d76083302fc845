"""MQTT (Mosquitto at 127.0.0.1:1883) beyond the conformance suite: end to end through the
PubSubService stubs, glob -> topic filter mapping, QoS 1 and retained messages, reliable
topics refused, and an open subscription resuming after its connection is cut (through a
`FaultProxy`). Each test has its own topic prefix."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from faultproxy import FaultProxy

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.backends.pubsub import Message
from sidecar.backends.pubsub.mqtt import MqttBroker, mqtt_filter
from sidecar.config import ConfigError, parse_config
from sidecar.config.mqtt import MqttEndpoint
from sidecar.config.policies import TimeoutsConfig
from sidecar.connections.mqtt import MqttConnection
from sidecar.testing import serve_for_test

TIMEOUT = 5


def prefix() -> str:
    return f"t/{uuid.uuid4().hex[:12]}/"


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("orders", "p/orders"),
        ("orders/*", "p/orders/#"),
        ("orders/eu*", "p/orders/#"),
        ("news.*", "p/#"),
        ("a/b/c?", "p/a/b/#"),
        ("*", "p/#"),
    ],
)
def test_a_glob_is_subscribed_as_the_widest_filter_covering_it(glob: str, expected: str) -> None:
    assert mqtt_filter("p/", glob) == expected


def test_reliable_topics_on_mqtt_are_refused_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match="no reliable topics"):
        parse_config(
            """
connections:
  devices: {type: mqtt}
services:
  pubsub: {type: pubsub, connection: devices, reliable_topics: ["jobs.*"]}
"""
        )


async def test_end_to_end_a_channel_and_a_pattern_reach_a_subscriber() -> None:
    yaml = f"""
connections:
  devices: {{type: mqtt, topic_prefix: "{prefix()}", qos: 1}}
services:
  pubsub: {{type: pubsub, connection: devices}}
"""
    async with (
        serve_for_test(yaml) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        pubsub = PubSubServiceStub(channel)
        call = pubsub.Subscribe(
            pubsub_pb2.SubscribeRequest(channels=["rooms/1"], patterns=["rooms/*"])
        )
        started = await asyncio.wait_for(call.read(), TIMEOUT)
        assert started.WhichOneof("event") == "started"
        reply = await pubsub.Publish(
            pubsub_pb2.PublishRequest(channel="rooms/1", payload=b"hi", metadata={"k": "v"})
        )
        assert reply.receivers == 2
        got = [(await asyncio.wait_for(call.read(), TIMEOUT)).message for _ in range(2)]
        call.cancel()
    assert sorted((m.channel, m.pattern, m.payload) for m in got) == [
        ("rooms/1", "", b"hi"),
        ("rooms/1", "rooms/*", b"hi"),
    ]
    assert all(dict(m.metadata) == {"k": "v"} for m in got)


@pytest.fixture
async def retained() -> AsyncIterator[MqttBroker]:
    connection = MqttConnection(
        "devices", MqttEndpoint(topic_prefix=prefix(), qos=1, retain=True), TimeoutsConfig()
    )
    broker = MqttBroker(connection, name="devices")
    yield broker
    await connection.publish(connection.endpoint.topic_prefix + "status", b"", None, 0.0)
    await broker.close()
    await connection.close()


async def test_a_retained_message_reaches_a_later_subscriber(retained: MqttBroker) -> None:
    await retained.publish("status", b"online")
    subscription = await retained.subscribe(["status"], [], buffer_size=8)
    event = await asyncio.wait_for(anext(aiter(subscription)), TIMEOUT)
    assert isinstance(event, Message) and event.payload == b"online"


async def test_an_open_subscription_resumes_after_the_connection_is_cut() -> None:
    async with FaultProxy("127.0.0.1", 1883) as proxy:
        endpoint = MqttEndpoint(
            url=f"mqtt://{proxy.address}", topic_prefix=prefix(), reconnect_interval=0.1
        )
        connection = MqttConnection("devices", endpoint, TimeoutsConfig())
        broker = MqttBroker(connection, name="devices")
        try:
            subscription = await broker.subscribe(["alerts"], [], buffer_size=8)
            events = aiter(subscription)
            await broker.publish("alerts", b"before")
            first = await asyncio.wait_for(anext(events), TIMEOUT)
            assert await proxy.cut() > 0
            async with asyncio.timeout(TIMEOUT):
                while True:
                    try:
                        await broker.publish("alerts", b"after")
                        break
                    except Exception:
                        await asyncio.sleep(0.05)
            second = await asyncio.wait_for(anext(events), TIMEOUT)
        finally:
            await broker.close()
            await connection.close()
    assert isinstance(first, Message) and isinstance(second, Message)
    assert (first.payload, second.payload) == (b"before", b"after")
