"""The resilience pipeline of one upstream target: every policy, nested in one fixed order.

Outermost first (Microsoft's standard pipeline, Dapr's `pkg/resiliency`):

    bulkhead -> total timeout -> retry -> circuit breaker -> rate limiter
      -> attempt timeout -> the operation

- The breaker sees every attempt, so a flapping upstream trips it even while retries hide
  the failures from callers; an open breaker spends no rate-limit token.
- Rejections (`ExecutionRejected`) are never retried; they propagate as they are.
- Only exceptions that `classify` calls a failure are recorded against the breaker and
  retried; anything else is recorded as ignored and re-raised at once.
- Retry never sleeps past the deadline, honours a server's `retry_after`, skips
  non-idempotent operations and asks the retry budget first.
- `asyncio.CancelledError` is never swallowed and never counted as a failure; like an
  attempt cut off by the deadline, it counts as a slow call if the attempt had already
  waited the breaker's `slow_call_duration`.

All per-target state is built once in `__init__`; `execute` allocates little, and events are
only built when somebody listens.

Usage:

    pipeline = Pipeline("redis-main", options, classify=classify_redis_error)
    value = await pipeline.execute(lambda: client.get(key), deadline=deadline)
"""

from __future__ import annotations

import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sidecar.resilience.bulkhead import Bulkhead, BulkheadOptions, BulkheadSnapshot
from sidecar.resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerOptions,
    CircuitBreakerSnapshot,
    CircuitState,
)
from sidecar.resilience.clock import SYSTEM_CLOCK, Clock
from sidecar.resilience.deadline import Deadline
from sidecar.resilience.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ExecutionTimeout,
    RateLimitedError,
)
from sidecar.resilience.events import EventListener, ResilienceEvent, publish
from sidecar.resilience.outcome import Classification, current_attempt, judge
from sidecar.resilience.rate_limiter import (
    RateLimiter,
    RateLimiterSnapshot,
    TokenBucket,
    TokenBucketOptions,
)
from sidecar.resilience.retry import RetryBudget, RetryOptions, backoff_delay
from sidecar.resilience.timeout import TimeoutOptions, run_with_timeout

__all__ = [
    "AttemptWrapper",
    "Classification",
    "EventListener",
    "Pipeline",
    "PipelineOptions",
    "PipelineSnapshot",
    "ResilienceEvent",
    "current_attempt",
]

T = TypeVar("T")
AttemptWrapper = Callable[[Callable[[], Awaitable[Any]]], Callable[[], Awaitable[Any]]]
"""Turns a call's operation into the one each attempt runs (see `Pipeline.wrap_attempts`)."""


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """Which policies a target uses; None turns that policy off (a no-op)."""

    retry: RetryOptions | None = None
    circuit_breaker: CircuitBreakerOptions | None = None
    rate_limit: TokenBucketOptions | None = None
    bulkhead: BulkheadOptions | None = None
    timeout: TimeoutOptions | None = None


@dataclass(frozen=True, slots=True)
class PipelineSnapshot:
    """Read-only views of the stateful policies; None for those that are off."""

    name: str
    circuit_breaker: CircuitBreakerSnapshot | None
    rate_limiter: RateLimiterSnapshot | None
    bulkhead: BulkheadSnapshot | None


_BREAKER_EVENTS: Final = {
    CircuitState.OPEN: "opened",
    CircuitState.HALF_OPEN: "half_opened",
    CircuitState.CLOSED: "closed",
    CircuitState.ISOLATED: "isolated",
}


