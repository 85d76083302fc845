"""A rolling window of clock buckets holding two counters, rotated lazily from the clock.

The breaker counts (calls, failures) and the retry budget counts (requests, retries) over
the last `duration` seconds. Ten buckets make old counts slide out in steps of a tenth of
the window without a timer task: each read or write first drops the buckets that have aged
out (Polly's `RollingHealthMetrics`). Running totals keep reads O(1).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sidecar.resilience.clock import Clock, SystemClock

__all__ = ["RollingWindow"]


class RollingWindow:
    """Two counters summed over the last `duration` seconds, in `buckets` slices.

    Args:
        duration: The window length in seconds.
        clock: Where time comes from.
        buckets: How many slices the window is cut into.
    """

    __slots__ = (
        "_first",
        "_first_total",
        "_monotonic",
        "_second",
        "_second_total",
        "_tick",
        "_width",
    )

    def __init__(self, duration: float, clock: Clock, buckets: int = 10) -> None:
        # The system clock read without a Python-level call: every call of the hot path adds.
        self._monotonic: Callable[[], float] = (
            time.monotonic if type(clock) is SystemClock else clock.monotonic
        )
        self._width = duration / buckets
        self._first = [0] * buckets
        self._second = [0] * buckets
        self._first_total = 0
        self._second_total = 0
        self._tick = self._now_tick()

    def add(self, first: int, second: int) -> None:
        """Count `first` and `second` into the current bucket."""
        tick = int(self._monotonic() // self._width)
        # Inline fast path: on the hot path the current bucket is almost always still current.
        index = tick % len(self._first) if tick == self._tick else self._rotate()
        self._first[index] += first
        self._second[index] += second
        self._first_total += first
        self._second_total += second

    def totals(self) -> tuple[int, int]:
        """The two counters summed over the window."""
        self._rotate()
        return self._first_total, self._second_total

    def clear(self) -> None:
        """Forget everything counted so far."""
        size = len(self._first)
        self._first[:] = [0] * size
        self._second[:] = [0] * size
        self._first_total = 0
        self._second_total = 0
        self._tick = self._now_tick()

    def _now_tick(self) -> int:
        return int(self._monotonic() // self._width)

    def _rotate(self) -> int:
        """Zero the buckets that aged out since the last call; return the current index."""
        size = len(self._first)
        tick = self._now_tick()
        if tick != self._tick:
            if not 0 < tick - self._tick < size:
                self.clear()
                return tick % size
            for stale in range(self._tick + 1, tick + 1):
                index = stale % size
                self._first_total -= self._first[index]
                self._second_total -= self._second[index]
                self._first[index] = 0
                self._second[index] = 0
            self._tick = tick
        return tick % size
