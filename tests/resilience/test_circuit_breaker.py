"""CircuitBreaker: trip rules, the rolling window, and the half-open probe dance."""

from __future__ import annotations

import logging

import pytest

from sidecar.resilience import (
    CircuitBreaker,
    CircuitBreakerOptions,
    CircuitOpenError,
    CircuitState,
)
from sidecar.testing import FakeClock

# Only the rule under test is on; the other is disabled with 0.
CONSECUTIVE = CircuitBreakerOptions(failure_threshold=3, failure_ratio=0, reset_timeout=10)
RATIO = CircuitBreakerOptions(
    failure_threshold=0, failure_ratio=0.5, minimum_throughput=10, sampling_duration=10
)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.acquire()
        breaker.record_failure()


def succeed(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.acquire()
        breaker.record_success()


def tripped(options: CircuitBreakerOptions, clock: FakeClock) -> CircuitBreaker:
    breaker = CircuitBreaker(options, clock)
    breaker.isolate()
    breaker.reset()
    fail(breaker, 3)
    assert breaker.state is CircuitState.OPEN
    return breaker


def test_breaker_opens_after_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(CONSECUTIVE, clock)
    fail(breaker, 2)
    before = breaker.state
    fail(breaker, 1)
    assert (before, breaker.state) == (CircuitState.CLOSED, CircuitState.OPEN)


def test_success_resets_the_consecutive_failure_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(CONSECUTIVE, clock)
    fail(breaker, 2)
    succeed(breaker, 1)
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED


def test_ratio_rule_waits_for_minimum_throughput(clock: FakeClock) -> None:
    breaker = CircuitBreaker(RATIO, clock)
    succeed(breaker, 4)
    fail(breaker, 5)  # 9 calls, 56 % failures: below minimum throughput
    before = breaker.state
    fail(breaker, 1)  # 10 calls, 60 % failures
    assert (before, breaker.state) == (CircuitState.CLOSED, CircuitState.OPEN)


def test_ratio_rule_does_not_trip_below_the_ratio(clock: FakeClock) -> None:
    breaker = CircuitBreaker(RATIO, clock)
    succeed(breaker, 6)
    fail(breaker, 4)
    assert breaker.snapshot().failure_ratio == pytest.approx(0.4)
    assert breaker.state is CircuitState.CLOSED


async def test_old_failures_slide_out_of_the_window(clock: FakeClock) -> None:
    breaker = CircuitBreaker(RATIO, clock)
    fail(breaker, 9)
    await clock.advance(10)  # every bucket of the 10 s window has aged out
    succeed(breaker, 9)
    fail(breaker, 1)
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.total_in_window) == (CircuitState.CLOSED, 10)


async def test_window_drops_only_the_buckets_that_aged_out(clock: FakeClock) -> None:
    breaker = CircuitBreaker(RATIO, clock)
    fail(breaker, 3)
    await clock.advance(5)
    succeed(breaker, 2)
    await clock.advance(5)  # the first three failures are now 10 s old
    assert breaker.snapshot().total_in_window == 2


async def test_open_breaker_fails_fast_with_retry_after(clock: FakeClock) -> None:
    breaker = tripped(CONSECUTIVE, clock)
    await clock.advance(4)
    with pytest.raises(CircuitOpenError) as raised:
        breaker.acquire()
    assert raised.value.retry_after == pytest.approx(6.0)


async def test_open_breaker_half_opens_after_reset_timeout(clock: FakeClock) -> None:
    breaker = tripped(CONSECUTIVE, clock)
    await clock.advance(10)
    breaker.acquire()
    assert breaker.state is CircuitState.HALF_OPEN


async def test_half_open_admits_only_half_open_max_calls_probes(clock: FakeClock) -> None:
    options = CircuitBreakerOptions(failure_threshold=3, reset_timeout=10, half_open_max_calls=2)
    breaker = tripped(options, clock)
    await clock.advance(10)
    breaker.acquire()
    breaker.acquire()
    with pytest.raises(CircuitOpenError) as raised:
        breaker.acquire()
    assert raised.value.retry_after is None


async def test_probe_success_closes_the_breaker(clock: FakeClock) -> None:
    breaker = tripped(CONSECUTIVE, clock)
    await clock.advance(10)
    succeed(breaker, 1)
    assert breaker.state is CircuitState.CLOSED


async def test_breaker_closes_only_when_every_probe_succeeded(clock: FakeClock) -> None:
    options = CircuitBreakerOptions(failure_threshold=3, reset_timeout=10, half_open_max_calls=2)
    breaker = tripped(options, clock)
    await clock.advance(10)
    succeed(breaker, 1)
    after_one = breaker.state
    succeed(breaker, 1)
    assert (after_one, breaker.state) == (CircuitState.HALF_OPEN, CircuitState.CLOSED)


async def test_probe_failure_reopens_for_reset_timeout(clock: FakeClock) -> None:
    breaker = tripped(CONSECUTIVE, clock)
    await clock.advance(10)
    fail(breaker, 1)
    with pytest.raises(CircuitOpenError) as raised:
        breaker.acquire()
    assert (breaker.state, raised.value.retry_after) == (CircuitState.OPEN, 10.0)


async def test_record_ignored_frees_the_probe_slot_without_closing(clock: FakeClock) -> None:
    breaker = tripped(CONSECUTIVE, clock)
    await clock.advance(10)
    breaker.acquire()
    breaker.record_ignored()
    breaker.acquire()  # the slot is free again
    assert breaker.state is CircuitState.HALF_OPEN


