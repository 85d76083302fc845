"""Conformance suite of the pub/sub capability: every `PubSubBackend` must pass it.

Streams are read by a task that pipes events into an `asyncio.Queue`; every await that could
hang is bounded by `asyncio.wait_for(..., 2)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sidecar.backends.pubsub import (
    Dropped,
    Message,
    PubSubBackend,
    Subscription,
    SubscriptionEvent,
)
from sidecar.errors import Unavailable

Settle = Callable[[], Awaitable[None]]
TIMEOUT = 2


async def pump(subscription: Subscription, queue: asyncio.Queue[SubscriptionEvent]) -> None:
    async for event in subscription:
        queue.put_nowait(event)


@contextlib.asynccontextmanager
async def reading(
    subscription: Subscription,
) -> AsyncIterator[asyncio.Queue[SubscriptionEvent]]:
    """Read `subscription` in a task for the duration of the block, then cancel the task."""
    queue: asyncio.Queue[SubscriptionEvent] = asyncio.Queue()
    task = asyncio.create_task(pump(subscription, queue))
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)


async def take(queue: asyncio.Queue[SubscriptionEvent], count: int) -> list[SubscriptionEvent]:
    return [await asyncio.wait_for(queue.get(), TIMEOUT) for _ in range(count)]


async def take_messages(queue: asyncio.Queue[SubscriptionEvent], count: int) -> list[Message]:
    events = await take(queue, count)
    assert all(isinstance(event, Message) for event in events), events
    return [event for event in events if isinstance(event, Message)]


# One iterator per subscription, kept across `read_now` calls: an iterator that is dropped
# is closed when collected, and closing it closes the subscription (as the contract says).
_ITERATORS: weakref.WeakKeyDictionary[Subscription, AsyncIterator[SubscriptionEvent]] = (
    weakref.WeakKeyDictionary()
)


async def read_now(subscription: Subscription, count: int) -> list[SubscriptionEvent]:
    """Read `count` events straight from the subscription's iterator."""
    iterator = _ITERATORS.get(subscription)
    if iterator is None:
        iterator = _ITERATORS[subscription] = aiter(subscription)
    return [await asyncio.wait_for(anext(iterator), TIMEOUT) for _ in range(count)]


# -- delivery ----------------------------------------------------------------------------------


async def test_subscriber_receives_every_message_published_after_it_subscribed_in_order(
    broker: PubSubBackend,
) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=1_000)
    async with reading(subscription) as queue:
        for index in range(200):
            await broker.publish("orders", str(index).encode())
        messages = await take_messages(queue, 200)
    assert [m.payload for m in messages] == [str(i).encode() for i in range(200)]


async def test_message_published_before_subscribing_is_not_received(
    broker: PubSubBackend,
) -> None:
    await broker.publish("orders", b"early")
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    async with reading(subscription) as queue:
        await broker.publish("orders", b"late")
        [message] = await take_messages(queue, 1)
    assert message.payload == b"late"


async def test_message_on_another_channel_is_not_received(broker: PubSubBackend) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    async with reading(subscription) as queue:
        await broker.publish("invoices", b"other")
        await broker.publish("orders", b"mine")
        [message] = await take_messages(queue, 1)
    assert message.channel == "orders"


async def test_message_carries_channel_payload_metadata_and_no_pattern(
    broker: PubSubBackend,
) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    async with reading(subscription) as queue:
        await broker.publish("orders", b"\x00\xff", {"trace": "abc"})
        [message] = await take_messages(queue, 1)
    assert (message.channel, message.payload, dict(message.metadata), message.pattern) == (
        "orders",
        b"\x00\xff",
        {"trace": "abc"},
        None,
    )


async def test_message_published_without_metadata_has_empty_metadata(
    broker: PubSubBackend,
) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    async with reading(subscription) as queue:
        await broker.publish("orders", b"x")
        [message] = await take_messages(queue, 1)
    assert dict(message.metadata) == {}


async def test_message_is_stamped_with_the_wall_clock_time(broker: PubSubBackend) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    async with reading(subscription) as queue:
        await broker.publish("orders", b"x")
        [message] = await take_messages(queue, 1)
    assert message.published_at > 1_600_000_000  # seconds since the epoch, not monotonic


async def test_publish_without_subscribers_returns_zero(broker: PubSubBackend) -> None:
    assert await broker.publish("nobody", b"x") == 0


