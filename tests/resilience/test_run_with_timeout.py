"""run_with_timeout: follows the injected clock and cancels the loser."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sidecar.resilience import SYSTEM_CLOCK, ExecutionTimeout, run_with_timeout
from sidecar.testing import FakeClock


async def test_result_arrives_within_the_timeout(clock: FakeClock) -> None:
    async def fast() -> str:
        await clock.sleep(1)
        return "done"

    task = asyncio.create_task(run_with_timeout(fast, 2, clock, caller_deadline=False))
    await clock.advance(1)
    assert (await task, clock.sleepers) == ("done", 0)


async def test_timeout_follows_fake_time_and_cancels_the_operation(clock: FakeClock) -> None:
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    task = asyncio.create_task(run_with_timeout(hang, 2, clock, caller_deadline=False))
    await clock.wait_for_sleepers(1)
    await clock.advance(2)
    with pytest.raises(ExecutionTimeout) as raised:
        await task
    assert (raised.value.caller_deadline, raised.value.timeout, cancelled.is_set()) == (
        False,
        2,
        True,
    )


async def test_timeout_carries_the_caller_deadline_flag(clock: FakeClock) -> None:
    task = asyncio.create_task(
        run_with_timeout(asyncio.Event().wait, 1, clock, caller_deadline=True)
    )
    await clock.wait_for_sleepers(1)
    await clock.advance(1)
    with pytest.raises(ExecutionTimeout) as raised:
        await task
    assert raised.value.caller_deadline


async def test_no_timeout_just_runs_the_operation(clock: FakeClock) -> None:
    async def value() -> int:
        return 7

    assert await run_with_timeout(value, None, clock, caller_deadline=False) == 7


async def test_no_time_left_fails_without_starting_the_operation(clock: FakeClock) -> None:
    started = False

    async def operation() -> None:
        nonlocal started
        started = True

    with pytest.raises(ExecutionTimeout):
        await run_with_timeout(operation, 0, clock, caller_deadline=True)
    assert not started


async def test_operation_errors_pass_through(clock: FakeClock) -> None:
    async def broken() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await run_with_timeout(broken, 5, clock, caller_deadline=False)


async def test_cancelling_the_caller_cancels_the_operation(clock: FakeClock) -> None:
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    task = asyncio.create_task(run_with_timeout(hang, 5, clock, caller_deadline=False))
    await clock.wait_for_sleepers(1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (cancelled.is_set(), clock.sleepers) == (True, 0)


async def test_system_clock_path_returns_the_result() -> None:
    async def value() -> int:
        return 7

    assert await run_with_timeout(value, 5, SYSTEM_CLOCK, caller_deadline=False) == 7


async def test_system_clock_path_lets_the_operations_own_timeout_error_through() -> None:
    async def upstream_timeout() -> None:
        raise TimeoutError("upstream")

    with pytest.raises(TimeoutError, match="upstream"):
        await run_with_timeout(upstream_timeout, 5, SYSTEM_CLOCK, caller_deadline=False)
