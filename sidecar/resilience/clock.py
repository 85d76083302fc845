"""One source of time for every policy, so tests can move time instead of waiting for it.

Every policy reads time and sleeps through a `Clock`; nothing in the resilience core calls
`time` or `asyncio.sleep` directly. Production code uses `SYSTEM_CLOCK`; tests use the one
`FakeClock`, in `sidecar.testing`, and drive it with `advance()`, so no test ever sleeps for
real (Polly's `FakeTimeProvider`, resilience4j's `Clock` with `monotonicTime()` and
`wallTime()`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


class Clock(Protocol):
    """Where policies get time from.

    `monotonic()` measures durations and deadlines; `wall()` is for timestamps only (events,
    logs), never for arithmetic, because the wall clock can jump.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for `seconds`."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for timestamps only."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `asyncio.sleep` and `time.time`."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Seconds on the process's monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running event loop."""
        await asyncio.sleep(seconds)

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()


SYSTEM_CLOCK: Final[SystemClock] = SystemClock()
"""The shared real clock; it holds no state, so one instance serves everybody."""
