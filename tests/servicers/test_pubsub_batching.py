"""Batched Subscribe frames, flow credit on plain channels, and PublishBatch, through real
gRPC stubs on an in-process sidecar: the memory broker, and Redis (127.0.0.1:6379, or one
started for the run) for plain channels and reliable topics, under a key prefix of its own
per test."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import redis.asyncio as aioredis
from streams_support import delete_prefix, fresh_prefix, redis_address
from support import error_info

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e
TIMEOUT = 10


def config(prefix: str) -> str:
    host, port = redis_address()
    return f"""
server:
  max_receive_message_size: 32MiB
services:
  pubsub: {{type: pubsub, subscriber_buffer: 1000}}
  lossy: {{type: pubsub, subscriber_buffer: 10}}
  redis:
    type: pubsub
    backend: redis
    host: {host}
    port: {port}
    key_prefix: "{prefix}"
    reliable_topics: ["jobs.*"]
schemas:
  order:
    schema: {{type: object, required: [id]}}
"""


@pytest.fixture
def prefix() -> Iterator[str]:
    value = fresh_prefix()
    yield value
    delete_prefix(value)


@pytest.fixture
async def sidecar(prefix: str) -> AsyncIterator[RunningServer]:
    async with serve_for_test(config(prefix)) as running:
        yield running


@pytest.fixture
async def pubsub(sidecar: RunningServer) -> AsyncIterator[PubSubServiceStub]:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        yield PubSubServiceStub(channel)


async def subscribe(pubsub: PubSubServiceStub, **fields: object) -> grpc.aio.UnaryStreamCall:
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(**fields))  # type: ignore[arg-type]
    first = await asyncio.wait_for(call.read(), TIMEOUT)
    assert first.WhichOneof("event") == "started"
    return call


def messages_of(frame: pubsub_pb2.SubscribeResponse) -> list[pubsub_pb2.PubSubMessage]:
    kind = frame.WhichOneof("event")
    if kind == "batch":
        return list(frame.batch.messages)
    return [frame.message] if kind == "message" else []


async def read_frames(
    call: grpc.aio.UnaryStreamCall, count: int, *, pause: float = 0.0
) -> list[pubsub_pb2.SubscribeResponse]:
    """Frames until `count` messages (plus any dropped counts) arrived, pausing after each."""
    frames: list[pubsub_pb2.SubscribeResponse] = []
    seen = 0
    while seen < count:
        frame = await asyncio.wait_for(call.read(), TIMEOUT)
        assert frame is not grpc.aio.EOF
        frames.append(frame)
        seen += len(messages_of(frame)) + frame.dropped.count
        if pause:
            await asyncio.sleep(pause)
    return frames


def batch(channel: str, count: int, size: int = 0) -> pubsub_pb2.PublishBatchRequest:
    return pubsub_pb2.PublishBatchRequest(
        messages=[
            pubsub_pb2.PublishBatchEntry(channel=channel, payload=str(i).encode().ljust(size))
            for i in range(count)
        ]
    )


def numbers(frames: list[pubsub_pb2.SubscribeResponse]) -> list[int]:
    return [int(m.payload) for f in frames for m in messages_of(f)]


# -- batched frames ------------------------------------------------------------------------


async def test_a_slow_batching_reader_gets_many_messages_per_frame_none_lost_in_order(
    pubsub: PubSubServiceStub,
) -> None:
    call = await subscribe(pubsub, channels=["b.orders"], max_batch=100)
    publishing = asyncio.ensure_future(pubsub.PublishBatch(batch("b.orders", 500)))
    frames = await read_frames(call, 500, pause=0.02)
    await publishing
    sizes = [len(messages_of(f)) for f in frames]
    assert all(f.WhichOneof("event") == "batch" for f in frames)
    assert max(sizes) > 1 and max(sizes) <= 100 and len(frames) < 500
    assert numbers(frames) == list(range(500))
    call.cancel()


async def test_a_slow_batching_consumer_of_a_reliable_topic_loses_nothing(
    pubsub: PubSubServiceStub,
) -> None:
    call = await subscribe(
        pubsub, target="redis", channels=["jobs.b"], group="g", max_in_flight=1000, max_batch=100
    )
    for start in range(0, 500, 100):  # the ids of one call, in order, then the next call's
        reply = await pubsub.PublishBatch(
            pubsub_pb2.PublishBatchRequest(
                target="redis",
                messages=[
                    pubsub_pb2.PublishBatchEntry(channel="jobs.b", payload=str(i).encode())
                    for i in range(start, start + 100)
                ],
            )
        )
        assert len(reply.results) == 100 and all(r.message_id for r in reply.results)
    frames = await read_frames(call, 500, pause=0.02)
    sizes = [len(messages_of(f)) for f in frames]
    assert max(sizes) > 1 and max(sizes) <= 100
    assert numbers(frames) == list(range(500))
    call.cancel()


async def test_frames_keep_under_max_batch_bytes(pubsub: PubSubServiceStub) -> None:
    call = await subscribe(pubsub, channels=["b.bytes"], max_batch=100, max_batch_bytes=1000)
    await pubsub.PublishBatch(batch("b.bytes", 30, size=300))
    frames = await read_frames(call, 30)
    assert numbers(frames) == list(range(30))
    assert all(1 <= len(messages_of(f)) <= 3 for f in frames)
    assert all(f.ByteSize() <= 1000 + 64 for f in frames)
    call.cancel()


async def test_a_lone_message_is_sent_at_once(pubsub: PubSubServiceStub) -> None:
    call = await subscribe(pubsub, channels=["b.lone"], max_batch=100)
    delays = []
    for i in range(20):
        started = time.perf_counter()
        await pubsub.Publish(pubsub_pb2.PublishRequest(channel="b.lone", payload=b"%d" % i))
        (frame,) = await read_frames(call, 1)
        delays.append(time.perf_counter() - started)
        assert numbers([frame]) == [i]
    # A timer holding messages back would show as its period here; a round trip through
    # the in-process sidecar takes well under a millisecond on an idle machine.
    assert statistics.median(delays) < 0.005, delays
    call.cancel()


async def test_a_subscriber_that_does_not_batch_gets_one_message_per_frame(
    pubsub: PubSubServiceStub,
) -> None:
    call = await subscribe(pubsub, channels=["b.single"])
    await pubsub.PublishBatch(batch("b.single", 50))
    frames = await read_frames(call, 50)
    assert [f.WhichOneof("event") for f in frames] == ["message"] * 50
    assert numbers(frames) == list(range(50))
    call.cancel()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_batch": 1001}, "max_batch"),
        ({"max_batch": -1}, "max_batch"),
        ({"max_batch_bytes": 1000}, "max_batch_bytes"),
        ({"max_batch": 10, "max_batch_bytes": 100 << 20}, "max_batch_bytes"),
        ({"max_in_flight": 10_001}, "max_in_flight"),
        ({"consumer": "c"}, "group"),
    ],
)
async def test_out_of_bounds_subscribe_settings_are_invalid(
    pubsub: PubSubServiceStub, fields: dict[str, int], field: str
) -> None:
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["b.bad"], **fields))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).metadata["field"] == field


# -- flow credit ---------------------------------------------------------------------------


async def test_a_credit_paces_publishers_to_a_stalled_reader_on_memory_without_loss(
    pubsub: PubSubServiceStub,
) -> None:
    count, size = 400, 64 * 1024  # far more than gRPC's flow-control windows hold
    call = await subscribe(pubsub, target="lossy", channels=["c.paced"], max_in_flight=10)
    published = 0

    async def publish() -> None:
        nonlocal published
        for i in range(count):
            payload = str(i).encode().ljust(size)
            await pubsub.Publish(
                pubsub_pb2.PublishRequest(target="lossy", channel="c.paced", payload=payload)
            )
            published += 1

    publisher = asyncio.ensure_future(publish())
    # The reader stalls: once gRPC's windows and the credit are full, the publisher is held
    # (its count stops growing) short of the end.
    stalled_at = -1
    while published != stalled_at:
        stalled_at = published
        await asyncio.sleep(0.3)
    assert 10 <= stalled_at < count
    frames = await read_frames(call, count)
    await asyncio.wait_for(publisher, TIMEOUT)
    assert not any(f.HasField("dropped") for f in frames)
    assert numbers(frames) == list(range(count))
    call.cancel()


async def test_without_a_credit_a_stalled_reader_loses_the_oldest_and_is_told(
    pubsub: PubSubServiceStub,
) -> None:
    count, size = 400, 64 * 1024
    call = await subscribe(pubsub, target="lossy", channels=["c.lossy"])
    for i in range(count):  # never waits: subscriber_buffer 10, the oldest dropped
        await pubsub.Publish(
            pubsub_pb2.PublishRequest(
                target="lossy", channel="c.lossy", payload=str(i).encode().ljust(size)
            )
        )
    frames = await read_frames(call, count)
    dropped = sum(f.dropped.count for f in frames)
    assert dropped > 0 and len(numbers(frames)) + dropped == count
    assert numbers(frames)[-1] == count - 1
    call.cancel()


async def test_a_redis_plain_channel_drops_past_the_credit_and_counts_it(
    sidecar: RunningServer, pubsub: PubSubServiceStub, prefix: str
) -> None:
    count, size = 400, 64 * 1024
    call = await subscribe(pubsub, target="redis", channels=["c.redis"], max_in_flight=10)
    host, port = redis_address()
    client = aioredis.Redis(host=host, port=port)
    try:  # straight into Redis, as fast as it takes them: Redis cannot be paced
        async with client.pipeline(transaction=False) as pipe:
            for i in range(count):
                pipe.publish(prefix + "c.redis", str(i).encode().ljust(size))
            await pipe.execute()
    finally:
        await client.aclose()
    frames = await read_frames(call, count)
    dropped = sum(f.dropped.count for f in frames)
    received = numbers(frames)
    assert dropped > 0 and len(received) + dropped == count
    assert received == sorted(received) and received[-1] == count - 1
    counts = {(s, e): n for s, e, n in sidecar.integrations.messages}
    assert counts[("redis", "dropped")] == dropped
    assert counts[("redis", "delivered")] == len(received)
    call.cancel()


# -- PublishBatch --------------------------------------------------------------------------


async def test_publish_batch_answers_per_message_in_order(pubsub: PubSubServiceStub) -> None:
    call = await subscribe(pubsub, channels=["p.a"])
    reply = await pubsub.PublishBatch(
        pubsub_pb2.PublishBatchRequest(
            messages=[
                pubsub_pb2.PublishBatchEntry(channel="p.a", payload=b"1", metadata={"k": "v"}),
                pubsub_pb2.PublishBatchEntry(channel="p.nobody", payload=b"2"),
                pubsub_pb2.PublishBatchEntry(channel="p.a", payload=b"3"),
            ]
        )
    )
    assert [r.receivers for r in reply.results] == [1, 0, 1]
    frames = await read_frames(call, 2)
    assert [m.payload for f in frames for m in messages_of(f)] == [b"1", b"3"]
    assert frames[0].message.metadata["k"] == "v"
    call.cancel()


async def test_publish_batch_on_reliable_topics_is_one_pipeline_in_order(
    pubsub: PubSubServiceStub, prefix: str
) -> None:
    entries = [
        pubsub_pb2.PublishBatchEntry(channel=f"jobs.{i % 2}", payload=b"%d" % i) for i in range(10)
    ]
    entries.insert(5, pubsub_pb2.PublishBatchEntry(channel="plain", payload=b"p"))
    reply = await pubsub.PublishBatch(
        pubsub_pb2.PublishBatchRequest(target="redis", messages=entries)
    )
    ids = [r.message_id for r in reply.results]
    assert ids[5] == "" and reply.results[5].receivers == 0
    del ids[5]
    host, port = redis_address()
    client = aioredis.Redis(host=host, port=port)
    try:
        for topic in ("jobs.0", "jobs.1"):
            stored = await client.xrange(prefix + topic)
            assert [e[0].decode() for e in stored] == ids[int(topic[-1]) :: 2]
            assert [e[1][b"payload"] for e in stored] == [
                b"%d" % i for i in range(int(topic[-1]), 10, 2)
            ]
    finally:
        await client.aclose()


async def test_publish_batch_bounds(pubsub: PubSubServiceStub) -> None:
    async def refused(request: pubsub_pb2.PublishBatchRequest) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pubsub.PublishBatch(request)
        return caught.value

    call = await subscribe(pubsub, channels=["p.bounds"])
    empty = await refused(pubsub_pb2.PublishBatchRequest())
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT
    too_many = await refused(batch("p.bounds", 1001))
    assert too_many.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(too_many).metadata["field"] == "messages"
    big = pubsub_pb2.PublishBatchEntry(channel="p.bounds", payload=b"x" * (1 << 20))
    too_big = await refused(pubsub_pb2.PublishBatchRequest(messages=[big] * 17))
    assert too_big.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(too_big).reason == "BATCH_TOO_LARGE"
    oversized = pubsub_pb2.PublishBatchEntry(channel="p.bounds", payload=b"x" * ((1 << 20) + 1))
    one_too_big = await refused(
        pubsub_pb2.PublishBatchRequest(
            messages=[pubsub_pb2.PublishBatchEntry(channel="p.bounds", payload=b"0"), oversized]
        )
    )
    assert one_too_big.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(one_too_big).metadata["field"] == "messages[1].payload"
    no_id = pubsub_pb2.PublishBatchEntry(channel="p.bounds", payload=b"{}", schema="order")
    violation = await refused(
        pubsub_pb2.PublishBatchRequest(
            messages=[pubsub_pb2.PublishBatchEntry(channel="p.bounds", payload=b"0"), no_id]
        )
    )
    assert violation.code() is grpc.StatusCode.INVALID_ARGUMENT
    # Nothing of a refused batch was published: the next message is the first one seen.
    await pubsub.Publish(pubsub_pb2.PublishRequest(channel="p.bounds", payload=b"after"))
    (frame,) = await read_frames(call, 1)
    assert frame.message.payload == b"after"
    call.cancel()
