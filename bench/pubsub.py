"""The pub/sub section of `make bench`: delivery rate to one subscriber, batched frames
against the single-message gRPC server-stream floor of the same run, and end-to-end latency
at a steady 1,000 messages/s.

Cases (one sidecar process on uvloop, one subscriber, payloads of 64 bytes):

- floor: a bare grpc.aio server stream (no sidecar code) writing one pre-serialized
  SubscribeResponse per frame as fast as it can, read by the same client code: what a
  one-message-per-frame stream can carry on this machine, whatever the server does.
- redis, single / batched: BENCH_PUBSUB_MESSAGES messages (default 50,000) published
  straight into Redis in pipelines of 1,000 PUBLISH commands (encoded once and written to a
  socket: as fast as Redis takes them, the publisher costing next to nothing) to a plain
  channel; the subscriber grants a credit of 10,000 (max_in_flight) and reads one
  message per frame, or sets max_batch 1000. Delivered/s is the messages received over the
  time from the first publish to the last message in; what the subscriber could not keep up
  with is dropped (Redis pub/sub cannot be paced) and reported.
- memory, batched: the same count through PublishBatch calls of 1,000 on the memory broker,
  the subscriber with a credit of 10,000 and max_batch 1000: paced, nothing is lost.
- publish: Publish calls/s (one message each) from 16 concurrent callers, memory and redis,
  one batching subscriber reading.
- fan-out: 5,000 messages (PublishBatch) to 100 batching subscribers of one memory channel:
  deliveries/s summed over the subscribers.
- latency: 1,000 Publish calls a second for BENCH_PUBSUB_SECONDS (default 3) through the
  sidecar to a subscriber (memory and redis; one message per frame and max_batch 100); per
  message the time from just before Publish to its arrival at the subscriber, p50 and p99.

Every figure is the median of BENCH_REPEATS runs (default 3), cases interleaved. The machine
is shared: read the figures as indicative, the ratio to the floor of the same run as the
point. Redis is the one on 127.0.0.1:6379, or a redis-server started for the run.

Usage: python -m bench.pubsub  (also run by make bench)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from bench.__main__ import free_port, redis_address, start
from bench.results import record
from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MESSAGES = int(os.environ.get("BENCH_PUBSUB_MESSAGES", "50000"))
LATENCY_SECONDS = float(os.environ.get("BENCH_PUBSUB_SECONDS", "3"))
RATE = 1000  # messages per second in the latency case
PAYLOAD = b"x" * 64
CHUNK = 1000  # messages per redis-py pipeline and per PublishBatch
CREDIT = 10_000
PUBLISHERS = 16  # concurrent Publish callers in the publish-rate case
FANOUT = 100  # subscribers of one channel in the fan-out case
FANOUT_MESSAGES = 5_000  # messages published to them (each delivered FANOUT times)
PREFIX = "sidecar-bench-pubsub:"
CONFIG = """
server: {{access_log: false}}
services:
  memory: {{type: pubsub}}
  redis: {{type: pubsub, backend: redis, host: {host}, port: {port}, key_prefix: "{prefix}"}}
"""
FLOOR_METHOD = "/bench.Stream/Messages"


# -- the floor server ----------------------------------------------------------------------


async def _floor_stream(request: bytes, _context: object) -> object:
    frame = pubsub_pb2.SubscribeResponse(
        message=pubsub_pb2.PubSubMessage(channel="bench", payload=PAYLOAD)
    ).SerializeToString()
    for _ in range(int(request)):
        yield frame


async def _serve_floor(address: str) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(_floor_stream)  # type: ignore[arg-type]
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Stream", {"Messages": handler}),)
    )
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


# -- the cases -----------------------------------------------------------------------------


async def _floor(address: str) -> float:
    """Messages/s of the bare one-message-per-frame stream."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_stream(
            FLOOR_METHOD, response_deserializer=pubsub_pb2.SubscribeResponse.FromString
        )(str(MESSAGES).encode())
        started = time.perf_counter()
        received = 0
        async for frame in call:
            received += 1 if frame.WhichOneof("event") == "message" else 0
        return received / (time.perf_counter() - started)


async def _subscribe(
    stub: PubSubServiceStub, target: str, channel: str, max_batch: int
) -> grpc.aio.UnaryStreamCall:
    call = stub.Subscribe(
        pubsub_pb2.SubscribeRequest(
            target=target, channels=[channel], max_in_flight=CREDIT, max_batch=max_batch
        )
    )
    first = await call.read()
    assert first.WhichOneof("event") == "started"
    return call


