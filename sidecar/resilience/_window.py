"""A rolling window of clock buckets holding a few counters, rotated lazily from the clock.

The breaker counts (calls, failures, slow calls) and the retry budget counts (requests,
retries) over the last `duration` seconds. Ten buckets make old counts slide out in steps of
a tenth of the window without a timer task: each read or write first drops the buckets that
have aged out (Polly's `RollingHealthMetrics`). Running totals keep reads O(1).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sidecar.resilience.clock import Clock, SystemClock

__all__ = ["RollingWindow"]


class RollingWindow:
    """`counters` counters summed over the last `duration` seconds, in `buckets` slices.

    Args:
        duration: The window length in seconds.
        clock: Where time comes from.
        counters: How many counters each bucket holds (numbered from 0).
        buckets: How many slices the window is cut into.
    """

    __slots__ = ("_buckets", "_monotonic", "_tick", "_totals", "_width")

    def __init__(self, duration: float, clock: Clock, counters: int, buckets: int = 10) -> None:
        # The system clock read without a Python-level call: every call of the hot path adds.
        self._monotonic: Callable[[], float] = (
            time.monotonic if type(clock) is SystemClock else clock.monotonic
        )
        self._width = duration / buckets
        self._buckets = [[0] * counters for _ in range(buckets)]
        self._totals = [0] * counters
        self._tick = self._now_tick()

    def add(self, counter: int, amount: int = 1) -> None:
        """Count `amount` into `counter` of the current bucket."""
        tick = int(self._monotonic() // self._width)
        # Inline fast path: on the hot path the current bucket is almost always still current.
        index = tick % len(self._buckets) if tick == self._tick else self._rotate()
        self._buckets[index][counter] += amount
        self._totals[counter] += amount

    def totals(self) -> tuple[int, ...]:
        """Every counter summed over the window, in counter order."""
        self._rotate()
        return tuple(self._totals)

    def clear(self) -> None:
        """Forget everything counted so far."""
        for bucket in self._buckets:
            bucket[:] = [0] * len(bucket)
        self._totals[:] = [0] * len(self._totals)
        self._tick = self._now_tick()

    def _now_tick(self) -> int:
        return int(self._monotonic() // self._width)

    def _rotate(self) -> int:
        """Zero the buckets that aged out since the last call; return the current index."""
        size = len(self._buckets)
        tick = self._now_tick()
        if tick != self._tick:
            if not 0 < tick - self._tick < size:
                self.clear()
                return tick % size
            totals = self._totals
            for stale in range(self._tick + 1, tick + 1):
                bucket = self._buckets[stale % size]
                for counter, count in enumerate(bucket):
                    totals[counter] -= count
                    bucket[counter] = 0
            self._tick = tick
        return tick % size
