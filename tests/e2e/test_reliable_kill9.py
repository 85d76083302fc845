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
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prefix() -> Iterator[str]:
    value = fresh_prefix()
    yield value
    delete_prefix(value)


@pytest.fixture
def config_file(tmp_path: Path, prefix: str) -> Path:
    host, port = redis_address()
    path = tmp_path / "sidecar.yaml"
    path.write_text(
        f"""
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
    )
    return path


async def wait_until_serving(address: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)


@asynccontextmanager
async def sidecar_process(config: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A sidecar process serving `config`; killed (if still running) on exit."""
    address = f"127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sidecar", "serve", "--config", str(config)),
        *("--listen", address),
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until_serving(address)
        yield process, address
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


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


async def run_until_killed(config: Path, ledger: Ledger) -> None:
    """Publish, acknowledge some, hold the rest unacknowledged in two consumers, kill -9."""
    async with (
        sidecar_process(config) as (process, address),
        grpc.aio.insecure_channel(address) as channel,
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
        process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == -signal.SIGKILL


async def run_after_restart(config: Path, ledger: Ledger) -> None:
    """Start again, publish more, and let w1 acknowledge until every message is."""
    async with (
        sidecar_process(config) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
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
    config_file: Path, prefix: str
) -> None:
    ledger = Ledger()
    await run_until_killed(config_file, ledger)
    await run_after_restart(config_file, ledger)

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