async def test_publish_returns_how_many_subscriptions_received_it(
    broker: PubSubBackend,
) -> None:
    await broker.subscribe(["orders"], [], buffer_size=8)
    await broker.subscribe(["orders"], [], buffer_size=8)
    await broker.subscribe(["invoices"], [], buffer_size=8)
    assert await broker.publish("orders", b"x") == 2


async def test_two_subscribers_on_one_pattern_both_receive(broker: PubSubBackend) -> None:
    first = await broker.subscribe([], ["orders.*"], buffer_size=8)
    second = await broker.subscribe([], ["orders.*"], buffer_size=8)
    async with reading(first) as first_queue, reading(second) as second_queue:
        await broker.publish("orders.eu", b"x")
        received = await take_messages(first_queue, 1) + await take_messages(second_queue, 1)
    assert [(m.channel, m.pattern) for m in received] == [("orders.eu", "orders.*")] * 2


async def test_subscription_to_a_channel_and_a_matching_pattern_receives_it_for_each(
    broker: PubSubBackend,
) -> None:
    # The documented choice, Redis's: one delivery per matching channel and per pattern.
    subscription = await broker.subscribe(["orders.eu"], ["orders.*", "*.eu"], buffer_size=8)
    async with reading(subscription) as queue:
        deliveries = await broker.publish("orders.eu", b"x")
        messages = await take_messages(queue, 3)
    assert (deliveries, sorted(str(m.pattern) for m in messages)) == (
        3,
        ["*.eu", "None", "orders.*"],
    )


async def test_repeated_channel_in_one_subscribe_delivers_once(broker: PubSubBackend) -> None:
    await broker.subscribe(["orders", "orders"], [], buffer_size=8)
    assert await broker.publish("orders", b"x") == 1


async def test_subscribe_to_several_channels_receives_from_each(
    broker: PubSubBackend,
) -> None:
    subscription = await broker.subscribe(["a", "b"], [], buffer_size=8)
    async with reading(subscription) as queue:
        await broker.publish("b", b"1")
        await broker.publish("a", b"2")
        messages = await take_messages(queue, 2)
    # Order holds within a channel on every backend, not across channels: a Kafka channel is
    # a topic of its own, and two topics' records come back from one fetch in either order.
    assert sorted((m.channel, m.payload) for m in messages) == [("a", b"2"), ("b", b"1")]


GLOB_CASES = [
    ("news.*", "news.sport", True),
    ("news.*", "news", False),
    ("h?llo", "hello", True),
    ("h?llo", "hllo", False),
    ("h[ae]llo", "hallo", True),
    ("h[ae]llo", "hillo", False),
    ("h[^e]llo", "hallo", True),
    ("h[^e]llo", "hello", False),
    ("h[a-c]llo", "hbllo", True),
    ("h[a-c]llo", "hdllo", False),
    ("h\\*llo", "h*llo", True),
    ("h\\*llo", "hello", False),
    ("*", "anything.at.all", True),
    ("a*b*c", "a-x-b-y-c", True),
    ("a*b*c", "a-x-b-y", False),
    ("Orders", "orders", False),
]


@pytest.mark.parametrize(
    ("pattern", "channel", "expected"),
    GLOB_CASES,
    ids=[f"{p}-{'matches' if e else 'misses'}-{c}" for p, c, e in GLOB_CASES],
)
async def test_pattern_subscription_receives_exactly_the_matching_channels(
    broker: PubSubBackend, pattern: str, channel: str, expected: bool
) -> None:
    subscription = await broker.subscribe([], [pattern], buffer_size=8)
    async with reading(subscription) as queue:
        deliveries = await broker.publish(channel, b"x")
        received = await take_messages(queue, 1) if expected else []
    assert (deliveries, [m.pattern for m in received]) == ((1, [pattern]) if expected else (0, []))


# -- slow subscribers --------------------------------------------------------------------------


async def test_slow_subscriber_reads_a_dropped_count_then_the_newest_messages(
    broker: PubSubBackend, settle: Settle
) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=3)
    for index in range(10):
        await broker.publish("orders", str(index).encode())
    await settle()
    events = await read_now(subscription, 4)
    assert events[0] == Dropped(7)
    assert [e.payload for e in events[1:] if isinstance(e, Message)] == [b"7", b"8", b"9"]


