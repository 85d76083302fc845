"""TokenBucket: lazy refill, FIFO waiting, deadlines, cancellation and weights."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sidecar.resilience import (
    Deadline,
    RateLimitedError,
    TokenBucket,
    TokenBucketOptions,
)
from sidecar.testing import FakeClock


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def bucket(clock: FakeClock, rate: float = 1, burst: float = 10, queue: int = 1000) -> TokenBucket:
    options = TokenBucketOptions(requests_per_second=rate, burst_size=burst, max_queue=queue)
    return TokenBucket(options, clock)


def drained(clock: FakeClock, rate: float = 1, burst: float = 10) -> TokenBucket:
    limiter = bucket(clock, rate, burst)
    assert limiter.try_acquire(burst)
    return limiter


async def test_bucket_grants_the_burst_then_nothing_until_refill(clock: FakeClock) -> None:
    limiter = bucket(clock, rate=2, burst=3)
    granted = [limiter.try_acquire() for _ in range(4)]
    await clock.advance(0.5)
    assert (granted, limiter.try_acquire()) == ([True, True, True, False], True)


async def test_refill_never_exceeds_the_burst(clock: FakeClock) -> None:
    limiter = drained(clock, rate=1, burst=5)
    await clock.advance(100)
    assert limiter.snapshot().available == 5.0


async def test_acquire_waits_for_the_refill(clock: FakeClock) -> None:
    limiter = drained(clock, rate=2)
    task = asyncio.create_task(limiter.acquire())
    await clock.wait_for_sleepers(1)
    await clock.advance(0.4)
    not_yet = task.done()
    await clock.advance(0.1)
    assert (not_yet, task.done()) == (False, True)


async def test_big_waiting_request_is_not_overtaken_by_a_later_small_one(
    clock: FakeClock,
) -> None:
    limiter = drained(clock)
    done: list[str] = []

    async def take(name: str, weight: float) -> None:
        await limiter.acquire(weight)
        done.append(name)

    big = asyncio.create_task(take("big", 5))
    await clock.wait_for_sleepers(1)
    small = asyncio.create_task(take("small", 1))
    await asyncio.sleep(0)
    assert limiter.snapshot().queued == 2
    await clock.advance(5)
    after_five = list(done)
    await clock.advance(1)
    await asyncio.gather(big, small)
    assert (after_five, done) == (["big"], ["big", "small"])


async def test_try_acquire_does_not_jump_the_queue(clock: FakeClock) -> None:
    limiter = drained(clock)
    task = asyncio.create_task(limiter.acquire(3))
    await clock.wait_for_sleepers(1)
    await clock.advance(2)
    assert not limiter.try_acquire(1)
    await cancel(task)


async def test_deadline_too_short_rejects_at_once_with_retry_after(clock: FakeClock) -> None:
    limiter = drained(clock, rate=2)
    with pytest.raises(RateLimitedError) as raised:
        await limiter.acquire(4, deadline=Deadline.after(1, clock))
    assert (raised.value.retry_after, clock.sleepers, clock.monotonic()) == (2.0, 0, 0.0)


async def test_rejected_request_reserves_nothing(clock: FakeClock) -> None:
    limiter = drained(clock, rate=1)
    with pytest.raises(RateLimitedError):
        await limiter.acquire(5, deadline=Deadline.after(1, clock))
    await clock.advance(1)
    assert limiter.try_acquire(1)


async def test_full_queue_rejects_at_once(clock: FakeClock) -> None:
    limiter = bucket(clock, burst=1, queue=1)
    limiter.try_acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await clock.wait_for_sleepers(1)
    with pytest.raises(RateLimitedError, match="queue is full") as raised:
        await limiter.acquire()
    assert raised.value.retry_after == 2.0
    await cancel(waiting)


async def test_cancelled_waiter_leaks_no_tokens(clock: FakeClock) -> None:
    limiter = drained(clock)
    task = asyncio.create_task(limiter.acquire(8))
    await clock.wait_for_sleepers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await clock.advance(1)
    assert (limiter.try_acquire(1), limiter.snapshot().queued) == (True, 0)


async def test_cancelled_head_hands_its_turn_to_the_next_waiter(clock: FakeClock) -> None:
    limiter = drained(clock)
    big = asyncio.create_task(limiter.acquire(8))
    await clock.wait_for_sleepers(1)
    small = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0)
    await cancel(big)
    await clock.advance(1)  # the small one needs only 1 s, not the 9 s behind the big one
    assert small.done()


async def test_debt_from_adjust_delays_the_waiting_head(clock: FakeClock) -> None:
    limiter = drained(clock)
    task = asyncio.create_task(limiter.acquire(1))
    await clock.wait_for_sleepers(1)
    limiter.adjust(2)  # a finished call used 2 tokens more than it had reserved
    await clock.advance(1)
    not_yet = task.done()
    await clock.advance(2)
    assert (not_yet, task.done()) == (False, True)


async def test_waiter_pushed_past_its_deadline_by_a_debt_is_rejected(clock: FakeClock) -> None:
    limiter = drained(clock)
    task = asyncio.create_task(limiter.acquire(1, deadline=Deadline.after(2, clock)))
    await clock.wait_for_sleepers(1)
    limiter.adjust(5)
    await clock.advance(1)
    with pytest.raises(RateLimitedError):
        await task
    assert (limiter.snapshot().queued, clock.monotonic()) == (0, 1.0)


async def test_weighted_acquire_takes_that_many_tokens(clock: FakeClock) -> None:
    limiter = bucket(clock, burst=10)
    await limiter.acquire(7)
    assert limiter.snapshot().available == 3.0


async def test_weight_above_the_burst_is_a_programming_error(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="weight must be between 0 and burst_size"):
        await bucket(clock, burst=10).acquire(11)


async def test_adjust_consumes_more_after_the_fact(clock: FakeClock) -> None:
    limiter = bucket(clock, rate=1, burst=10)
    await limiter.acquire(4)
    limiter.adjust(8)  # the call really used 12 tokens: the bucket is 2 in debt
    assert (limiter.snapshot().available, limiter.try_acquire(1)) == (0.0, False)


async def test_adjust_refunds_unused_tokens_up_to_capacity(clock: FakeClock) -> None:
    limiter = bucket(clock, rate=1, burst=10)
    await limiter.acquire(4)
    limiter.adjust(-6)
    assert limiter.snapshot().available == 10.0


async def test_snapshot_reports_bucket_state(clock: FakeClock) -> None:
    limiter = drained(clock, rate=2, burst=4)
    task = asyncio.create_task(limiter.acquire(1))
    await clock.wait_for_sleepers(1)
    snapshot = limiter.snapshot()
    await cancel(task)
    assert (snapshot.available, snapshot.capacity, snapshot.rate, snapshot.queued) == (
        0.0,
        4.0,
        2.0,
        1,
    )
