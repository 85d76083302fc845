"""The slow-call rule (resilience4j's slowCallDurationThreshold / slowCallRateThreshold):
attempts that took at least `slow_call_duration`, including those the caller cut off by its
deadline or by cancelling, open the breaker once they make up `slow_call_ratio` of the
window; a cut-off one is also a failure, like a timeout. An attempt the caller cut off
quickly is the caller's choice and never counts."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.resilience import (
    CircuitBreaker,
    CircuitBreakerOptions,
    CircuitOpenError,
    CircuitState,
    Classification,
    Deadline,
    ExecutionTimeout,
    Pipeline,
    PipelineOptions,
    TimeoutOptions,
)
from sidecar.testing import FakeClock

# Only the slow-call rule is on: failures alone never trip these breakers.
SLOW = CircuitBreakerOptions(
    failure_threshold=0,
    failure_ratio=0,
    minimum_throughput=5,
    sampling_duration=60,
    reset_timeout=10,
    slow_call_duration=1.0,
    slow_call_ratio=1.0,
)


async def cut_after(breaker: CircuitBreaker, clock: FakeClock, seconds: float) -> None:
    """One admitted attempt that the caller gives up on after `seconds`."""
    breaker.acquire()
    started = breaker.attempt_started()
    await clock.advance(seconds)
    breaker.record_cancelled(started)


async def succeed_after(breaker: CircuitBreaker, clock: FakeClock, seconds: float) -> None:
    breaker.acquire()
    started = breaker.attempt_started()
    await clock.advance(seconds)
    breaker.record_success(started)


async def test_calls_the_caller_cut_after_the_slow_call_duration_open_the_breaker(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(SLOW, clock)
    for _ in range(4):
        await cut_after(breaker, clock, 1.5)
    before = breaker.state
    await cut_after(breaker, clock, 1.5)
    assert (before, breaker.state) == (CircuitState.CLOSED, CircuitState.OPEN)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()


async def test_calls_cut_after_the_slow_call_duration_are_consecutive_failures(
    clock: FakeClock,
) -> None:
    options = CircuitBreakerOptions(failure_threshold=3, slow_call_duration=1.0)
    breaker = CircuitBreaker(options, clock)
    for _ in range(10):  # fast successes in the window keep any ratio rule quiet
        await succeed_after(breaker, clock, 0.01)
    for _ in range(2):
        await cut_after(breaker, clock, 1.0)
    before = breaker.snapshot()
    await cut_after(breaker, clock, 1.0)
    assert (before.state, before.consecutive_failures) == (CircuitState.CLOSED, 2)
    assert breaker.state is CircuitState.OPEN


async def test_calls_the_caller_cut_quickly_are_not_counted(clock: FakeClock) -> None:
    breaker = CircuitBreaker(SLOW, clock)
    for _ in range(50):
        await cut_after(breaker, clock, 0.5)
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.total_in_window) == (CircuitState.CLOSED, 0)


async def test_slow_successes_count_but_one_fast_call_keeps_a_full_ratio_from_tripping(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(SLOW, clock)
    await succeed_after(breaker, clock, 0.1)
    for _ in range(10):
        await succeed_after(breaker, clock, 2.0)
    snapshot = breaker.snapshot()
    assert snapshot.state is CircuitState.CLOSED
    assert snapshot.slow_call_ratio == pytest.approx(10 / 11)


async def test_a_lower_slow_call_ratio_trips_on_a_share_of_slow_calls(clock: FakeClock) -> None:
    options = CircuitBreakerOptions(
        failure_threshold=0,
        failure_ratio=0,
        minimum_throughput=4,
        sampling_duration=60,
        slow_call_duration=1.0,
        slow_call_ratio=0.5,
    )
    breaker = CircuitBreaker(options, clock)
    await succeed_after(breaker, clock, 0.1)
    await succeed_after(breaker, clock, 0.1)
    await succeed_after(breaker, clock, 3.0)
    before = breaker.state
    await succeed_after(breaker, clock, 3.0)
    assert (before, breaker.state) == (CircuitState.CLOSED, CircuitState.OPEN)


async def test_a_half_open_probe_cut_slowly_reopens_the_breaker(clock: FakeClock) -> None:
    breaker = CircuitBreaker(SLOW, clock)
    for _ in range(5):
        await cut_after(breaker, clock, 2.0)
    await clock.advance(10)
    await cut_after(breaker, clock, 2.0)
    assert breaker.state is CircuitState.OPEN


async def test_a_half_open_probe_cut_quickly_frees_its_slot(clock: FakeClock) -> None:
    breaker = CircuitBreaker(SLOW, clock)
    for _ in range(5):
        await cut_after(breaker, clock, 2.0)
    await clock.advance(10)
    await cut_after(breaker, clock, 0.1)
    assert breaker.state is CircuitState.HALF_OPEN
    await succeed_after(breaker, clock, 0.1)
    assert breaker.state is CircuitState.CLOSED


async def test_without_a_slow_call_duration_slow_calls_are_not_counted(
    clock: FakeClock,
) -> None:
    options = CircuitBreakerOptions(failure_threshold=0, minimum_throughput=1)
    breaker = CircuitBreaker(options, clock)
    assert breaker.attempt_started() is None
    for _ in range(10):
        await cut_after(breaker, clock, 100.0)
    assert breaker.snapshot().total_in_window == 0


@pytest.mark.parametrize(
    "settings",
    [{"slow_call_duration": 0.0}, {"slow_call_ratio": 1.5}, {"slow_call_ratio": -0.1}],
)
def test_bad_slow_call_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreakerOptions(**settings)  # type: ignore[arg-type]


# -- through the pipeline ---------------------------------------------------------------------


def never_failure(exc: BaseException) -> Classification:
    return Classification(is_failure=False)


async def hang() -> str:
    await asyncio.Event().wait()
    return "never"


def black_hole_pipeline(clock: FakeClock) -> Pipeline:
    """A 30 s attempt timeout: far longer than any caller here waits."""
    return Pipeline(
        "black-hole",
        PipelineOptions(circuit_breaker=SLOW, timeout=TimeoutOptions(attempt_timeout=30.0)),
        clock=clock,
        classify=never_failure,
    )


async def test_pipeline_counts_attempts_cut_by_the_callers_deadline_as_slow(
    clock: FakeClock,
) -> None:
    pipeline = black_hole_pipeline(clock)
    for _ in range(5):
        call = asyncio.ensure_future(pipeline.execute(hang, deadline=Deadline.after(2, clock)))
        await clock.advance(2)
        with pytest.raises(ExecutionTimeout) as raised:
            await call
        assert raised.value.caller_deadline
    breaker = pipeline.circuit_breaker
    assert breaker is not None and breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await pipeline.execute(hang, deadline=Deadline.after(2, clock))


async def test_pipeline_counts_attempts_the_caller_cancelled_after_a_long_wait(
    clock: FakeClock,
) -> None:
    pipeline = black_hole_pipeline(clock)
    for _ in range(5):
        call = asyncio.ensure_future(pipeline.execute(hang))
        await clock.advance(1.5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    breaker = pipeline.circuit_breaker
    assert breaker is not None and breaker.state is CircuitState.OPEN


async def test_pipeline_ignores_attempts_the_caller_cancelled_at_once(clock: FakeClock) -> None:
    pipeline = black_hole_pipeline(clock)
    for _ in range(20):
        call = asyncio.ensure_future(pipeline.execute(hang, deadline=Deadline.after(0.5, clock)))
        await clock.advance(0.5)
        with pytest.raises(ExecutionTimeout):
            await call
    breaker = pipeline.circuit_breaker
    assert breaker is not None
    assert (breaker.state, breaker.snapshot().total_in_window) == (CircuitState.CLOSED, 0)
