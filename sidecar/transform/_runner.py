"""Running transforms off the event loop, on a small pool of worker threads, each run within
its time limit.

Parsing and validating are CPU work: on the loop, one large document would stall every
other call, health checks and shutdown. The workers are few (WORKERS, for the whole
process): a flood of large inputs waits for a worker rather than starting threads without
end, and a run that cannot start within its time limit is refused.

A worker thread cannot be stopped from outside. When a run's time is up the caller is
answered at once (RESOURCE_EXHAUSTED), and the worker stops at its next look at the clock
(`Budget.check`); until it has, its slot stays taken, so slow inputs cannot pile up more
work than WORKERS threads.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from sidecar.errors import ResourceExhausted, SidecarError

from ._payload import Budget

__all__ = ["WORKERS", "Runner"]

T = TypeVar("T")

WORKERS: Final = 4
"""Transforms that run at once, in the whole process."""


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """One pool for the process: the bound is on CPU work, not per server."""
    return ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="transform")


class Runner:
    """Runs work on the workers; at most WORKERS runs of one runner at a time."""

    def __init__(self) -> None:
        self._slots: asyncio.Semaphore | None = None

    async def run(
        self,
        work: Callable[[Budget], T],
        *,
        time_limit: float,
        max_depth: int,
        metadata: Mapping[str, str],
    ) -> T:
        """`work(budget)` on a worker; RESOURCE_EXHAUSTED (TRANSFORM_LIMIT_EXCEEDED) when
        it has not finished `time_limit` seconds from now."""
        budget = Budget(time.monotonic() + time_limit, max_depth, metadata)
        if self._slots is None:
            self._slots = asyncio.Semaphore(WORKERS)
        slots = self._slots
        try:
            async with asyncio.timeout(time_limit):
                await slots.acquire()
        except TimeoutError:
            raise ResourceExhausted(
                "no transform worker became free within the time limit",
                reason="TRANSFORM_LIMIT_EXCEEDED",
                metadata={**metadata, "limit": "timeout"},
            ) from None
        future = asyncio.get_running_loop().run_in_executor(_pool(), _isolated, work, budget)

        # The slot is the thread's: freed when the work ends, not when the caller stops
        # waiting; the outcome is taken so an abandoned run logs nothing.
        def settle(done: asyncio.Future[T]) -> None:
            slots.release()
            if not done.cancelled():
                done.exception()

        future.add_done_callback(settle)
        try:
            async with asyncio.timeout_at(_loop_time(budget.deadline)):
                return await asyncio.shield(future)
        except TimeoutError:
            raise budget.expired() from None
        finally:
            del future  # else this frame, the future and its exception make a cycle


def _isolated(work: Callable[[Budget], T], budget: Budget) -> T:
    """`work(budget)`, raising its errors without their traceback: the worker's frames
    hold the input (megabytes), and would live on with the error until the cycle collector
    ran."""
    try:
        return work(budget)
    except SidecarError as exc:
        exc.__traceback__ = None
        raise exc from None


def _loop_time(deadline: float) -> float:
    """A monotonic-clock deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