class Pipeline:
    """Runs operations against one target through its policies.

    Args:
        name: The target's name, used in events.
        options: Which policies are on, and their settings.
        clock: Where every policy gets time from.
        random: The jitter source, returning floats in [0, 1).
        classify: Tells upstream failures from the caller's own errors.
        rate_limiter: A limiter to use instead of the local `TokenBucket` that
            `options.rate_limit` would build (a global one shared by several processes,
            say); the pipeline only needs its `acquire` and `snapshot`.
    """

    def __init__(
        self,
        name: str,
        options: PipelineOptions,
        *,
        clock: Clock = SYSTEM_CLOCK,
        random: Callable[[], float] = _random.random,
        classify: Callable[[BaseException], Classification],
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._name = name
        self._clock = clock
        self._random = random
        self._classify = classify
        self._listeners: list[EventListener] = []
        self._wrap_attempts: AttemptWrapper | None = None
        retry = options.retry
        self._retry = retry if retry is not None and retry.max_retries > 0 else None
        self._budget = RetryBudget(self._retry, clock) if self._retry is not None else None
        breaker = options.circuit_breaker
        self._breaker = None
        if breaker is not None and breaker.enabled:
            self._breaker = CircuitBreaker(breaker, clock)
            self._breaker.add_listener(self._on_transition)
        limit = options.rate_limit
        if rate_limiter is None and limit is not None:
            rate_limiter = TokenBucket(limit, clock)
        self._limiter = rate_limiter
        # A local bucket can grant without a coroutine; any other limiter is awaited.
        self._local_limiter = rate_limiter if isinstance(rate_limiter, TokenBucket) else None
        bulkhead = options.bulkhead
        self._bulkhead = Bulkhead(bulkhead, clock) if bulkhead is not None else None
        timeout = options.timeout
        self._attempt_timeout = timeout.attempt_timeout if timeout is not None else None
        self._total_timeout = timeout.total_timeout if timeout is not None else None
        self._plain = (
            self._retry is None
            and self._breaker is None
            and self._limiter is None
            and self._bulkhead is None
            and self._attempt_timeout is None
            and self._total_timeout is None
        )

    @property
    def name(self) -> str:
        """The target's name."""
        return self._name

    @property
    def clock(self) -> Clock:
        """The clock the pipeline runs on (a call's deadline must be on it too)."""
        return self._clock

    @property
    def circuit_breaker(self) -> CircuitBreaker | None:
        """The breaker, or None when off."""
        return self._breaker

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The rate limiter, or None when off."""
        return self._limiter

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The bulkhead, or None when off."""
        return self._bulkhead

    def add_listener(self, listener: EventListener) -> None:
        """Call `listener(event)` for every retry, transition, rejection and timeout."""
        self._listeners.append(listener)

    def wrap_attempts(self, wrapper: AttemptWrapper | None) -> None:
        """Run each call's operation as `wrapper(operation)` returns it: every attempt then
        calls the wrapped one (a tracer makes a span per attempt this way, without the
        resilience core knowing of traces). None removes the wrapper."""
        self._wrap_attempts = wrapper

    def snapshot(self) -> PipelineSnapshot:
        """Read-only views of the breaker, limiter and bulkhead."""
        return PipelineSnapshot(
            name=self._name,
            circuit_breaker=self._breaker.snapshot() if self._breaker else None,
            rate_limiter=self._limiter.snapshot() if self._limiter else None,
            bulkhead=self._bulkhead.snapshot() if self._bulkhead else None,
        )

    async def execute(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        deadline: Deadline | None = None,
        idempotent: bool = True,
        weight: float = 1.0,
        transfer: bool = False,
    ) -> T:
        """Run `operation` through the pipeline and return its result.

        Args:
            operation: Makes and awaits one attempt; called once per attempt.
            deadline: The caller's deadline; nothing below sleeps or runs past it.
            idempotent: False forbids retries (the operation may have had an effect).
            weight: Rate-limit tokens each attempt takes (e.g. estimated LLM tokens).
            transfer: The attempt moves as many bytes as the caller streams (an upload), so
                its length is the caller's to bound: the attempt and total timeouts do not
                apply, only `deadline` (and the stream's own idle timeout, upstream of here).

        Raises:
            ExecutionRejected: A policy refused the call (never retried).
            ExecutionTimeout: The last attempt or the whole call ran out of time.
            Exception: The operation's last error, when it is final or retries ran out.
        """
        if self._wrap_attempts is not None:
            operation = self._wrap_attempts(operation)
        if self._plain and deadline is None:
            token = current_attempt.set(1)
            try:
                return await operation()
            finally:
                current_attempt.reset(token)
        bulkhead = self._bulkhead
        if bulkhead is None:
            return await self._run(operation, deadline, idempotent, weight, transfer)
        try:
            if not bulkhead.try_acquire():  # a free slot needs no coroutine
                await bulkhead.acquire(deadline)
        except BulkheadFullError as exc:
            self._emit("bulkhead", "bulkhead_full", 0, exc.retry_after)
            raise
        try:
            return await self._run(operation, deadline, idempotent, weight, transfer)
        finally:
            bulkhead.release()

    async def _run(
        self,
        operation: Callable[[], Awaitable[T]],
        deadline: Deadline | None,
        idempotent: bool,
        weight: float,
        transfer: bool = False,
    ) -> T:
        """Total timeout, retry, breaker and limiter: the loop over attempts."""
        if self._total_timeout is not None and not transfer:
            at = self._clock.monotonic() + self._total_timeout
            if deadline is None or deadline.at is None or at < deadline.at:
                deadline = Deadline(at, self._clock)
        elif deadline is not None and deadline.at is None:
            deadline = None
        breaker = self._breaker
        admit = breaker is not None or self._limiter is not None or deadline is not None
        if self._budget is not None:
            self._budget.record_request()
        attempt = 0
        while True:
            attempt += 1
            token = current_attempt.set(attempt)
            try:
                if admit and not self._admit(attempt, weight, deadline):
                    await self._wait_for_token(attempt, weight, deadline)
                started = breaker.attempt_started() if breaker is not None else None
                try:
                    result = await self._attempt(operation, deadline, transfer)
                except Exception as exc:
                    if isinstance(exc, ExecutionTimeout):
                        strategy = "total_timeout" if exc.caller_deadline else "attempt_timeout"
                        self._emit(strategy, "timeout", attempt, exc.timeout)
                    verdict = self._record(exc, breaker, started)
                    delay = self._retry_delay(verdict, attempt, deadline) if idempotent else None
                    if delay is None:
                        raise
                except BaseException:
                    if breaker is not None:
                        breaker.record_cancelled(started)  # the caller gave up
                    raise
                else:
                    if breaker is not None:
                        breaker.record_success(started)
                    return result
            finally:
                current_attempt.reset(token)
            await self._clock.sleep(delay)

    def _admit(self, attempt: int, weight: float, deadline: Deadline | None) -> bool:
        """Deadline check, breaker, then the limiter's token if one is at hand. True when
        the attempt may start now; False when it must wait for a token (`_wait_for_token`).
        No coroutine on the common path."""
        if deadline is not None and deadline.expired():
            self._emit("total_timeout", "timeout", attempt, 0.0)
            raise ExecutionTimeout(caller_deadline=True, timeout=0.0)
        breaker = self._breaker
        if breaker is not None:
            try:
                breaker.acquire()
            except CircuitOpenError as exc:
                self._emit("circuit_breaker", "circuit_open", attempt, exc.retry_after)
                raise
        if self._limiter is None:
            return True
        local = self._local_limiter
        return local is not None and local.try_acquire(weight)

    async def _wait_for_token(self, attempt: int, weight: float, deadline: Deadline | None) -> None:
        """The limiter's token for an admitted attempt (the breaker already let it through)."""
        assert self._limiter is not None
        try:
            await self._limiter.acquire(weight, deadline)
        except BaseException as exc:
            if self._breaker is not None:
                self._breaker.record_ignored()  # free a half-open probe slot
            if isinstance(exc, RateLimitedError):
                self._emit("rate_limiter", "rate_limited", attempt, exc.retry_after)
            raise

    def _retry_delay(
        self, verdict: Classification, attempt: int, deadline: Deadline | None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up with the last error."""
        retry = self._retry
        if retry is None or not verdict.is_failure or attempt > retry.max_retries:
            return None
        delay = backoff_delay(retry, attempt, self._random)
        advised = verdict.retry_after
        if advised is not None:
            if advised > retry.max_delay:
                return None  # the server wants more patience than any single retry may spend
            delay = max(delay, advised)
        remaining = None if deadline is None else deadline.remaining()
        if remaining is not None and delay >= remaining:
            return None  # the next attempt could not even start before the deadline
        if self._budget is not None and not self._budget.try_spend_retry():
            self._emit("retry", "budget_exhausted", attempt, None)
            return None
        self._emit("retry", "retry", attempt, delay)
        return delay

    def _attempt(
        self,
        operation: Callable[[], Awaitable[T]],
        deadline: Deadline | None,
        transfer: bool = False,
    ) -> Awaitable[T]:
        """The attempt timeout: the smaller of `attempt_timeout` and what the deadline leaves.
        A plain function returning the awaitable: one coroutine frame less per call."""
        seconds = None if transfer else self._attempt_timeout
        final = False
        if deadline is not None:
            remaining = deadline.remaining()
            if remaining is not None and (seconds is None or remaining <= seconds):
                seconds, final = remaining, True
        if seconds is None:
            return operation()
        return run_with_timeout(operation, seconds, self._clock, caller_deadline=final)

    def _record(
        self, exc: Exception, breaker: CircuitBreaker | None, started: float | None
    ) -> Classification:
        """Tell the breaker how the attempt ended; say whether it may be retried.

        An attempt cut off by the deadline is recorded as the caller giving up: a slow call
        if it waited `slow_call_duration`, so a hung upstream trips the breaker even when
        every deadline is shorter than the attempt timeout."""
        try:
            verdict = judge(exc, self._classify)
        except BaseException:
            if breaker is not None:
                breaker.record_ignored()  # a broken classifier must not pin a probe slot
            raise
        if breaker is not None:
            if isinstance(exc, ExecutionTimeout) and exc.caller_deadline:
                breaker.record_cancelled(started)
            elif verdict.is_failure:
                breaker.record_failure(started)
            else:
                breaker.record_ignored()
        return verdict

    def _on_transition(self, old: CircuitState, new: CircuitState) -> None:
        if self._listeners:
            delay = self._breaker.break_duration if self._breaker else None
            self._emit(
                "circuit_breaker",
                _BREAKER_EVENTS[new],
                current_attempt.get(),
                delay if new is CircuitState.OPEN else None,
            )

    def _emit(self, strategy: str, event: str, attempt: int, delay: float | None) -> None:
        if not self._listeners:
            return
        publish(self._listeners, ResilienceEvent(self._name, strategy, event, attempt, delay))
