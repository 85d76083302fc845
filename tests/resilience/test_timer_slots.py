"""The system clock's timeout scopes (shared slot timers), driven by an event loop whose
time the test sets: expiry, cancellation, slot sharing and clean-up, without real waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from sidecar.resilience import SYSTEM_CLOCK, ExecutionTimeout, run_with_timeout
from sidecar.resilience._timer_slots import TimerSlots


class SteppedLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test says so."""

    now = 1000.0

    def time(self) -> float:
        return self.now


async def advance(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, SteppedLoop)
    loop.now += seconds
    for _ in range(5):  # due timers run, then the cancelled tasks unwind
        await asyncio.sleep(0)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = SteppedLoop()
    try:
        loop.run_until_complete(test())
    finally:
        loop.close()


def hanging(cleaned_up: list[str], name: str) -> Callable[[], Awaitable[None]]:
    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.append(name)

    return hang


def slots() -> TimerSlots:
    return TimerSlots.of(asyncio.get_running_loop())


def test_a_hanging_attempt_times_out_within_one_percent_and_is_cancelled() -> None:
    async def scenario() -> None:
        cleaned: list[str] = []
        task = asyncio.create_task(
            run_with_timeout(hanging(cleaned, "op"), 2.0, SYSTEM_CLOCK, caller_deadline=False)
        )
        await advance(0)
        await advance(1.99)
        assert not task.done()
        await advance(0.02 + 0.001)  # the slot of a 2 s timeout is 10 ms wide at most
        with pytest.raises(ExecutionTimeout) as raised:
            await task
        assert (raised.value.timeout, raised.value.caller_deadline, cleaned) == (2.0, False, ["op"])
        assert not slots()._slots

    run(scenario)


def test_fast_attempts_share_timers_that_end_with_their_slot() -> None:
    async def scenario() -> None:
        async def fast() -> int:
            await asyncio.sleep(0)
            return 1

        results = [await run_with_timeout(fast, 30.0, SYSTEM_CLOCK, caller_deadline=True)]
        results += await asyncio.gather(
            *(run_with_timeout(fast, 30.0, SYSTEM_CLOCK, caller_deadline=True) for _ in range(50))
        )
        loop = asyncio.get_running_loop()
        assert (sum(results), len(slots()._slots), len(loop._scheduled)) == (51, 1, 1)
        await advance(30.01)  # the emptied slot's timer fires once and leaves nothing
        assert (slots()._slots, loop._scheduled) == ({}, [])

    run(scenario)


def test_attempts_in_one_slot_share_its_timer_and_expire_alone() -> None:
    async def scenario() -> None:
        cleaned: list[str] = []
        done = asyncio.Event()

        async def finishes() -> str:
            await done.wait()
            return "ok"

        slow = asyncio.create_task(
            run_with_timeout(hanging(cleaned, "slow"), 1.0, SYSTEM_CLOCK, caller_deadline=True)
        )
        quick = asyncio.create_task(
            run_with_timeout(finishes, 1.0, SYSTEM_CLOCK, caller_deadline=True)
        )
        await advance(0)
        assert len(slots()._slots) == 1  # both deadlines fall in one slot: one timer
        done.set()
        assert await quick == "ok"
        await advance(1.01)
        with pytest.raises(ExecutionTimeout):
            await slow
        assert cleaned == ["slow"]

    run(scenario)


def test_an_outside_cancellation_stays_a_cancellation() -> None:
    async def scenario() -> None:
        cleaned: list[str] = []
        task = asyncio.create_task(
            run_with_timeout(hanging(cleaned, "op"), 5.0, SYSTEM_CLOCK, caller_deadline=False)
        )
        await advance(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await advance(5.1)
        assert (cleaned, slots()._slots) == (["op"], {})

    run(scenario)


def test_an_outer_timeout_expiring_first_is_the_outer_ones() -> None:
    async def scenario() -> None:
        cleaned: list[str] = []

        async def inner_scope() -> None:
            await run_with_timeout(
                hanging(cleaned, "inner"), 10.0, SYSTEM_CLOCK, caller_deadline=False
            )

        task = asyncio.create_task(
            run_with_timeout(inner_scope, 1.0, SYSTEM_CLOCK, caller_deadline=True)
        )
        await advance(0)
        await advance(1.01)
        with pytest.raises(ExecutionTimeout) as raised:
            await task
        # The inner (10 s) scope did not expire: the timeout reported is the outer one.
        assert (raised.value.timeout, raised.value.caller_deadline, cleaned) == (
            1.0,
            True,
            ["inner"],
        )
        await advance(10.1)
        assert not slots()._slots

    run(scenario)
