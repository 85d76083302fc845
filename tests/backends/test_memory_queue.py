"""What only the in-memory queue has (the shared semantics are the conformance suite's):
its bounds, retention, the deduplication window, dead-letter links, and closing."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.backends.queue import MemoryQueue, OutgoingMessage, Sent, link_dead_letters
from sidecar.errors import InvalidArgument, ResourceExhausted, Unavailable
from sidecar.testing import FakeClock


async def test_a_full_queue_refuses_a_send_until_a_message_leaves(clock: FakeClock) -> None:
    queue = MemoryQueue("q", clock=clock, max_messages=2)
    await queue.send(OutgoingMessage(b"1"))
    await queue.send(OutgoingMessage(b"2"))
    with pytest.raises(ResourceExhausted) as raised:
        await queue.send(OutgoingMessage(b"3"))
    assert raised.value.metadata["limit"] == "max_messages"
    [first] = await queue.receive(1, wait=0, visibility_timeout=None)
    await queue.ack([first.receipt_handle])
    await queue.send(OutgoingMessage(b"3"))
    assert len(queue) == 2


async def test_a_message_past_its_retention_is_deleted(clock: FakeClock) -> None:
    queue = MemoryQueue("q", clock=clock, message_retention=60.0, max_messages=1)
    await queue.send(OutgoingMessage(b"old"))
    await clock.advance(60.0)
    await queue.send(OutgoingMessage(b"new"))  # the expired one made room
    assert [m.body for m in await queue.receive(10, wait=0, visibility_timeout=None)] == [b"new"]


async def test_a_deduplication_id_is_forgotten_after_five_minutes(clock: FakeClock) -> None:
    queue = MemoryQueue("q", clock=clock, fifo=True)
    message = OutgoingMessage(b"x", group_id="g", deduplication_id="d")
    first = await queue.send(message)
    await clock.advance(299.0)
    assert await queue.send(message) == first  # the first one's id, nothing enqueued
    await clock.advance(1.0)
    assert (await queue.send(message)).message_id != first.message_id
    assert len(queue) == 2


async def test_fifo_fields_are_checked_per_entry_of_a_batch(clock: FakeClock) -> None:
    queue = MemoryQueue("q", clock=clock, fifo=True)
    outcomes = await queue.send_batch(
        [OutgoingMessage(b"a", group_id="g", deduplication_id="1"), OutgoingMessage(b"b")]
    )
    assert isinstance(outcomes[0], Sent)
    assert isinstance(outcomes[1], InvalidArgument)


async def test_dead_letter_links_refuse_unknown_self_and_mismatched_queues(
    clock: FakeClock,
) -> None:
    source = MemoryQueue("jobs", clock=clock, max_receive_count=1, dead_letter="dlq")
    with pytest.raises(ValueError, match="not a queue service"):
        link_dead_letters({"jobs": source, "dlq": object()})
    with pytest.raises(ValueError, match="own dead-letter"):
        link_dead_letters({"jobs": MemoryQueue("jobs", max_receive_count=1, dead_letter="jobs")})
    with pytest.raises(ValueError, match="FIFO too"):
        fifo = MemoryQueue("jobs", fifo=True, max_receive_count=1, dead_letter="dlq")
        link_dead_letters({"jobs": fifo, "dlq": MemoryQueue("dlq")})


async def test_a_fifo_dead_letter_keeps_its_group(clock: FakeClock) -> None:
    dlq = MemoryQueue("dlq", clock=clock, fifo=True)
    queue = MemoryQueue("q", clock=clock, fifo=True, max_receive_count=1, dead_letter="dlq")
    link_dead_letters({"q": queue, "dlq": dlq})
    await queue.send(OutgoingMessage(b"a", group_id="g", deduplication_id="1"))
    await queue.send(OutgoingMessage(b"b", group_id="g", deduplication_id="2"))
    [a] = await queue.receive(1, wait=0, visibility_timeout=1.0)
    await clock.advance(1.0)
    [b] = await queue.receive(1, wait=0, visibility_timeout=1.0)  # a moved on, b is next
    assert (a.body, b.body) == (b"a", b"b")
    [dead] = await dlq.receive(10, wait=0, visibility_timeout=None)
    assert (dead.body, dead.group_id) == (b"a", "g")


async def test_a_long_poll_wakes_when_a_message_in_flight_times_out(clock: FakeClock) -> None:
    queue = MemoryQueue("q", clock=clock)
    await queue.send(OutgoingMessage(b"x"))
    await queue.receive(1, wait=0, visibility_timeout=3.0)
    poll = asyncio.create_task(queue.receive(1, wait=20.0, visibility_timeout=None))
    await clock.wait_for_sleepers(1)
    await clock.advance(3.0)
    [again] = await poll
    assert again.receive_count == 2


async def test_closing_ends_a_long_poll_and_refuses_later_calls(clock: FakeClock) -> None:
    queue = MemoryQueue("q", clock=clock)
    poll = asyncio.create_task(queue.receive(1, wait=20.0, visibility_timeout=None))
    await clock.wait_for_sleepers(1)
    await queue.close()
    with pytest.raises(Unavailable):
        await poll
    with pytest.raises(Unavailable):
        await queue.send(OutgoingMessage(b"x"))
