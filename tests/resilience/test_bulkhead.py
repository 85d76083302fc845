"""Bulkhead: a concurrency cap with a bounded FIFO queue that never leaks slots."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sidecar.resilience import Bulkhead, BulkheadFullError, BulkheadOptions, Deadline
from sidecar.testing import FakeClock


def bulkhead(clock: FakeClock, concurrent: int = 1, queued: int = 10) -> Bulkhead:
    options = BulkheadOptions(max_concurrent_calls=concurrent, max_queued_calls=queued)
    return Bulkhead(options, clock)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_bulkhead_limits_concurrency(clock: FakeClock) -> None:
    limit = bulkhead(clock, concurrent=2)
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def call() -> None:
        nonlocal running, peak
        async with limit.slot(None):
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1

    tasks = [asyncio.create_task(call()) for _ in range(5)]
    await settle()
    queued = limit.snapshot()
    gate.set()
    await asyncio.gather(*tasks)
    assert (peak, queued.in_flight, queued.queued, limit.snapshot().in_flight) == (2, 2, 3, 0)


async def test_queued_calls_get_slots_in_arrival_order(clock: FakeClock) -> None:
    limit = bulkhead(clock)
    await limit.acquire()
    order: list[int] = []

    async def call(number: int) -> None:
        async with limit.slot(None):
            order.append(number)

    tasks = []
    for number in range(3):
        tasks.append(asyncio.create_task(call(number)))
        await settle()
    limit.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_full_queue_rejects_at_once(clock: FakeClock) -> None:
    limit = bulkhead(clock, concurrent=1, queued=1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await settle()
    with pytest.raises(BulkheadFullError, match="too many calls queued"):
        await limit.acquire()
    limit.release()
    await waiter


async def test_deadline_passing_while_queued_rejects(clock: FakeClock) -> None:
    limit = bulkhead(clock)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire(Deadline.after(2, clock)))
    await clock.wait_for_sleepers(1)
    await clock.advance(2)
    with pytest.raises(BulkheadFullError, match="deadline passed"):
        await waiter
    assert (limit.snapshot().in_flight, limit.snapshot().queued) == (1, 0)


async def test_expired_deadline_rejects_at_once_when_busy(clock: FakeClock) -> None:
    limit = bulkhead(clock)
    await limit.acquire()
    with pytest.raises(BulkheadFullError, match="deadline has passed"):
        await limit.acquire(Deadline.after(0, clock))


async def test_cancelled_waiter_leaves_the_queue_without_taking_a_slot(clock: FakeClock) -> None:
    limit = bulkhead(clock)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire(Deadline.after(5, clock)))
    await clock.wait_for_sleepers(1)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    limit.release()
    assert (limit.snapshot().in_flight, limit.snapshot().queued, clock.sleepers) == (0, 0, 0)


async def test_waiter_cancelled_after_the_handover_passes_the_slot_on(clock: FakeClock) -> None:
    limit = bulkhead(clock)
    await limit.acquire()
    first = asyncio.create_task(limit.acquire())
    await settle()
    second = asyncio.create_task(limit.acquire())
    await settle()
    limit.release()  # hands the slot to `first` ...
    first.cancel()  # ... which is cancelled before it resumes
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await second
    limit.release()
    assert limit.snapshot().in_flight == 0


async def test_slot_is_released_when_the_body_raises(clock: FakeClock) -> None:
    limit = bulkhead(clock)
    with pytest.raises(RuntimeError):
        async with limit.slot(None):
            raise RuntimeError("boom")
    assert limit.snapshot().in_flight == 0


async def test_try_acquire_never_waits(clock: FakeClock) -> None:
    limit = bulkhead(clock)
    assert (limit.try_acquire(), limit.try_acquire()) == (True, False)
