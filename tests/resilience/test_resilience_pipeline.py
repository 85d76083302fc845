"""Pipeline: the policies nested in order, and the rules that tie them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from sidecar.resilience import (
    BulkheadFullError,
    BulkheadOptions,
    CircuitBreakerOptions,
    CircuitOpenError,
    CircuitState,
    Classification,
    Deadline,
    ExecutionTimeout,
    Pipeline,
    PipelineOptions,
    RateLimitedError,
    ResilienceEvent,
    RetryOptions,
    TimeoutOptions,
    TokenBucketOptions,
    current_attempt,
)
from sidecar.testing import FakeClock

T = TypeVar("T")

RETRY = RetryOptions(max_retries=3, base_delay=1, backoff_multiplier=2, jitter=False)


class Transient(Exception):
    """Upstream trouble: retried and counted by the breaker."""


class BadInput(Exception):
    """The caller's fault: neither retried nor counted."""


class Throttled(Exception):
    """Upstream asks us to come back later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}")
        self.retry_after = retry_after


def classify(exc: BaseException) -> Classification:
    if isinstance(exc, Throttled):
        return Classification(is_failure=True, retry_after=exc.retry_after)
    return Classification(is_failure=isinstance(exc, Transient))


class Upstream:
    """An operation that plays back a script of outcomes and records each attempt."""

    def __init__(self, clock: FakeClock, *outcomes: BaseException | str | None) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.calls: list[tuple[float, int]] = []

    async def __call__(self) -> str:
        self.calls.append((self.clock.monotonic(), current_attempt.get()))
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if outcome is None:  # hang until cancelled
            await asyncio.Event().wait()
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, str)
        return outcome


def pipeline(clock: FakeClock, **options: object) -> Pipeline:
    return Pipeline("test", PipelineOptions(**options), clock=clock, classify=classify)  # type: ignore[arg-type]


async def run(clock: FakeClock, call: Awaitable[T], seconds: float = 1000) -> T:
    """Run `call` while fake time moves `seconds` forward."""
    task = asyncio.ensure_future(call)
    await clock.advance(seconds)
    return await task


async def run_raising(
    clock: FakeClock, call: Awaitable[object], seconds: float = 1000
) -> BaseException:
    task = asyncio.ensure_future(call)
    await clock.advance(seconds)
    with pytest.raises(BaseException) as raised:
        await task
    return raised.value


def events_of(target: Pipeline) -> list[ResilienceEvent]:
    events: list[ResilienceEvent] = []
    target.add_listener(events.append)
    return events


async def test_pipeline_retries_transient_failures_then_succeeds(clock: FakeClock) -> None:
    upstream = Upstream(clock, Transient(), Transient(), "ok")
    result = await run(clock, pipeline(clock, retry=RETRY).execute(upstream))
    assert (result, upstream.calls) == ("ok", [(0.0, 1), (1.0, 2), (3.0, 3)])


async def test_pipeline_gives_up_after_max_retries_with_the_last_error(clock: FakeClock) -> None:
    upstream = Upstream(clock, *[Transient(str(n)) for n in range(10)])
    error = await run_raising(clock, pipeline(clock, retry=RETRY).execute(upstream))
    assert (str(error), len(upstream.calls)) == ("3", 4)


async def test_pipeline_does_not_retry_caller_errors(clock: FakeClock) -> None:
    upstream = Upstream(clock, BadInput())
    target = pipeline(clock, retry=RETRY, circuit_breaker=CircuitBreakerOptions())
    with pytest.raises(BadInput):
        await target.execute(upstream)
    breaker = target.snapshot().circuit_breaker
    assert breaker is not None
    assert (len(upstream.calls), breaker.consecutive_failures) == (1, 0)


async def test_pipeline_does_not_retry_non_idempotent_operations(clock: FakeClock) -> None:
    upstream = Upstream(clock, Transient())
    with pytest.raises(Transient):
        await pipeline(clock, retry=RETRY).execute(upstream, idempotent=False)
    assert len(upstream.calls) == 1


async def test_open_breaker_rejection_is_not_retried_and_spends_no_token(
    clock: FakeClock,
) -> None:
    upstream = Upstream(clock, Transient())
    target = pipeline(
        clock,
        retry=RETRY,
        circuit_breaker=CircuitBreakerOptions(failure_threshold=1, reset_timeout=60),
        rate_limit=TokenBucketOptions(requests_per_second=0.001, burst_size=5),
    )
    error = await run_raising(clock, target.execute(upstream), seconds=10)
    limiter = target.snapshot().rate_limiter
    assert limiter is not None
    assert isinstance(error, CircuitOpenError)
    assert len(upstream.calls) == 1
    assert limiter.available == pytest.approx(4.0, abs=0.1)


async def test_rate_limited_rejection_is_not_retried(clock: FakeClock) -> None:
    target = pipeline(
        clock, retry=RETRY, rate_limit=TokenBucketOptions(requests_per_second=1, burst_size=1)
    )
    await target.execute(Upstream(clock))
    upstream = Upstream(clock)
    with pytest.raises(RateLimitedError) as raised:
        await target.execute(upstream, deadline=Deadline.after(0.5, clock))
    assert (upstream.calls, raised.value.retry_after) == ([], 1.0)


async def test_each_attempt_takes_its_weight_in_tokens(clock: FakeClock) -> None:
    target = pipeline(
        clock,
        retry=RetryOptions(max_retries=1, base_delay=0, jitter=False),
        rate_limit=TokenBucketOptions(requests_per_second=0.001, burst_size=10),
    )
    await target.execute(Upstream(clock, Transient(), "ok"), weight=3)
    limiter = target.snapshot().rate_limiter
    assert limiter is not None
    assert limiter.available == pytest.approx(4.0)


async def test_server_advised_retry_after_is_honoured(clock: FakeClock) -> None:
    upstream = Upstream(clock, Throttled(5), "ok")
    await run(clock, pipeline(clock, retry=RETRY).execute(upstream))
    assert upstream.calls[1][0] == 5.0


async def test_retry_after_that_does_not_fit_the_deadline_gives_up_now(clock: FakeClock) -> None:
    upstream = Upstream(clock, Throttled(5), "ok")
    with pytest.raises(Throttled):
        await pipeline(clock, retry=RETRY).execute(upstream, deadline=Deadline.after(3, clock))
    assert (len(upstream.calls), clock.monotonic()) == (1, 0.0)


async def test_retry_after_longer_than_max_delay_gives_up_now(clock: FakeClock) -> None:
    upstream = Upstream(clock, Throttled(3600), "ok")
    with pytest.raises(Throttled):
        await pipeline(clock, retry=RETRY).execute(upstream)
    assert len(upstream.calls) == 1


async def test_retry_never_sleeps_past_the_deadline(clock: FakeClock) -> None:
    upstream = Upstream(clock, *[Transient() for _ in range(10)])
    call = pipeline(clock, retry=RETRY).execute(upstream, deadline=Deadline.after(2.5, clock))
    task = asyncio.ensure_future(call)
    await clock.advance(1)  # attempt 2 at t=1 fails; the next delay (2 s) passes the deadline
    assert task.done()
    with pytest.raises(Transient):
        await task
    assert [at for at, _ in upstream.calls] == [0.0, 1.0]


async def test_attempt_timeout_is_retried(clock: FakeClock) -> None:
    upstream = Upstream(clock, None, "ok")
    target = pipeline(clock, retry=RETRY, timeout=TimeoutOptions(attempt_timeout=2))
    events = events_of(target)
    assert await run(clock, target.execute(upstream)) == "ok"
    assert [(e.strategy, e.event) for e in events] == [
        ("attempt_timeout", "timeout"),
        ("retry", "retry"),
    ]


async def test_attempt_timeout_counts_as_breaker_failure(clock: FakeClock) -> None:
    target = pipeline(
        clock,
        circuit_breaker=CircuitBreakerOptions(failure_threshold=1),
        timeout=TimeoutOptions(attempt_timeout=2),
    )
    error = await run_raising(clock, target.execute(Upstream(clock, None)))
    assert isinstance(error, ExecutionTimeout)
    assert target.circuit_breaker is not None
    assert (error.caller_deadline, target.circuit_breaker.state) == (False, CircuitState.OPEN)


async def test_caller_deadline_timeout_is_final(clock: FakeClock) -> None:
    upstream = Upstream(clock, None, "ok")
    target = pipeline(clock, retry=RETRY, timeout=TimeoutOptions(attempt_timeout=10))
    error = await run_raising(clock, target.execute(upstream, deadline=Deadline.after(2, clock)))
    assert isinstance(error, ExecutionTimeout)
    assert (error.caller_deadline, len(upstream.calls)) == (True, 1)


async def test_total_timeout_bounds_the_whole_call(clock: FakeClock) -> None:
    upstream = Upstream(clock, None, None, None, None)
    target = pipeline(
        clock, retry=RETRY, timeout=TimeoutOptions(attempt_timeout=1, total_timeout=2.5)
    )
    error = await run_raising(clock, target.execute(upstream))
    assert isinstance(error, ExecutionTimeout)
    assert [at for at, _ in upstream.calls] == [0.0, 2.0]


async def test_a_transfer_is_bounded_by_the_caller_not_the_service_timeouts(
    clock: FakeClock,
) -> None:
    async def upload() -> str:  # an upload as long as the caller streams: 60 s here
        await clock.sleep(60)
        return "stored"

    target = pipeline(clock, timeout=TimeoutOptions(attempt_timeout=1, total_timeout=2))
    assert await run(clock, target.execute(upload, transfer=True, idempotent=False)) == "stored"
    cut = await run_raising(
        clock, target.execute(upload, transfer=True, deadline=Deadline.after(30, clock))
    )
    assert isinstance(cut, ExecutionTimeout) and cut.caller_deadline
    assert isinstance(await run_raising(clock, target.execute(upload)), ExecutionTimeout)


async def test_expired_deadline_fails_before_calling(clock: FakeClock) -> None:
    upstream = Upstream(clock)
    with pytest.raises(ExecutionTimeout):
        await pipeline(clock).execute(upstream, deadline=Deadline.after(0, clock))
    assert upstream.calls == []


async def test_breaker_sees_each_attempt(clock: FakeClock) -> None:
    upstream = Upstream(clock, *[Transient() for _ in range(10)])
    target = pipeline(
        clock,
        retry=RetryOptions(max_retries=5, base_delay=0.1, jitter=False),
        circuit_breaker=CircuitBreakerOptions(failure_threshold=3),
    )
    error = await run_raising(clock, target.execute(upstream))
    assert isinstance(error, CircuitOpenError)
    assert len(upstream.calls) == 3


async def test_events_report_retries_breaker_transitions_and_rejections(clock: FakeClock) -> None:
    target = pipeline(
        clock,
        retry=RetryOptions(max_retries=5, base_delay=1, jitter=False),
        circuit_breaker=CircuitBreakerOptions(failure_threshold=2, reset_timeout=30),
    )
    events = events_of(target)
    await run_raising(clock, target.execute(Upstream(clock, Transient(), Transient())))
    assert [(e.strategy, e.event, e.attempt, e.delay) for e in events] == [
        ("retry", "retry", 1, 1.0),
        ("circuit_breaker", "opened", 2, 30.0),
        ("retry", "retry", 2, 2.0),
        ("circuit_breaker", "circuit_open", 3, pytest.approx(28.0)),
    ]


async def test_breaker_recovers_through_a_half_open_probe(clock: FakeClock) -> None:
    target = pipeline(
        clock, circuit_breaker=CircuitBreakerOptions(failure_threshold=1, reset_timeout=5)
    )
    events = events_of(target)
    with pytest.raises(Transient):
        await target.execute(Upstream(clock, Transient()))
    await clock.advance(5)
    await target.execute(Upstream(clock, "ok"))
    assert [e.event for e in events] == ["opened", "half_opened", "closed"]


async def test_caller_error_on_a_probe_frees_it_for_the_next_call(clock: FakeClock) -> None:
    target = pipeline(
        clock, circuit_breaker=CircuitBreakerOptions(failure_threshold=1, reset_timeout=5)
    )
    with pytest.raises(Transient):
        await target.execute(Upstream(clock, Transient()))
    await clock.advance(5)
    with pytest.raises(BadInput):
        await target.execute(Upstream(clock, BadInput()))
    await target.execute(Upstream(clock, "ok"))
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.CLOSED


async def test_retry_budget_denial_reraises_the_last_error(clock: FakeClock) -> None:
    stingy = RetryOptions(budget_ratio=0, budget_min_retries_per_second=0, jitter=False)
    target = pipeline(clock, retry=stingy)
    events = events_of(target)
    upstream = Upstream(clock, Transient())
    with pytest.raises(Transient):
        await target.execute(upstream)
    assert (len(upstream.calls), [e.event for e in events]) == (1, ["budget_exhausted"])


async def test_cancellation_is_not_swallowed_nor_counted_as_failure(clock: FakeClock) -> None:
    target = pipeline(
        clock, retry=RETRY, circuit_breaker=CircuitBreakerOptions(failure_threshold=1)
    )
    task = asyncio.ensure_future(target.execute(Upstream(clock, None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert target.circuit_breaker is not None
    assert target.circuit_breaker.state is CircuitState.CLOSED


async def test_cancellation_during_backoff_stops_the_retries(clock: FakeClock) -> None:
    upstream = Upstream(clock, Transient(), "ok")
    task = asyncio.ensure_future(pipeline(clock, retry=RETRY).execute(upstream))
    await clock.wait_for_sleepers(1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await clock.advance(10)
    assert (task.cancelled(), len(upstream.calls)) == (True, 1)


async def test_current_attempt_is_set_around_each_attempt(clock: FakeClock) -> None:
    upstream = Upstream(clock, Transient(), Transient(), "ok")
    await run(clock, pipeline(clock, retry=RETRY).execute(upstream))
    assert ([n for _, n in upstream.calls], current_attempt.get()) == ([1, 2, 3], 0)


async def test_full_bulkhead_rejects_and_emits_an_event(clock: FakeClock) -> None:
    target = pipeline(clock, bulkhead=BulkheadOptions(max_concurrent_calls=1, max_queued_calls=0))
    events = events_of(target)
    hanging = asyncio.ensure_future(target.execute(Upstream(clock, None)))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await target.execute(Upstream(clock))
    hanging.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await hanging
    bulkhead = target.snapshot().bulkhead
    assert bulkhead is not None
    assert ([e.event for e in events], bulkhead.in_flight) == (["bulkhead_full"], 0)


async def test_plain_pipeline_just_runs_the_operation(clock: FakeClock) -> None:
    target = pipeline(clock)
    result = await target.execute(Upstream(clock, "ok"))
    snapshot = target.snapshot()
    assert (result, snapshot.circuit_breaker, snapshot.rate_limiter, snapshot.bulkhead) == (
        "ok",
        None,
        None,
        None,
    )
    assert (target.circuit_breaker, target.rate_limiter, target.bulkhead) == (None, None, None)


async def test_disabled_breaker_is_off(clock: FakeClock) -> None:
    target = pipeline(clock, circuit_breaker=CircuitBreakerOptions(enabled=False))
    assert target.circuit_breaker is None


async def test_failing_event_listener_is_logged_not_raised(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    target = pipeline(clock, retry=RETRY)

    def broken(event: ResilienceEvent) -> None:
        raise RuntimeError("metrics down")

    target.add_listener(broken)
    with caplog.at_level(logging.ERROR):
        assert await run(clock, target.execute(Upstream(clock, Transient(), "ok"))) == "ok"
    assert "listener failed" in caplog.text


async def test_crashing_classifier_does_not_leak_a_probe_slot(clock: FakeClock) -> None:
    def fragile(exc: BaseException) -> Classification:
        if isinstance(exc, BadInput):
            raise LookupError("classifier bug")
        return classify(exc)

    options = PipelineOptions(circuit_breaker=CircuitBreakerOptions(failure_threshold=1))
    target = Pipeline("test", options, clock=clock, classify=fragile)
    with pytest.raises(Transient):
        await target.execute(Upstream(clock, Transient()))
    await clock.advance(30)
    with pytest.raises(LookupError):
        await target.execute(Upstream(clock, BadInput()))
    assert await target.execute(Upstream(clock, "ok")) == "ok"


async def test_system_clock_pipeline_times_attempts_without_waiting() -> None:
    options = PipelineOptions(retry=RETRY, timeout=TimeoutOptions(attempt_timeout=30))
    target = Pipeline("real-clock", options, classify=classify)

    async def instant() -> str:
        return "ok"

    assert await target.execute(instant) == "ok"


async def test_deadline_alone_bounds_an_otherwise_plain_pipeline(clock: FakeClock) -> None:
    upstream = Upstream(clock, None)
    error = await run_raising(
        clock, pipeline(clock).execute(upstream, deadline=Deadline.after(3, clock))
    )
    assert isinstance(error, ExecutionTimeout)
    assert (error.caller_deadline, clock.sleepers) == (True, 0)
