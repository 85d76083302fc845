"""kill -9 of a real sidecar process on Kafka (Tansu) under a steady publish
and consume load: after a restart, every message whose Publish returned is delivered and
acknowledged at least once (losses 0; duplicates counted and printed).

The load is the RabbitMQ/NATS test's (`tests/brokers/test_broker_kill9.py`). The consumer
acknowledges in batches of 10, so the killed sidecar held some unacknowledged: its group
member's partitions were committed only up to them, and the restarted sidecar (once the
dead member's session timed out) reads them again from there: they are the duplicates.

Tansu only: noida-db 0.2.3 never expires the session of a member that died without leaving
(measured: no rebalance 50 s after a kill -9, with session.timeout.ms 6000), so its group
stays stuck on the dead member; a Kafka broker, and Tansu, hand its partitions over.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest
from brokers.test_broker_kill9 import TOPIC, consume, publish_steadily
from kafka_servers import (
    KafkaServer,
    connection_for_test,
    drop_topics,
    endpoint_for_test,
    kafka_servers,
    unique_topic_prefix,
)
from sidecar_process import sidecar_process

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub

__all__ = ["kafka_servers"]

pytestmark = pytest.mark.e2e
TIMEOUT = 30  # the restarted sidecar waits out the dead member's session (6 s) to rejoin


def config(bootstrap: str, prefix: str) -> str:
    return f"""
connections:
  events:
    type: kafka
    bootstrap_servers: ["{bootstrap}"]
    topic_prefix: "{prefix}"
    session_timeout: 6s
    heartbeat_interval: 500ms
services:
  pubsub:
    type: pubsub
    connection: events
    reliable_topics: ["orders.*"]
    visibility_timeout: 1s
"""


async def test_kill_9_under_load_loses_no_message_whose_publish_returned(
    tmp_path: Path, kafka_servers: dict[str, KafkaServer]
) -> None:
    kafka_bootstrap = kafka_servers["tansu"].bootstrap
    prefix = unique_topic_prefix()
    yaml = config(kafka_bootstrap, prefix)
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
        cleanup = connection_for_test(
            "cleanup", endpoint_for_test(kafka_bootstrap, topic_prefix=prefix)
        )
        await drop_topics(cleanup)
        await cleanup.close()
    lost = set(published) - seen.keys()
    duplicates = sum(count - 1 for count in seen.values())
    print({"broker": "kafka", "published": len(published), "lost": len(lost), "dup": duplicates})
    assert not lost
