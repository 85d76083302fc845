"""kill -9 of a real sidecar process (`python -m sidecar serve`) on RabbitMQ or NATS under a
steady publish and consume load: after a restart, every message whose Publish returned is
delivered and acknowledged at least once (losses 0; duplicates counted and printed).

The consumer acknowledges in batches of 10, so at the kill it holds some unacknowledged, and
the broker still has them (RabbitMQ requeues a dead channel's deliveries; JetStream
redelivers after the ack wait): they are the duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest
from broker_support import delete_names
from redis_server import unique_prefix
from sidecar_process import sidecar_process

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.backends.pubsub._nats_reliable import stream_name

pytestmark = pytest.mark.e2e

TOPIC, GROUP = "orders.created", "billing"
TIMEOUT = 15


def config(kind: str, prefix: str) -> str:
    return f"""
connections:
  events: {{type: {kind}}}
services:
  pubsub:
    type: pubsub
    connection: events
    key_prefix: "{prefix}"
    reliable_topics: ["orders.*"]
    visibility_timeout: 1s
"""


async def publish_steadily(pubsub: PubSubServiceStub, label: str, published: list[bytes]) -> None:
    """Publish until cancelled (or the sidecar dies); record what Publish accepted."""
    for index in range(100_000):
        payload = f"{label} {index}".encode()
        try:
            await pubsub.Publish(pubsub_pb2.PublishRequest(channel=TOPIC, payload=payload))
        except grpc.aio.AioRpcError:
            return  # killed mid-call: not accepted, the client would retry it
        published.append(payload)
        await asyncio.sleep(0.002)


async def consume(pubsub: PubSubServiceStub, seen: Counter[bytes], until: set[bytes]) -> None:
    """Acknowledge what is read in batches of 10 (so up to 10 are held unacknowledged when
    the sidecar dies); return once `until` (if non-empty) is all seen and acknowledged."""
    call = pubsub.Subscribe(
        pubsub_pb2.SubscribeRequest(channels=[TOPIC], group=GROUP, consumer="w1", max_in_flight=20)
    )
    held: list[str] = []
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for event in call:
            if event.WhichOneof("event") != "message":
                continue
            seen[event.message.payload] += 1
            held.append(event.message.message_id)
            done = bool(until) and until <= seen.keys()
            if len(held) >= 10 or done:
                await pubsub.Acknowledge(
                    pubsub_pb2.AcknowledgeRequest(topic=TOPIC, group=GROUP, message_ids=held)
                )
                held.clear()
            if done:
                call.cancel()
                return


@pytest.mark.parametrize("kind", ["rabbitmq", "nats"])
async def test_kill_9_under_load_loses_no_message_whose_publish_returned(
    tmp_path: Path, kind: str
) -> None:
    prefix = unique_prefix().replace(":", "-")
    yaml = config(kind, prefix)
    published: list[bytes] = []
    seen: Counter[bytes] = Counter()
    try:
        async with (
            sidecar_process(tmp_path, yaml) as sidecar,
            grpc.aio.insecure_channel(sidecar.address) as channel,
        ):
            pubsub = PubSubServiceStub(channel)
            consumer = asyncio.create_task(consume(pubsub, seen, set()))
            publisher = asyncio.create_task(publish_steadily(pubsub, "before", published))
            async with asyncio.timeout(TIMEOUT):
                while len(seen) < 100:  # noqa: ASYNC110 - polling the load's progress
                    await asyncio.sleep(0.01)
            sidecar.process.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(sidecar.process.wait(), TIMEOUT) == -signal.SIGKILL
            await asyncio.wait_for(asyncio.gather(publisher, consumer), TIMEOUT)
        async with (
            sidecar_process(tmp_path, yaml) as sidecar,
            grpc.aio.insecure_channel(sidecar.address) as channel,
        ):
            pubsub = PubSubServiceStub(channel)
            for index in range(50):
                payload = f"after {index}".encode()
                await pubsub.Publish(pubsub_pb2.PublishRequest(channel=TOPIC, payload=payload))
                published.append(payload)
            await asyncio.wait_for(consume(pubsub, seen, set(published)), TIMEOUT)
    finally:
        await delete_names(*_names(kind, prefix))
    lost = set(published) - seen.keys()
    duplicates = sum(count - 1 for count in seen.values())
    print(
        {"broker": kind, "published": len(published), "lost": len(lost), "duplicates": duplicates}
    )
    assert not lost


def _names(kind: str, prefix: str) -> tuple[str, list[str]]:
    key = prefix + TOPIC
    if kind == "rabbitmq":
        return kind, [f"{key}.unclaimed", f"{key}.dlq", f"{key}.group.{GROUP}"]
    return kind, [stream_name(key), stream_name(f"{key}.dlq")]