async def test_slow_subscriber_keeps_at_most_its_buffer_however_much_is_published(
    broker: PubSubBackend, settle: Settle
) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=4)
    for index in range(10_000):
        await broker.publish("orders", str(index).encode())
    await settle()
    events = await read_now(subscription, 5)
    await broker.publish("orders", b"next")
    [after] = await read_now(subscription, 1)
    assert events[0] == Dropped(9_996)
    assert isinstance(after, Message)
    assert after.payload == b"next"  # nothing else was left buffered


async def test_dropped_total_counts_every_dropped_message(
    broker: PubSubBackend, settle: Settle
) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=2)
    for index in range(5):
        await broker.publish("orders", str(index).encode())
    await settle()
    await read_now(subscription, 3)
    for index in range(4):
        await broker.publish("orders", str(index).encode())
    await settle()
    assert subscription.dropped_total == 5


async def test_subscriber_that_keeps_up_drops_nothing(broker: PubSubBackend) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=2)
    async with reading(subscription) as queue:
        for index in range(50):
            await broker.publish("orders", str(index).encode())
            await take_messages(queue, 1)
    assert subscription.dropped_total == 0


# -- cancellation and closing ------------------------------------------------------------------


async def test_cancelling_the_reading_task_frees_the_subscription(
    broker: PubSubBackend,
) -> None:
    subscription = await broker.subscribe(["orders"], ["o*"], buffer_size=8)
    queue: asyncio.Queue[SubscriptionEvent] = asyncio.Queue()
    task = asyncio.create_task(pump(subscription, queue))
    await broker.publish("orders", b"x")
    await take(queue, 2)  # the task is now waiting inside the iterator
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert broker.subscriber_count() == 0


async def test_cancelled_subscription_receives_no_more_messages(broker: PubSubBackend) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    async with reading(subscription):
        await asyncio.sleep(0)
    assert await broker.publish("orders", b"x") == 0


async def test_subscriber_count_counts_open_subscriptions(broker: PubSubBackend) -> None:
    await broker.subscribe(["a"], [], buffer_size=8)
    await broker.subscribe([], ["b*"], buffer_size=8)
    assert broker.subscriber_count() == 2


async def test_closing_a_subscription_ends_its_iteration(broker: PubSubBackend) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    queue: asyncio.Queue[SubscriptionEvent] = asyncio.Queue()
    task = asyncio.create_task(pump(subscription, queue))
    await asyncio.sleep(0)
    await subscription.close()
    await asyncio.wait_for(task, TIMEOUT)
    assert (queue.empty(), broker.subscriber_count()) == (True, 0)


async def test_closing_a_subscription_twice_is_harmless(broker: PubSubBackend) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    await subscription.close()
    await subscription.close()
    assert broker.subscriber_count() == 0


async def test_iterating_a_closed_subscription_ends_at_once(broker: PubSubBackend) -> None:
    subscription = await broker.subscribe(["orders"], [], buffer_size=8)
    await broker.publish("orders", b"unread")
    await subscription.close()
    events = [event async for event in subscription]
    assert events == []


async def test_broker_close_ends_every_iteration_cleanly(broker: PubSubBackend) -> None:
    first = await broker.subscribe(["a"], [], buffer_size=8)
    second = await broker.subscribe([], ["*"], buffer_size=8)
    queue: asyncio.Queue[SubscriptionEvent] = asyncio.Queue()
    tasks = [asyncio.create_task(pump(s, queue)) for s in (first, second)]
    await asyncio.sleep(0)
    await broker.close()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)  # no exception: a clean end
    assert broker.subscriber_count() == 0


async def test_publish_after_broker_close_fails_with_unavailable(
    broker: PubSubBackend,
) -> None:
    await broker.close()
    with pytest.raises(Unavailable):
        await broker.publish("orders", b"x")


async def test_subscribe_after_broker_close_fails_with_unavailable(
    broker: PubSubBackend,
) -> None:
    await broker.close()
    with pytest.raises(Unavailable):
        await broker.subscribe(["orders"], [], buffer_size=8)


async def test_ping_succeeds_on_an_open_broker(broker: PubSubBackend) -> None:
    await broker.ping()


# -- arguments ---------------------------------------------------------------------------------


async def test_subscribe_without_channels_or_patterns_is_rejected(
    broker: PubSubBackend,
) -> None:
    with pytest.raises(ValueError, match="channel or pattern"):
        await broker.subscribe([], [], buffer_size=8)


async def test_subscribe_with_a_buffer_below_one_is_rejected(broker: PubSubBackend) -> None:
    with pytest.raises(ValueError, match="buffer_size"):
        await broker.subscribe(["orders"], [], buffer_size=0)