async def _drain(call: grpc.aio.UnaryStreamCall, expected: int) -> tuple[int, int, float]:
    """(received, dropped, when the last arrived): reads until every published message is
    received or reported dropped."""
    received = dropped = 0
    while received + dropped < expected:
        frame = await call.read()
        kind = frame.WhichOneof("event")
        if kind == "batch":
            received += len(frame.batch.messages)
        elif kind == "message":
            received += 1
        elif kind == "dropped":
            dropped += frame.dropped.count
    return received, dropped, time.perf_counter()


async def _redis_delivery(
    stub: PubSubServiceStub, host: str, port: int, max_batch: int
) -> tuple[float, int]:
    """(delivered/s, dropped) publishing straight into Redis: PUBLISH commands encoded
    once and written in pipelines of CHUNK on a socket of its own, so the publisher costs
    next to nothing and Redis pushes as fast as it takes them."""
    channel = f"deliver-{uuid.uuid4().hex[:8]}"
    call = await _subscribe(stub, "redis", channel, max_batch)
    reader = asyncio.ensure_future(_drain(call, MESSAGES))
    name = (PREFIX + channel).encode()
    command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(name),
        name,
        len(PAYLOAD),
        PAYLOAD,
    )
    replies, writer = await asyncio.open_connection(host, port)
    started = time.perf_counter()
    for offset in range(0, MESSAGES, CHUNK):
        writer.write(command * min(CHUNK, MESSAGES - offset))
        await writer.drain()
    lines = 0
    while lines < MESSAGES:  # one ":<receivers>" line per PUBLISH
        lines += (await replies.read(1 << 16)).count(b"\n")
    writer.close()
    received, dropped, ended = await reader
    call.cancel()
    return received / (ended - started), dropped


