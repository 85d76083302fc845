"""A weighted, FIFO-fair token bucket that refills lazily from the clock.

Acquirers that cannot be served at once wait in a FIFO line. Only the head of the line
sleeps on the clock, for exactly the time the refill needs to cover its weight, then takes
its tokens and hands the turn to the next one; so a big waiting request is never overtaken
by a later small one, and tokens are taken at the moment they are granted. Nothing refills
in the background: each call computes the refill since the last one.

Because nothing is taken before the grant, a waiter cancelled in line gives nothing back and
leaks nothing: it just leaves the line, and the one behind it moves up.

Weights make the same bucket count LLM tokens: acquire the estimate before the call, then
`adjust()` by the difference once the real usage is known. A debt added by `adjust()` is
paid before the next grant, by whoever is at the head of the line.

Usage:

    bucket = TokenBucket(TokenBucketOptions(requests_per_second=10, burst_size=20), clock)
    await bucket.acquire(deadline=deadline)   # or raises RateLimitedError at once
"""

from __future__ import annotations

import asyncio
import collections
import math
from dataclasses import dataclass
from typing import Final, Protocol

from sidecar.resilience.clock import SYSTEM_CLOCK, Clock
from sidecar.resilience.deadline import Deadline
from sidecar.resilience.errors import RateLimitedError

__all__ = ["RateLimiter", "RateLimiterSnapshot", "TokenBucket", "TokenBucketOptions"]


@dataclass(frozen=True, slots=True)
class TokenBucketOptions:
    """Rate, burst and queue of a token bucket.

    Attributes:
        requests_per_second: Tokens added per second.
        burst_size: Bucket capacity: tokens available at once after a quiet period.
        max_queue: Acquirers allowed to wait at the same time; 0 means never wait.
    """

    requests_per_second: float
    burst_size: float
    max_queue: int = 1000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.requests_per_second) and self.requests_per_second > 0):
            raise ValueError("requests_per_second must be > 0")
        if not (math.isfinite(self.burst_size) and self.burst_size > 0):
            raise ValueError("burst_size must be > 0")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")


@dataclass(frozen=True, slots=True)
class RateLimiterSnapshot:
    """A read-only view of the bucket.

    Attributes:
        available: Tokens in the bucket now (0 while `adjust()` left it in debt).
        capacity: The burst size.
        rate: Tokens added per second.
        queued: Acquirers waiting for tokens.
    """

    available: float
    capacity: float
    rate: float
    queued: int


class RateLimiter(Protocol):
    """What the pipeline needs from a rate limiter: wait for tokens, or refuse at once.

    `TokenBucket` is the local one. Another implementation may keep its tokens elsewhere
    (a store shared by every process of a deployment), so nothing here may assume the
    answer is known without I/O: the pipeline awaits `acquire` for every attempt.
    """

    async def acquire(self, weight: float = 1, deadline: Deadline | None = None) -> None:
        """Take `weight` tokens, waiting for them if that ends before `deadline`.

        Raises:
            RateLimitedError: At once, without waiting, when the wait would pass `deadline`
                or the limiter's queue is full; `retry_after` is the wait needed.
            ValueError: If `weight` is negative or larger than the burst size.
        """
        ...

    def snapshot(self) -> RateLimiterSnapshot:
        """A read-only view of the limiter now (its last known state if it is remote)."""
        ...


class _Waiter:
    """One acquirer in line: its weight, and a future set when it reaches the head."""

    __slots__ = ("turn", "weight")

    def __init__(self, weight: float, turn: asyncio.Future[None]) -> None:
        self.weight = weight
        self.turn = turn


# Float slack when comparing the refill with a weight, so a head woken at its computed time
# is not sent back to sleep for a rounding error.
_EPSILON: Final = 1e-9


class TokenBucket:
    """The token bucket of one upstream target.

    Args:
        options: Rate, burst and queue settings.
        clock: Where time comes from.
    """

    __slots__ = (
        "_capacity",
        "_clock",
        "_line",
        "_line_weight",
        "_max_queue",
        "_rate",
        "_tokens",
        "_updated",
    )

    def __init__(self, options: TokenBucketOptions, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._rate = float(options.requests_per_second)
        self._capacity = float(options.burst_size)
        self._max_queue = options.max_queue
        self._tokens = self._capacity
        self._updated = clock.monotonic()
        self._line: collections.deque[_Waiter] = collections.deque()
        self._line_weight = 0.0

    async def acquire(self, weight: float = 1, deadline: Deadline | None = None) -> None:
        """Take `weight` tokens, waiting in line for them if needed.

        Raises:
            RateLimitedError: At once, without waiting, if the wait would pass `deadline` or
                the queue is full; `retry_after` is the wait that would have been needed.
            ValueError: If `weight` is negative or larger than the burst size.
        """
        if self.try_acquire(weight):
            return
        wait = (self._line_weight + weight - self._tokens) / self._rate
        if len(self._line) >= self._max_queue:
            raise RateLimitedError("rate limiter queue is full", retry_after=wait)
        self._check_deadline(wait, deadline)
        waiter = _Waiter(weight, asyncio.get_running_loop().create_future())
        self._line.append(waiter)
        self._line_weight += weight
        try:
            if self._line[0] is not waiter:
                await waiter.turn
            while (short := weight - self._refill()) > _EPSILON:
                # Only a debt from `adjust()` can make this wait longer than promised.
                self._check_deadline(short / self._rate, deadline)
                await self._clock.sleep(short / self._rate)
            self._tokens -= weight
        finally:
            self._leave(waiter)

    def try_acquire(self, weight: float = 1) -> bool:
        """Take `weight` tokens if they are there now and nobody is waiting ahead.

        Raises:
            ValueError: If `weight` is negative or larger than the burst size.
        """
        if not 0 <= weight <= self._capacity:
            raise ValueError(f"weight must be between 0 and burst_size ({self._capacity:g})")
        tokens = self._refill()
        if tokens >= weight and not self._line:
            self._tokens = tokens - weight
            return True
        return False

    def adjust(self, delta: float) -> None:
        """Settle a grant with the real usage: consume `delta` more, or refund if < 0.

        The balance may go negative (a debt the line waits out); a refund never fills the
        bucket past its capacity.
        """
        tokens = self._refill() - delta
        self._tokens = tokens if tokens < self._capacity else self._capacity

    def snapshot(self) -> RateLimiterSnapshot:
        """A read-only view of the bucket now."""
        tokens = self._refill()
        return RateLimiterSnapshot(
            available=tokens if tokens > 0 else 0.0,
            capacity=self._capacity,
            rate=self._rate,
            queued=len(self._line),
        )

    def _check_deadline(self, wait: float, deadline: Deadline | None) -> None:
        if deadline is not None:
            remaining = deadline.remaining()
            if remaining is not None and wait > remaining:
                raise RateLimitedError(retry_after=wait)

    def _leave(self, waiter: _Waiter) -> None:
        """Take `waiter` out of line (granted or not) and give the head's turn onward."""
        was_head = self._line[0] is waiter
        self._line.remove(waiter)
        self._line_weight -= waiter.weight
        if not self._line:
            self._line_weight = 0.0  # no float residue once the line is empty
        elif was_head and not self._line[0].turn.done():
            self._line[0].turn.set_result(None)

    def _refill(self) -> float:
        now = self._clock.monotonic()
        elapsed = now - self._updated
        if elapsed > 0:
            tokens = self._tokens + elapsed * self._rate
            self._tokens = tokens if tokens < self._capacity else self._capacity
            self._updated = now
        return self._tokens
