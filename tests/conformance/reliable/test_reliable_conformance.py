"""Conformance suite of reliable topics: every `ReliablePubSub` backend must pass it.

At-least-once: what Publish accepted is delivered until acknowledged; an unacknowledged
delivery comes back after the visibility timeout; after `max_deliveries` it moves to the
dead letters, which can be read and replayed; consumers of a group share the messages and
every group gets all of them. Every wait is bounded; timeouts are short (conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from reliable_support import MAX_DELIVERIES, VISIBILITY_TIMEOUT, Reliable

from sidecar.backends.pubsub import (
    DeadLetter,
    ReliableMessage,
    ReliablePubSub,
    ReliableSubscription,
)

TIMEOUT = 5.0


@contextlib.asynccontextmanager
async def reading(
    subscription: ReliableSubscription,
) -> AsyncIterator[asyncio.Queue[ReliableMessage]]:
    """Pipe the subscription into a queue for the block; close it afterwards."""
    queue: asyncio.Queue[ReliableMessage] = asyncio.Queue()

    async def pump() -> None:
        async for message in subscription:
            queue.put_nowait(message)

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        await subscription.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def take(queue: asyncio.Queue[ReliableMessage], count: int) -> list[ReliableMessage]:
    return [await asyncio.wait_for(queue.get(), TIMEOUT) for _ in range(count)]


async def dead_letters(backend: ReliablePubSub) -> list[DeadLetter]:
    return await backend.read_dead_letters("orders", after=None, count=10)


async def nothing_more(queue: asyncio.Queue[ReliableMessage], seconds: float = 0.3) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(queue.get(), seconds)
        return False
    return True


async def test_published_messages_are_delivered_with_their_ids_and_acknowledged_once(
    reliable: Reliable,
) -> None:
    backend, group = reliable.backend, reliable.group()
    subscription = await backend.consume(["orders"], group, None, max_in_flight=10)
    async with reading(subscription) as queue:
        ids = [
            await backend.publish_reliable("orders", f"m{i}".encode(), {"x-trace": str(i)})
            for i in range(3)
        ]
        received = await take(queue, 3)
        assert [m.message_id for m in received] == ids
        assert [(m.topic, m.payload, dict(m.metadata), m.delivery_count) for m in received] == [
            ("orders", f"m{i}".encode(), {"x-trace": str(i)}, 1) for i in range(3)
        ]
        assert await backend.acknowledge("orders", group, ids) == 3
        assert await backend.acknowledge("orders", group, ids) == 0
        assert await nothing_more(queue, VISIBILITY_TIMEOUT * 2)


async def test_messages_published_before_the_first_consumer_are_delivered(
    reliable: Reliable,
) -> None:
    backend, group = reliable.backend, reliable.group()
    published = await backend.publish_reliable("orders", b"early")
    async with reading(await backend.consume(["orders"], group, None, max_in_flight=10)) as queue:
        [message] = await take(queue, 1)
    assert (message.message_id, message.payload) == (published, b"early")


@pytest.mark.needs("backlog_for_new_groups")
async def test_a_group_created_later_reads_from_the_oldest_kept_message(
    reliable: Reliable,
) -> None:
    backend, first, second = reliable.backend, reliable.group(), reliable.group()
    async with reading(await backend.consume(["orders"], first, None, max_in_flight=10)) as q:
        await backend.publish_reliable("orders", b"x")
        await take(q, 1)
    async with reading(await backend.consume(["orders"], second, None, max_in_flight=10)) as q:
        [message] = await take(q, 1)
    assert message.payload == b"x"


async def test_every_group_receives_every_message(reliable: Reliable) -> None:
    backend, first, second = reliable.backend, reliable.group(), reliable.group()
    one = await backend.consume(["orders"], first, None, max_in_flight=10)
    two = await backend.consume(["orders"], second, None, max_in_flight=10)
    async with reading(one) as first_queue, reading(two) as second_queue:
        for i in range(3):
            await backend.publish_reliable("orders", str(i).encode())
        got_first = [m.payload for m in await take(first_queue, 3)]
        got_second = [m.payload for m in await take(second_queue, 3)]
    assert got_first == got_second == [b"0", b"1", b"2"]


async def test_consumers_of_one_group_share_the_messages(reliable: Reliable) -> None:
    backend, group = reliable.backend, reliable.group()
    one = await backend.consume(["orders"], group, "one", max_in_flight=3)
    two = await backend.consume(["orders"], group, "two", max_in_flight=3)
    async with reading(one) as first_queue, reading(two) as second_queue:
        for i in range(6):
            await backend.publish_reliable("orders", str(i).encode())
        # Each holds at most 3 unacknowledged: together they must hold all 6.
        received: list[ReliableMessage] = []
        async with asyncio.timeout(TIMEOUT):
            while len(received) < 6:
                for queue in (first_queue, second_queue):
                    while not queue.empty():
                        received.append(queue.get_nowait())
                await asyncio.sleep(0.01)
        from_first = first_queue.qsize()
    assert sorted(m.payload for m in received) == [str(i).encode() for i in range(6)]
    assert from_first == 0


async def test_a_consumer_holds_at_most_max_in_flight_until_acknowledgements_make_room(
    reliable: Reliable,
) -> None:
    backend, group = reliable.backend, reliable.group()
    async with reading(await backend.consume(["orders"], group, None, max_in_flight=2)) as queue:
        for i in range(4):
            await backend.publish_reliable("orders", str(i).encode())
        first = await take(queue, 2)
        assert await nothing_more(queue, 0.2)
        await backend.acknowledge("orders", group, [m.message_id for m in first])
        rest = await take(queue, 2)
    assert [m.payload for m in first + rest] == [b"0", b"1", b"2", b"3"]


async def test_an_unacknowledged_message_is_delivered_again_after_the_visibility_timeout(
    reliable: Reliable,
) -> None:
    backend, group = reliable.backend, reliable.group()
    async with reading(await backend.consume(["orders"], group, None, max_in_flight=5)) as queue:
        published = await backend.publish_reliable("orders", b"slow")
        [first] = await take(queue, 1)
        [again] = await take(queue, 1)
        assert await backend.acknowledge("orders", group, [again.message_id]) == 1
    assert (first.delivery_count, again.delivery_count) == (1, 2)
    assert first.message_id == again.message_id == published


async def test_a_poison_message_reaches_the_dead_letters_and_replays_as_a_new_message(
    reliable: Reliable,
) -> None:
    backend, group = reliable.backend, reliable.group()
    async with reading(await backend.consume(["orders"], group, "worker", max_in_flight=5)) as q:
        published = await backend.publish_reliable("orders", b"poison", {"kind": "bad"})
        deliveries = await take(q, MAX_DELIVERIES)
        assert [m.delivery_count for m in deliveries] == list(range(1, MAX_DELIVERIES + 1))
        async with asyncio.timeout(TIMEOUT):
            while not (letters := await dead_letters(backend)):  # noqa: ASYNC110 - polling
                await asyncio.sleep(0.05)
        [letter] = letters
        # What integration_pubsub_messages_total{event="dead_lettered"} reports.
        counted = backend.dead_lettered_total  # type: ignore[attr-defined]
        async with asyncio.timeout(TIMEOUT):
            while counted() < 1:  # noqa: ASYNC110 - the move's reply may still be on its way
                await asyncio.sleep(0.01)
        assert counted() == 1
        assert (letter.topic, letter.message_id, letter.payload, dict(letter.metadata)) == (
            "orders",
            published,
            b"poison",
            {"kind": "bad"},
        )
        assert (letter.delivery_count, letter.group, letter.consumer) == (
            MAX_DELIVERIES,
            group,
            "worker",
        )
        outcome = await backend.replay_dead_letters("orders", [letter.dead_letter_id], limit=10)
        [replayed] = outcome.replayed
        assert (replayed.dead_letter_id, outcome.not_found, outcome.remaining) == (
            letter.dead_letter_id,
            (),
            0,
        )
        [again] = await take(q, 1)
        assert (again.message_id, again.payload, again.delivery_count) == (
            replayed.message_id,
            b"poison",
            1,
        )
        await backend.acknowledge("orders", group, [again.message_id])
    assert await backend.read_dead_letters("orders", after=None, count=10) == []


async def test_dead_letters_page_and_replay_all(reliable: Reliable) -> None:
    backend = await reliable.make(max_deliveries=1)
    group = reliable.group()
    async with reading(await backend.consume(["orders"], group, None, max_in_flight=5)) as q:
        for i in range(3):
            await backend.publish_reliable("orders", str(i).encode())
        await take(q, 3)
        async with asyncio.timeout(TIMEOUT):
            while len(await dead_letters(backend)) < 3:  # noqa: ASYNC110 - polling
                await asyncio.sleep(0.05)
        first_page = await backend.read_dead_letters("orders", after=None, count=2)
        second_page = await backend.read_dead_letters(
            "orders", after=first_page[-1].dead_letter_id, count=2
        )
        assert [d.payload for d in first_page + second_page] == [b"0", b"1", b"2"]
        missing = "1-1"
        outcome = await backend.replay_dead_letters("orders", None, limit=10)
        assert (len(outcome.replayed), outcome.remaining) == (3, 0)
        named = await backend.replay_dead_letters("orders", [missing], limit=10)
        assert named.not_found == (missing,)
        replayed = await take(q, 3)
    assert sorted(m.payload for m in replayed) == [b"0", b"1", b"2"]


async def test_unacknowledged_messages_come_back_to_the_group_after_a_consumer_restarts(
    reliable: Reliable,
) -> None:
    backend, group = reliable.backend, reliable.group()
    async with reading(await backend.consume(["orders"], group, "w", max_in_flight=10)) as q:
        ids = [await backend.publish_reliable("orders", str(i).encode()) for i in range(5)]
        received = await take(q, 5)
        await backend.acknowledge("orders", group, ids[:2])
    # The consumer is gone (a crashed app, a closed stream): the other three are not lost.
    async with reading(await backend.consume(["orders"], group, "w", max_in_flight=10)) as q:
        again = await take(q, 3)
        assert await nothing_more(q, 0.2)
    assert [m.payload for m in received] == [b"0", b"1", b"2", b"3", b"4"]
    assert sorted(m.message_id for m in again) == sorted(ids[2:]), (
        ids,
        [(m.message_id, m.delivery_count) for m in again],
    )
    assert all(m.delivery_count == 2 for m in again)


async def test_one_consumer_reads_several_topics(reliable: Reliable) -> None:
    backend, group = reliable.backend, reliable.group()
    subscription = await backend.consume(["orders", "refunds"], group, None, max_in_flight=10)
    async with reading(subscription) as queue:
        await backend.publish_reliable("orders", b"o")
        await backend.publish_reliable("refunds", b"r")
        received = await take(queue, 2)
    assert sorted((m.topic, m.payload) for m in received) == [("orders", b"o"), ("refunds", b"r")]
