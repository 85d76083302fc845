"""The load of the fault-injection suite (`tests/faults/`): a bounded load runs while a fault
is applied through the TCP proxy (`tests/faultproxy.py`) and after it is lifted; each
scenario asserts on what the callers saw and records its figures in `FIGURES`, printed at
the end of the run.

`Load` runs `callers` loops of one call and keeps every call's start, end and status, so a
scenario can ask what happened in any window of time (during the fault, after it).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from support import error_info

FIGURES: list[str] = []
"""One line per scenario, printed in the terminal summary."""


@dataclass(frozen=True, slots=True)
class Outcome:
    started: float
    ended: float
    code: grpc.StatusCode
    reason: str = ""
    """The ErrorInfo reason of a failed call."""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    """Concurrent callers repeating one call until stopped, every outcome recorded."""

    call: Callable[[int], Awaitable[None]]
    """One call; its argument is a sequence number, unique per call."""
    callers: int = 8
    pause: float = 0.005
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sequence: int = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(self.callers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _caller(self) -> None:
        while not self._stop.is_set():
            self._sequence += 1
            started = time.monotonic()
            reason = ""
            try:
                await self.call(self._sequence)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code is not grpc.StatusCode.DEADLINE_EXCEEDED:  # the client's own: no detail
                    reason = error_info(error).reason
            self.outcomes.append(Outcome(started, time.monotonic(), code, reason))
            await asyncio.sleep(self.pause)

    def between(self, start: float, end: float) -> list[Outcome]:
        """The calls that started in [start, end)."""
        return [o for o in self.outcomes if start <= o.started < end]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