async def _memory_delivery(stub: PubSubServiceStub) -> tuple[float, int]:
    """(delivered/s, dropped) through PublishBatch on the memory broker, paced."""
    channel = f"deliver-{uuid.uuid4().hex[:8]}"
    call = await _subscribe(stub, "memory", channel, 1000)
    reader = asyncio.ensure_future(_drain(call, MESSAGES))
    entry = pubsub_pb2.PublishBatchEntry(channel=channel, payload=PAYLOAD)
    request = pubsub_pb2.PublishBatchRequest(target="memory", messages=[entry] * CHUNK)
    started = time.perf_counter()
    for _ in range(MESSAGES // CHUNK):
        await stub.PublishBatch(request)
    received, dropped, ended = await reader
    call.cancel()
    return received / (ended - started), dropped


async def _publish_rate(stub: PubSubServiceStub, target: str) -> tuple[float, int]:
    """(Publish calls/s, 0): PUBLISHERS concurrent callers publishing one message per call
    to a channel one subscriber reads in batches (what publishing costs, delivery aside)."""
    channel = f"publish-{uuid.uuid4().hex[:8]}"
    call = await _subscribe(stub, target, channel, 1000)
    reader = asyncio.ensure_future(_drain(call, MESSAGES))
    request = pubsub_pb2.PublishRequest(target=target, channel=channel, payload=PAYLOAD)

    async def publisher(count: int) -> None:
        for _ in range(count):
            await stub.Publish(request)

    started = time.perf_counter()
    await asyncio.gather(*(publisher(MESSAGES // PUBLISHERS) for _ in range(PUBLISHERS)))
    rate = MESSAGES // PUBLISHERS * PUBLISHERS / (time.perf_counter() - started)
    reader.cancel()
    call.cancel()
    return rate, 0


async def _fanout(stub: PubSubServiceStub) -> tuple[float, int]:
    """(deliveries/s, dropped) to FANOUT subscribers of one memory channel, batched: each
    of FANOUT_MESSAGES published (PublishBatch) reaches every subscriber."""
    channel = f"fanout-{uuid.uuid4().hex[:8]}"
    calls = [await _subscribe(stub, "memory", channel, 1000) for _ in range(FANOUT)]
    readers = [asyncio.ensure_future(_drain(call, FANOUT_MESSAGES)) for call in calls]
    entry = pubsub_pb2.PublishBatchEntry(channel=channel, payload=PAYLOAD)
    request = pubsub_pb2.PublishBatchRequest(target="memory", messages=[entry] * CHUNK)
    started = time.perf_counter()
    for _ in range(FANOUT_MESSAGES // CHUNK):
        await stub.PublishBatch(request)
    results = await asyncio.gather(*readers)
    for call in calls:
        call.cancel()
    received = sum(r for r, _, _ in results)
    ended = max(e for _, _, e in results)
    return received / (ended - started), sum(d for _, d, _ in results)


async def _latency(stub: PubSubServiceStub, target: str, max_batch: int) -> tuple[float, float]:
    """(p50, p99) in ms of publish-to-arrival at RATE messages/s."""
    channel = f"latency-{uuid.uuid4().hex[:8]}"
    call = await _subscribe(stub, target, channel, max_batch)
    count = int(RATE * LATENCY_SECONDS)
    delays: list[float] = []

    async def read() -> None:
        while len(delays) < count:
            frame = await call.read()
            now = time.perf_counter()
            kind = frame.WhichOneof("event")
            messages = frame.batch.messages if kind == "batch" else [frame.message]
            if kind in ("batch", "message"):
                delays.extend(now - float(m.payload) for m in messages)

    reader = asyncio.ensure_future(read())
    started = time.perf_counter()
    for i in range(count):
        wait = started + i / RATE - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        sent = repr(time.perf_counter()).encode()
        await stub.Publish(pubsub_pb2.PublishRequest(target=target, channel=channel, payload=sent))
    await asyncio.wait_for(reader, 10)
    call.cancel()
    cuts = statistics.quantiles(delays, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


async def _run(sidecar: str, floor: str, host: str, port: int) -> None:
    rates: dict[str, list[float]] = {}
    drops: dict[str, list[int]] = {}
    latency: dict[str, list[tuple[float, float]]] = {}
    async with grpc.aio.insecure_channel(sidecar) as channel:
        stub = PubSubServiceStub(channel)
        for repeat in range(REPEATS + 1):  # the first is a warm-up, not counted
            figures = {
                "floor": (await _floor(floor), 0),
                "redis single": await _redis_delivery(stub, host, port, 0),
                "redis batched": await _redis_delivery(stub, host, port, 1000),
                "memory batched": await _memory_delivery(stub),
                "memory publish": await _publish_rate(stub, "memory"),
                "redis publish": await _publish_rate(stub, "redis"),
                "memory fanout": await _fanout(stub),
            }
            lat = {
                f"{target} {name}": await _latency(stub, target, batch)
                for target in ("memory", "redis")
                for name, batch in (("single", 0), ("batched", 100))
            }
            if repeat:
                for case, (rate, dropped) in figures.items():
                    rates.setdefault(case, []).append(rate)
                    drops.setdefault(case, []).append(dropped)
                for case, pair in lat.items():
                    latency.setdefault(case, []).append(pair)
    floor_rate = statistics.median(rates["floor"])
    print(f"\npub/sub delivery to one subscriber, {MESSAGES} messages of {len(PAYLOAD)} B, medians")
    print(f"  {'case':34} {'msg/s':>10} {'vs floor':>9} {'dropped':>9}")
    labels = {
        "floor": "grpc.aio one-message stream (floor)",
        "redis single": "redis, one message per frame",
        "redis batched": "redis, max_batch 1000",
        "memory batched": "memory PublishBatch, max_batch 1000",
        "memory publish": f"memory Publish, {PUBLISHERS} callers",
        "redis publish": f"redis Publish, {PUBLISHERS} callers",
        "memory fanout": f"memory, to {FANOUT} subscribers",
    }
    for case, label in labels.items():
        rate = statistics.median(rates[case])
        dropped = statistics.median(drops[case])
        print(f"  {label:34} {rate:10.0f} {rate / floor_rate:9.2f} {dropped:9.0f}")
        record("pubsub", label, msgs_per_s=rate, vs_floor=rate / floor_rate, dropped=dropped)
    print(f"pub/sub end-to-end latency at {RATE} msg/s through Publish, medians of p50 / p99")
    for case, pairs in latency.items():
        p50 = statistics.median(p for p, _ in pairs)
        p99 = statistics.median(p for _, p in pairs)
        print(f"  {case:34} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
        record("pubsub", f"latency {case}", msgs_per_s=RATE, p50_ms=p50, p99_ms=p99)


def main() -> int:
    host, port, own_redis = redis_address()
    sidecar_address = f"127.0.0.1:{free_port()}"
    floor_address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sidecar.yaml"
        config.write_text(CONFIG.format(host=host, port=port, prefix=PREFIX))
        command = [sys.executable, "-m", "sidecar", "serve", "--config", str(config)]
        sidecar = start("sidecar", [*command, "--listen", sidecar_address], sidecar_address)
        try:
            floor = start(
                "floor",
                [sys.executable, "-m", "bench.pubsub", "--floor", floor_address],
                floor_address,
            )
            try:
                asyncio.run(_run(sidecar_address, floor_address, host, port))
            finally:
                floor.process.terminate()
                floor.process.wait(10)
        finally:
            sidecar.process.terminate()
            sidecar.process.wait(10)
            if own_redis is not None:
                own_redis.terminate()
                own_redis.wait(10)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor"]:
        asyncio.run(_serve_floor(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
