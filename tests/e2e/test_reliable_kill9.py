"""kill -9 of a real sidecar process while subscribers hold unacknowledged messages of a
reliable topic: after a restart every published message is delivered and acknowledged at
least once, and none is lost.

Two consumers of one group hold messages at the kill: `w1` (a chosen name, which reconnects
and gets its own messages back at once) and an anonymous one (a generated name, which never
comes back: its messages reach `w1` after the visibility timeout).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from sidecar_process import sidecar_process
from streams_support import delete_prefix, fresh_prefix, redis_address

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub

pytestmark = pytest.mark.e2e

TOPIC = "orders.created"
GROUP = "billing"
BEFORE_KILL, AFTER_RESTART = 150, 50
ACKED_BEFORE_KILL = 50
W1_WINDOW, ANON_WINDOW = 20, 10
TIMEOUT = 15


@pytest.fixture
def prefix() -> Iterator[str]:
    value = fresh_prefix()
    yield value
    delete_prefix(value)


@pytest.fixture
def config(prefix: str) -> str:
    host, port = redis_address()
    return f"""
services:
  pubsub:
    type: pubsub
    backend: redis
    host: {host}
    port: {port}
    key_prefix: "{prefix}"
    reliable_topics: ["orders.*"]
    visibility_timeout: 2s
    max_deliveries: 5
"""


async def open_stream(
    pubsub: PubSubServiceStub, consumer: str, window: int
) -> grpc.aio.UnaryStreamCall:
    call = pubsub.Subscribe(
        pubsub_pb2.SubscribeRequest(
            channels=[TOPIC], group=GROUP, consumer=consumer, max_in_flight=window
        )
    )
    first = await asyncio.wait_for(call.read(), TIMEOUT)
    assert first.WhichOneof("event") == "started"
    return call


async def read_message(call: grpc.aio.UnaryStreamCall) -> pubsub_pb2.PubSubMessage:
    event = await asyncio.wait_for(call.read(), TIMEOUT)
    assert event is not grpc.aio.EOF
    message: pubsub_pb2.PubSubMessage = event.message
    return message


@dataclass
class Ledger:
    """What the test saw: ids published and acknowledged, and who held what at the kill."""

    published: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # message id -> its holder at the kill
    deliveries: list[pubsub_pb2.PubSubMessage] = field(default_factory=list)
    after_restart: list[pubsub_pb2.PubSubMessage] = field(default_factory=list)

    async def publish(self, pubsub: PubSubServiceStub, payload: str) -> None:
        reply = await pubsub.Publish(
            pubsub_pb2.PublishRequest(channel=TOPIC, payload=payload.encode())
        )
        self.published.append(reply.message_id)

    async def acknowledge(self, pubsub: PubSubServiceStub, message_id: str) -> None:
        reply = await pubsub.Acknowledge(
            pubsub_pb2.AcknowledgeRequest(topic=TOPIC, group=GROUP, message_ids=[message_id])
        )
        assert reply.acknowledged == 1
        self.acked.add(message_id)


async def run_until_killed(tmp_path: Path, config: str, ledger: Ledger) -> None:
    """Publish, acknowledge some, hold the rest unacknowledged in two consumers, kill -9."""
    async with (
        sidecar_process(tmp_path, config) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        pubsub = PubSubServiceStub(channel)
        w1 = await open_stream(pubsub, "w1", W1_WINDOW)
        anonymous = await open_stream(pubsub, "", ANON_WINDOW)
        for i in range(BEFORE_KILL):
            await ledger.publish(pubsub, f"order {i}")
        # The anonymous consumer fills its window and acknowledges nothing.
        for _ in range(ANON_WINDOW):
            message = await read_message(anonymous)
            ledger.deliveries.append(message)
            ledger.held[message.message_id] = "anonymous"
        # w1 acknowledges its first 50, then fills its window without acknowledging.
        while len(ledger.held) < ANON_WINDOW + W1_WINDOW:
            message = await read_message(w1)
            ledger.deliveries.append(message)
            if len(ledger.acked) < ACKED_BEFORE_KILL:
                await ledger.acknowledge(pubsub, message.message_id)
            else:
                ledger.held[message.message_id] = "w1"
        sidecar.process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(sidecar.process.wait(), TIMEOUT) == -signal.SIGKILL


async def run_after_restart(tmp_path: Path, config: str, ledger: Ledger) -> None:
    """Start again, publish more, and let w1 acknowledge until every message is."""
    async with (
        sidecar_process(tmp_path, config) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        pubsub = PubSubServiceStub(channel)
        w1 = await open_stream(pubsub, "w1", W1_WINDOW)
        for i in range(AFTER_RESTART):
            await ledger.publish(pubsub, f"late {i}")
        while not ledger.acked >= set(ledger.published):
            message = await read_message(w1)
            ledger.after_restart.append(message)
            await ledger.acknowledge(pubsub, message.message_id)
        w1.cancel()


async def test_kill_9_loses_no_message_every_one_is_acknowledged_after_restart(
    tmp_path: Path, config: str, prefix: str
) -> None:
    ledger = Ledger()
    await run_until_killed(tmp_path, config, ledger)
    await run_after_restart(tmp_path, config, ledger)

    redelivered = [m for m in ledger.after_restart if m.message_id in ledger.held]
    counts = {
        "published": len(ledger.published),
        "acknowledged distinct": len(ledger.acked),
        "deliveries": len(ledger.deliveries) + len(ledger.after_restart),
        "held unacknowledged at kill": len(ledger.held),
        "redelivered after restart": len(redelivered),
    }
    print(counts)  # the figures of the run, shown with pytest -s
    assert len(set(ledger.published)) == BEFORE_KILL + AFTER_RESTART
    assert ledger.acked == set(ledger.published)
    # w1's own messages came back first, at once; the anonymous one's after the timeout.
    first_back = [m.message_id for m in ledger.after_restart[:W1_WINDOW]]
    assert {ledger.held[i] for i in first_back} == {"w1"}
    assert sorted(m.message_id for m in redelivered) == sorted(ledger.held)
    assert all(m.delivery_count >= 2 for m in redelivered)
    host, port = redis_address()
    client = aioredis.Redis(host=host, port=port)
    assert (await client.xpending(f"{prefix}{TOPIC}", GROUP))["pending"] == 0
    await client.aclose()
