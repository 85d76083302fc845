"""A bulkhead: cap the calls in flight to one target, with a bounded FIFO queue.

One slow upstream must not take every task and connection of the sidecar with it. At most
`max_concurrent_calls` run at once; up to `max_queued_calls` more wait in arrival order for a
slot, each no longer than its deadline. A released slot is handed straight to the oldest
waiter, so a newcomer cannot barge past the queue.

Usage:

    bulkhead = Bulkhead(BulkheadOptions(max_concurrent_calls=10), clock)
    async with bulkhead.slot(deadline):
        await call()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sidecar.resilience.clock import SYSTEM_CLOCK, Clock
from sidecar.resilience.deadline import Deadline
from sidecar.resilience.errors import BulkheadFullError

__all__ = ["Bulkhead", "BulkheadOptions", "BulkheadSnapshot"]


@dataclass(frozen=True, slots=True)
class BulkheadOptions:
    """Concurrency and queue limits.

    Attributes:
        max_concurrent_calls: Calls allowed in flight at once.
        max_queued_calls: Calls allowed to wait for a slot; 0 means reject at once.
    """

    max_concurrent_calls: int = 100
    max_queued_calls: int = 100

    def __post_init__(self) -> None:
        if self.max_concurrent_calls < 1:
            raise ValueError("max_concurrent_calls must be >= 1")
        if self.max_queued_calls < 0:
            raise ValueError("max_queued_calls must be >= 0")


@dataclass(frozen=True, slots=True)
class BulkheadSnapshot:
    """A read-only view of the bulkhead.

    Attributes:
        in_flight: Slots held now.
        queued: Calls waiting for a slot.
        max_concurrent_calls: The configured limit.
    """

    in_flight: int
    queued: int
    max_concurrent_calls: int


class Bulkhead:
    """The bulkhead of one upstream target.

    `acquire()`/`release()` are the cheap form the pipeline uses; `slot()` wraps them in an
    async context manager.

    Args:
        options: Concurrency and queue limits.
        clock: Where time comes from (for deadlines while queued).
    """

    __slots__ = ("_clock", "_in_flight", "_max_concurrent", "_max_queued", "_waiters")

    def __init__(self, options: BulkheadOptions, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._max_concurrent = options.max_concurrent_calls
        self._max_queued = options.max_queued_calls
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued; never waits."""
        if self._in_flight < self._max_concurrent and not self._waiters:
            self._in_flight += 1
            return True
        return False

    async def acquire(self, deadline: Deadline | None = None) -> None:
        """Take a slot, queueing in FIFO order for one if all are busy.

        Raises:
            BulkheadFullError: At once if the queue is full or the deadline has passed, or
                when the deadline passes while queued.
        """
        if self.try_acquire():
            return
        if len(self._waiters) >= self._max_queued:
            raise BulkheadFullError("bulkhead is full: too many calls queued")
        remaining = None if deadline is None else deadline.remaining()
        if remaining is not None and remaining <= 0:
            raise BulkheadFullError("bulkhead is full and the deadline has passed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = None if remaining is None else loop.create_task(self._expire(waiter, remaining))
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # The slot was handed over, but we were cancelled before using it.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def release(self) -> None:
        """Give a slot back, handing it to the oldest live waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_flight -= 1

    @contextlib.asynccontextmanager
    async def slot(self, deadline: Deadline | None = None) -> AsyncIterator[None]:
        """Hold a slot for the body of an `async with` block.

        Raises:
            BulkheadFullError: As `acquire()`.
        """
        await self.acquire(deadline)
        try:
            yield
        finally:
            self.release()

    def snapshot(self) -> BulkheadSnapshot:
        """A read-only view of the bulkhead now."""
        queued = sum(1 for waiter in self._waiters if not waiter.done())
        return BulkheadSnapshot(
            in_flight=self._in_flight, queued=queued, max_concurrent_calls=self._max_concurrent
        )

    async def _expire(self, waiter: asyncio.Future[None], seconds: float) -> None:
        await self._clock.sleep(seconds)
        if not waiter.done():
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            waiter.set_exception(BulkheadFullError("bulkhead is full: deadline passed in queue"))
