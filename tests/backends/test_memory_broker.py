"""What only `MemoryBroker` promises: its injected wall clock, bounded buffers, and cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from sidecar.backends.pubsub import Dropped, MemoryBroker, Message

TIMEOUT = 2


async def test_message_is_stamped_by_the_injected_wall_clock() -> None:
    broker = MemoryBroker(clock_wall=lambda: 1_700_000_000.5)
    subscription = await broker.subscribe(["a"], [], buffer_size=1)
    await broker.publish("a", b"x")
    event = await asyncio.wait_for(anext(aiter(subscription)), TIMEOUT)
    assert isinstance(event, Message)
    assert event.published_at == 1_700_000_000.5


async def test_buffer_never_holds_more_than_buffer_size_messages() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], ["*"], buffer_size=8)
    for index in range(1_000):
        await broker.publish("a", str(index).encode())
    assert subscription.buffered() == 8  # type: ignore[attr-defined]


async def test_metadata_received_is_read_only() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], [], buffer_size=1)
    await broker.publish("a", b"x", {"k": "v"})
    event = await asyncio.wait_for(anext(aiter(subscription)), TIMEOUT)
    assert isinstance(event, Message)
    with pytest.raises(TypeError):
        event.metadata["k"] = "changed"  # type: ignore[index]


async def test_metadata_changed_by_the_publisher_afterwards_does_not_reach_subscribers() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], [], buffer_size=1)
    metadata = {"k": "v"}
    await broker.publish("a", b"x", metadata)
    metadata["k"] = "changed"
    event = await asyncio.wait_for(anext(aiter(subscription)), TIMEOUT)
    assert isinstance(event, Message)
    assert event.metadata["k"] == "v"


async def test_closing_the_iterator_after_breaking_out_frees_the_subscription() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], [], buffer_size=4)
    await broker.publish("a", b"x")
    iterator = aiter(subscription)
    async with contextlib.aclosing(iterator):  # type: ignore[type-var]
        async for _ in iterator:
            break
    assert broker.subscriber_count() == 0


async def test_abandoned_iterator_frees_the_subscription_once_collected() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], [], buffer_size=4)
    await broker.publish("a", b"x")
    async for _ in subscription:
        break
    gc.collect()
    await asyncio.sleep(0)  # asyncio runs the collected generator's aclose() as a task
    await asyncio.sleep(0)
    assert broker.subscriber_count() == 0


async def test_dropped_is_reported_again_after_a_later_overflow() -> None:
    broker = MemoryBroker()
    subscription = await broker.subscribe(["a"], [], buffer_size=1)
    iterator = aiter(subscription)
    await broker.publish("a", b"1")
    await broker.publish("a", b"2")
    first = [_describe(await anext(iterator)) for _ in range(2)]
    for payload in (b"3", b"4", b"5"):
        await broker.publish("a", payload)
    second = [_describe(await anext(iterator)) for _ in range(2)]
    assert first + second == [Dropped(1), b"2", Dropped(2), b"5"]


def _describe(event: Dropped | Message) -> Dropped | bytes:
    return event.payload if isinstance(event, Message) else event
