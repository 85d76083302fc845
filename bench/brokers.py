"""The brokers section of `make bench`: reliable-topic publish and delivery throughput on
RabbitMQ and NATS JetStream, through the sidecar and with the broker's client library used
directly, against the same local servers (RabbitMQ 127.0.0.1:5672, NATS 127.0.0.1:4222).

Per broker, four cases, each over BENCH_BROKER_MESSAGES messages (default 2000) of 256 bytes:

- sidecar publish: PubSubService.Publish on a reliable topic from 16 concurrent callers (each
  returns once the broker has the message: publisher confirms / a JetStream PubAck);
- direct publish: the same with the library (aio-pika with publisher confirms into a quorum
  queue; nats-py `js.publish`), 16 concurrent publishers;
- sidecar delivery: one Subscribe stream of a group (max_in_flight 100), acknowledged in
  batches of 50 with Acknowledge;
- direct delivery: aio-pika consuming with prefetch 100, acking each; nats-py pull fetches of
  100, acking each.

Reported: messages per second (median of BENCH_REPEATS runs, default 3, after one warm-up
run) and the sidecar's share of direct. Each run uses its own topic, deleted afterwards.

Usage: make bench, or python -m bench.brokers  (BENCH_REPEATS, BENCH_BROKER_MESSAGES)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import grpc
import nats

from bench.__main__ import free_port, serve_command, start
from bench.results import record
from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.backends.pubsub._nats_reliable import stream_name

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MESSAGES = int(os.environ.get("BENCH_BROKER_MESSAGES", "2000"))
PUBLISHERS = 16
WINDOW = 100
PAYLOAD = b"x" * 256
PREFIX = "bench."
CONFIG = """
server: {access_log: false}
connections:
  mq: {type: rabbitmq}
  bus: {type: nats}
services:
  rabbitmq: {type: pubsub, connection: mq, key_prefix: "bench.", reliable_topics: ["*"]}
  nats: {type: pubsub, connection: bus, key_prefix: "bench.", reliable_topics: ["*"]}
"""


async def concurrently(count: int, publish: Callable[[], Awaitable[object]]) -> float:
    """Seconds to run `publish` `count` times from PUBLISHERS concurrent tasks."""
    left = [count]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await publish()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(PUBLISHERS)))
    return time.perf_counter() - started


async def _sidecar(stub: PubSubServiceStub, target: str) -> tuple[float, float]:
    topic = f"t{uuid.uuid4().hex[:8]}"
    group = "bench"
    call = stub.Subscribe(
        pubsub_pb2.SubscribeRequest(
            target=target, channels=[topic], group=group, max_in_flight=WINDOW
        )
    )
    await call.read()  # started: the group exists before the first message
    request = pubsub_pb2.PublishRequest(target=target, channel=topic, payload=PAYLOAD)
    publish = await concurrently(MESSAGES, lambda: stub.Publish(request))
    started, held, seen = time.perf_counter(), [], 0
    while seen < MESSAGES:
        event = await call.read()
        seen += 1
        held.append(event.message.message_id)
        if len(held) >= 50 or seen == MESSAGES:
            await stub.Acknowledge(
                pubsub_pb2.AcknowledgeRequest(
                    target=target, topic=topic, group=group, message_ids=held
                )
            )
            held = []
    deliver = time.perf_counter() - started
    call.cancel()
    await _drop(target, topic, group)
    return MESSAGES / publish, MESSAGES / deliver


async def _drop(broker: str, topic: str, group: str) -> None:
    """Delete the queues (RabbitMQ) or streams (NATS) the sidecar made for `topic`."""
    key = PREFIX + topic
    if broker == "rabbitmq":
        connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1:5672/")
        channel = await connection.channel()
        for name in (f"{key}.unclaimed", f"{key}.dlq", f"{key}.group.{group}"):
            await channel.queue_delete(name)
        await connection.close()
    else:
        client = await nats.connect("nats://127.0.0.1:4222")
        for subject in (key, f"{key}.dlq"):
            await client.jetstream().delete_stream(stream_name(subject))
        await client.close()


async def _rabbitmq_direct() -> tuple[float, float]:
    connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1:5672/")
    channel = await connection.channel(publisher_confirms=True)
    queue = await channel.declare_queue(
        f"bench.direct.{uuid.uuid4().hex[:8]}",
        durable=True,
        arguments={"x-queue-type": "quorum"},
    )

    async def send() -> None:
        message = aio_pika.Message(PAYLOAD, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key=queue.name)

    publish = await concurrently(MESSAGES, send)
    consumer = await connection.channel()
    await consumer.set_qos(prefetch_count=WINDOW)
    done = asyncio.get_running_loop().create_future()
    seen = [0]

    async def received(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        seen[0] += 1
        if seen[0] == MESSAGES and not done.done():
            done.set_result(None)

    started = time.perf_counter()
    own = await consumer.get_queue(queue.name)
    await own.consume(received)
    await done
    deliver = time.perf_counter() - started
    await channel.queue_delete(queue.name)
    await connection.close()
    return MESSAGES / publish, MESSAGES / deliver


async def _nats_direct() -> tuple[float, float]:
    client = await nats.connect("nats://127.0.0.1:4222")
    js = client.jetstream()
    name = f"BENCH_{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=name, subjects=[name])
    publish = await concurrently(MESSAGES, lambda: js.publish(name, PAYLOAD))
    pull = await js.pull_subscribe(name, durable="bench", stream=name)
    started, seen = time.perf_counter(), 0
    while seen < MESSAGES:
        for message in await pull.fetch(batch=WINDOW, timeout=5):
            await message.ack()
            seen += 1
    deliver = time.perf_counter() - started
    await js.delete_stream(name)
    await client.close()
    return MESSAGES / publish, MESSAGES / deliver


async def _run(address: str) -> None:
    results: dict[tuple[str, str], list[float]] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = PubSubServiceStub(channel)
        for repeat in range(REPEATS + 1):  # the first is a warm-up, not counted
            for broker, direct in (("rabbitmq", _rabbitmq_direct), ("nats", _nats_direct)):
                for case, (published, delivered) in (
                    ("sidecar", await _sidecar(stub, broker)),
                    ("direct", await direct()),
                ):
                    if repeat:
                        results.setdefault((broker, f"{case} publish"), []).append(published)
                        results.setdefault((broker, f"{case} delivery"), []).append(delivered)
    print(f"\nbrokers: reliable topics, {MESSAGES} messages of {len(PAYLOAD)} B, medians")
    print(f"  {'case':32} {'msg/s':>10} {'vs direct':>10}")
    for broker in ("rabbitmq", "nats"):
        for what in ("publish", "delivery"):
            ours = statistics.median(results[(broker, f"sidecar {what}")])
            theirs = statistics.median(results[(broker, f"direct {what}")])
            print(f"  {broker + ' sidecar ' + what:32} {ours:10.0f} {ours / theirs:10.2f}")
            print(f"  {broker + ' direct ' + what:32} {theirs:10.0f}")
            record("brokers", f"{broker} sidecar {what}", msgs_per_s=ours, vs_direct=ours / theirs)
            record("brokers", f"{broker} direct {what}", msgs_per_s=theirs)


def main() -> int:
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sidecar.yaml"
        config.write_text(CONFIG)
        sidecar = start(
            "sidecar",
            serve_command(config, address),
            address,
        )
        try:
            asyncio.run(_run(address))
        finally:
            sidecar.process.terminate()
            sidecar.process.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
