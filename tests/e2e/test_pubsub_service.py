"""PubSubService end to end on the in-process broker."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support import eventually

from generated.integration.v1 import pubsub_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from sidecar.server import RunningServer

pytestmark = pytest.mark.e2e


async def subscribe(
    pubsub: PubSubServiceStub,
    *,
    channels: list[str] = (),
    patterns: list[str] = (),  # type: ignore[assignment]
) -> tuple[grpc.aio.UnaryStreamCall, asyncio.Queue[pubsub_pb2.SubscribeResponse]]:
    """Open a subscription, wait until it is active, and pipe its events into a queue."""
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=channels, patterns=patterns))
    first = await asyncio.wait_for(call.read(), 5)
    assert first.WhichOneof("event") == "started"
    queue: asyncio.Queue[pubsub_pb2.SubscribeResponse] = asyncio.Queue()

    async def pump() -> None:
        while (event := await call.read()) is not grpc.aio.EOF:
            queue.put_nowait(event)

    task = asyncio.get_running_loop().create_task(pump())
    call.add_done_callback(lambda _: task.cancel())
    return call, queue


async def test_subscriber_receives_every_message_in_order(pubsub: PubSubServiceStub) -> None:
    call, queue = await subscribe(pubsub, channels=["orders"])
    for i in range(50):
        reply = await pubsub.Publish(
            pubsub_pb2.PublishRequest(
                channel="orders", payload=str(i).encode(), metadata={"n": str(i)}
            )
        )
        assert reply.receivers == 1
    received = [await asyncio.wait_for(queue.get(), 5) for _ in range(50)]
    assert [e.message.payload for e in received] == [str(i).encode() for i in range(50)]
    assert received[7].message.metadata["n"] == "7"
    call.cancel()


async def test_two_subscribers_on_one_pattern_both_receive(pubsub: PubSubServiceStub) -> None:
    first, first_queue = await subscribe(pubsub, patterns=["news.*"])
    second, second_queue = await subscribe(pubsub, patterns=["news.*"])
    reply = await pubsub.Publish(pubsub_pb2.PublishRequest(channel="news.sport", payload=b"goal"))
    got = [await asyncio.wait_for(q.get(), 5) for q in (first_queue, second_queue)]
    assert reply.receivers == 2
    assert [(e.message.channel, e.message.pattern, e.message.payload) for e in got] == [
        ("news.sport", "news.*", b"goal")
    ] * 2
    first.cancel()
    second.cancel()


async def test_message_published_before_subscribing_is_not_delivered(
    pubsub: PubSubServiceStub,
) -> None:
    await pubsub.Publish(pubsub_pb2.PublishRequest(channel="late", payload=b"early"))
    call, queue = await subscribe(pubsub, channels=["late"])
    await pubsub.Publish(pubsub_pb2.PublishRequest(channel="late", payload=b"on time"))
    assert (await asyncio.wait_for(queue.get(), 5)).message.payload == b"on time"
    call.cancel()


async def test_cancelling_a_subscription_frees_it(
    sidecar: RunningServer, pubsub: PubSubServiceStub
) -> None:
    broker = sidecar.integrations.resolve("pubsub", "").backend
    call, _ = await subscribe(pubsub, channels=["a"])
    assert broker.subscriber_count() == 1
    call.cancel()
    await eventually(lambda: broker.subscriber_count() == 0)
    assert broker.subscriber_count() == 0
    reply = await pubsub.Publish(pubsub_pb2.PublishRequest(channel="a", payload=b"x"))
    assert reply.receivers == 0


async def test_cancelling_a_subscription_whose_reader_has_stopped_reading_frees_it(
    sidecar: RunningServer, pubsub: PubSubServiceStub
) -> None:
    # The caller reads nothing after `started`, so HTTP/2 flow control holds the sidecar's
    # write of the first large message: the cancel arrives while the write is in progress.
    broker = sidecar.integrations.resolve("pubsub", "").backend
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["stalled"]))
    assert (await asyncio.wait_for(call.read(), 5)).WhichOneof("event") == "started"
    for _ in range(4):
        await pubsub.Publish(pubsub_pb2.PublishRequest(channel="stalled", payload=bytes(1 << 20)))
    await asyncio.sleep(0.2)  # let the sidecar start writing; nothing below depends on it
    call.cancel()
    await eventually(lambda: broker.subscriber_count() == 0)
    assert broker.subscriber_count() == 0
