"""`FakeClock`: the one fake clock of the project, for every test that needs time to pass.

Usage:

    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(5))
    await clock.wait_for_sleepers(1)
    await clock.advance(5)      # the sleeper wakes; `task` is now done
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Final

__all__ = ["FakeClock"]

# How many loop iterations `FakeClock.advance` yields after waking a sleeper. A woken task
# often needs a few hops (its sleep task ends, an `asyncio.wait` notices, a loser is
# cancelled and awaited) before it parks on its next sleep; a fixed, generous number keeps
# the fake time deterministic without peeking at the loop's internals.
_SETTLE_ROUNDS: Final = 32


class FakeClock:
    """A clock that moves only when a test says so.

    `sleep()` parks the caller until `advance()` moves the fake time past its wake time.
    Sleepers wake in wake-time order (ties in the order they slept), and the clock reads
    exactly each sleeper's wake time while it runs, so code under test sees consistent
    timestamps. Cancelling a sleeping task removes its sleeper.

    Args:
        start: The initial monotonic time.
        wall_start: The wall time that corresponds to `start`.
    """

    __slots__ = ("_heap", "_now", "_seq", "_start", "_wall_start")

    def __init__(self, start: float = 0.0, *, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._start = start
        self._wall_start = wall_start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        """The current fake time."""
        return self._now

    def wall(self) -> float:
        """The fake wall time: `wall_start` plus the fake time elapsed since `start`."""
        return self._wall_start + (self._now - self._start)

    @property
    def sleepers(self) -> int:
        """How many tasks are parked in `sleep()` right now."""
        return sum(1 for _, _, future in self._heap if not future.done())

    async def sleep(self, seconds: float) -> None:
        """Park until the fake time reaches now + `seconds`; a non-positive sleep only yields."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._now + seconds, next(self._seq), future)
        heapq.heappush(self._heap, entry)
        try:
            await future
        finally:
            if not future.done() or future.cancelled():
                self._remove(entry)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper due on the way, in order.

        After each wake-up the loop gets several turns, so woken tasks run (and may sleep
        again; a new sleeper that falls due inside this advance is woken too).

        Raises:
            ValueError: If `seconds` is negative; monotonic time never goes back.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        target = self._now + seconds
        await self._settle()
        while self._heap and self._heap[0][0] <= target:
            wake, _, future = heapq.heappop(self._heap)
            if future.done():
                continue
            self._now = max(self._now, wake)
            future.set_result(None)
            await self._settle()
        self._now = target
        await self._settle()

    async def wait_for_sleepers(self, count: int = 1, *, rounds: int = 1000) -> None:
        """Yield to the loop until at least `count` tasks are parked in `sleep()`.

        Raises:
            AssertionError: If they are not parked after `rounds` loop turns; a test that
                waits for a sleeper that never comes should fail, not hang.
        """
        for _ in range(rounds):
            if self.sleepers >= count:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"expected {count} sleepers, found {self.sleepers}")

    def _remove(self, entry: tuple[float, int, asyncio.Future[None]]) -> None:
        try:
            self._heap.remove(entry)
        except ValueError:
            return
        heapq.heapify(self._heap)

    @staticmethod
    async def _settle() -> None:
        for _ in range(_SETTLE_ROUNDS):
            await asyncio.sleep(0)
