"""FakeClock: time moves only through advance(), and sleepers wake in order."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.resilience import SYSTEM_CLOCK, SystemClock
from sidecar.testing import FakeClock


async def test_sleep_blocks_until_time_is_advanced_past_wake_time(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(5))
    await clock.wait_for_sleepers(1)
    await clock.advance(4.9)
    assert not task.done()
    await clock.advance(0.1)
    assert task.done()


async def test_advance_wakes_sleepers_in_wake_time_order_at_their_wake_time(
    clock: FakeClock,
) -> None:
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in [("c", 3), ("a", 1), ("b", 2)]]
    await clock.wait_for_sleepers(3)
    await clock.advance(10)
    await asyncio.gather(*tasks)
    assert woke == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


async def test_sleeper_that_sleeps_again_inside_one_advance_is_woken_too(clock: FakeClock) -> None:
    async def twice() -> float:
        await clock.sleep(1)
        await clock.sleep(1)
        return clock.monotonic()

    task = asyncio.create_task(twice())
    await clock.wait_for_sleepers(1)
    await clock.advance(5)
    assert await task == 2.0


async def test_cancelling_a_fake_sleep_removes_the_sleeper(clock: FakeClock) -> None:
    task = asyncio.create_task(clock.sleep(5))
    await clock.wait_for_sleepers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0


async def test_non_positive_sleep_returns_without_time_passing(clock: FakeClock) -> None:
    await clock.sleep(0)
    assert clock.monotonic() == 0.0


async def test_advance_moves_monotonic_and_wall_time_together() -> None:
    clock = FakeClock(start=100.0, wall_start=5_000.0)
    await clock.advance(2.5)
    assert (clock.monotonic(), clock.wall()) == (102.5, 5_002.5)


async def test_advance_rejects_negative_time(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        await clock.advance(-1)


async def test_wait_for_sleepers_fails_instead_of_hanging(clock: FakeClock) -> None:
    with pytest.raises(AssertionError, match="expected 1 sleepers"):
        await clock.wait_for_sleepers(1, rounds=3)


async def test_system_clock_reads_real_time_without_sleeping() -> None:
    assert isinstance(SYSTEM_CLOCK, SystemClock)
    assert SYSTEM_CLOCK.monotonic() > 0
    assert SYSTEM_CLOCK.wall() > 1_600_000_000
    await SYSTEM_CLOCK.sleep(0)
