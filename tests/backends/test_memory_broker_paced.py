"""A paced subscription of the memory broker: a full buffer makes publish wait for the reader
instead of dropping, and a closed subscription lets waiting publishers go on."""

from __future__ import annotations

import asyncio

from sidecar.backends.pubsub import MemoryBroker, Message
from sidecar.backends.pubsub.buffered import BufferedSubscription


async def test_publish_waits_for_room_and_nothing_is_dropped() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], [], buffer_size=2, paced=True)
    assert isinstance(subscription, BufferedSubscription)
    events = aiter(subscription)
    await broker.publish("a", b"0")
    await broker.publish("a", b"1")
    third = asyncio.ensure_future(broker.publish("a", b"2"))
    await asyncio.sleep(0.01)
    assert not third.done() and subscription.buffered() == 2
    first = await anext(events)
    assert await asyncio.wait_for(third, 1) == 1
    rest = [await anext(events), await anext(events)]
    assert [e.payload for e in (first, *rest) if isinstance(e, Message)] == [b"0", b"1", b"2"]
    assert subscription.dropped_total == 0
    await broker.close()


async def test_a_message_matching_twice_waits_for_room_for_both() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], ["a*"], buffer_size=2, paced=True)
    assert isinstance(subscription, BufferedSubscription)
    events = aiter(subscription)
    assert await broker.publish("a", b"0") == 2  # once for the channel, once for the pattern
    second = asyncio.ensure_future(broker.publish("a", b"1"))
    await anext(events)
    await asyncio.sleep(0.01)
    assert not second.done()  # room for one of its two deliveries only
    await anext(events)
    assert await asyncio.wait_for(second, 1) == 2
    assert subscription.dropped_total == 0
    await broker.close()


async def test_closing_a_full_subscription_releases_the_publisher() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], [], buffer_size=1, paced=True)
    await broker.publish("a", b"0")
    waiting = asyncio.ensure_future(broker.publish("a", b"1"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await subscription.close()
    assert await asyncio.wait_for(waiting, 1) == 0  # nobody subscribed any more
    await broker.close()


async def test_an_unpaced_subscription_still_drops_the_oldest() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], [], buffer_size=1)
    await broker.publish("a", b"0")
    assert await asyncio.wait_for(broker.publish("a", b"1"), 1) == 1
    assert subscription.dropped_total == 1
    await broker.close()