async def test_late_result_of_a_call_admitted_before_opening_is_ignored(
    clock: FakeClock,
) -> None:
    breaker = tripped(CONSECUTIVE, clock)
    breaker.record_success()
    assert breaker.state is CircuitState.OPEN


def test_isolate_holds_the_breaker_open(clock: FakeClock) -> None:
    breaker = CircuitBreaker(CONSECUTIVE, clock)
    breaker.isolate()
    with pytest.raises(CircuitOpenError) as raised:
        breaker.acquire()
    assert (breaker.state, raised.value.retry_after) == (CircuitState.ISOLATED, 10.0)


async def test_isolated_breaker_does_not_half_open_on_its_own(clock: FakeClock) -> None:
    breaker = CircuitBreaker(CONSECUTIVE, clock)
    breaker.isolate()
    await clock.advance(100)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()


def test_reset_closes_and_forgets_the_counts(clock: FakeClock) -> None:
    breaker = tripped(CONSECUTIVE, clock)
    breaker.reset()
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.consecutive_failures, snapshot.total_in_window) == (
        CircuitState.CLOSED,
        0,
        0,
    )


def test_disabled_breaker_never_trips(clock: FakeClock) -> None:
    breaker = CircuitBreaker(CircuitBreakerOptions(enabled=False, failure_threshold=1), clock)
    fail(breaker, 50)
    assert breaker.state is CircuitState.CLOSED


async def test_listener_sees_every_transition(clock: FakeClock) -> None:
    breaker = CircuitBreaker(CONSECUTIVE, clock)
    seen: list[tuple[CircuitState, CircuitState]] = []
    breaker.add_listener(lambda old, new: seen.append((old, new)))
    fail(breaker, 3)
    await clock.advance(10)
    succeed(breaker, 1)
    breaker.isolate()
    breaker.reset()
    assert seen == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
        (CircuitState.CLOSED, CircuitState.ISOLATED),
        (CircuitState.ISOLATED, CircuitState.CLOSED),
    ]


def test_failing_listener_is_logged_and_does_not_break_the_breaker(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = CircuitBreaker(CONSECUTIVE, clock)

    def broken(old: CircuitState, new: CircuitState) -> None:
        raise RuntimeError("metrics down")

    breaker.add_listener(broken)
    with caplog.at_level(logging.ERROR):
        fail(breaker, 3)
    assert breaker.state is CircuitState.OPEN
    assert "listener failed" in caplog.text


async def test_snapshot_reports_counts_and_time_until_probe(clock: FakeClock) -> None:
    breaker = CircuitBreaker(CONSECUTIVE, clock)
    succeed(breaker, 1)
    fail(breaker, 3)
    await clock.advance(3)
    snapshot = breaker.snapshot()
    assert (
        snapshot.state,
        snapshot.consecutive_failures,
        snapshot.failure_ratio,
        snapshot.total_in_window,
        snapshot.retry_after,
    ) == (CircuitState.OPEN, 3, 0.75, 4, 7.0)


GROWING = CircuitBreakerOptions(
    failure_threshold=1, failure_ratio=0, min_reset_timeout=1, reset_timeout=5
)


async def reopen_after_break(breaker: CircuitBreaker, clock: FakeClock) -> float:
    """Wait out the current break, fail the probe; the break that follows."""
    snapshot = breaker.snapshot()
    assert snapshot.state is CircuitState.OPEN and snapshot.retry_after is not None
    await clock.advance(snapshot.retry_after - 0.001)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    await clock.advance(0.002)
    fail(breaker, 1)  # the half-open probe fails: open again
    return breaker.break_duration


async def test_the_break_doubles_with_each_consecutive_opening_up_to_reset_timeout(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(GROWING, clock)
    fail(breaker, 1)
    assert breaker.break_duration == 1
    breaks = [await reopen_after_break(breaker, clock) for _ in range(4)]
    assert breaks == [2, 4, 5, 5]


async def test_the_break_starts_short_again_once_the_breaker_closed(clock: FakeClock) -> None:
    breaker = CircuitBreaker(GROWING, clock)
    fail(breaker, 1)
    await reopen_after_break(breaker, clock)
    await reopen_after_break(breaker, clock)
    await clock.advance(4)
    succeed(breaker, 1)  # the probe succeeds: closed
    assert breaker.state is CircuitState.CLOSED
    fail(breaker, 1)
    assert breaker.snapshot().retry_after == pytest.approx(1)


def test_without_min_reset_timeout_every_break_is_reset_timeout(clock: FakeClock) -> None:
    breaker = CircuitBreaker(CONSECUTIVE, clock)
    fail(breaker, 3)
    assert breaker.break_duration == 10 and breaker.snapshot().retry_after == 10


async def test_evidence_that_the_upstream_answers_half_opens_an_open_breaker_at_once(
    clock: FakeClock,
) -> None:
    breaker = CircuitBreaker(GROWING, clock)
    fail(breaker, 1)
    breaker.upstream_recovered()
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.acquire()  # a real call is the probe, one at a time
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED


def test_evidence_changes_nothing_unless_the_breaker_is_open(clock: FakeClock) -> None:
    breaker = CircuitBreaker(GROWING, clock)
    breaker.upstream_recovered()
    assert breaker.state is CircuitState.CLOSED
    breaker.isolate()
    breaker.upstream_recovered()  # an operator's hold is not lifted by a probe
    assert breaker.state is CircuitState.ISOLATED
