"""The streaming form of the pipeline: admit -> first chunk -> settle.

A stream cannot run inside one `Pipeline.execute(operation)`: its chunks reach the caller
while the upstream is still answering, a retry is allowed only before the first of them went
out, and the real cost (LLM tokens) is known only at the end. So a call is split in three
steps that its owner drives, holding a `StreamLease` in between:

    admit        cooldown -> circuit breaker -> bulkhead -> rate limiters, each limiter
                 taking its weight (1 per call, or N LLM tokens); a refusal raises one of
                 the core's rejections and keeps nothing
    first_chunk  output reached the caller: the call is committed (`lease.committed`) and
                 the owner's retry or fallback loop must not try it again
    settle       exactly once: SUCCESS, FAILURE (counts against the breaker) or IGNORED
                 (the caller's own error or a cancellation: not counted); the weighted
                 limiters are reconciled with the real weight; the bulkhead slot is freed

Why this order rather than the unary pipeline's (bulkhead outermost): nothing retries inside
this pipeline, its owner retries or falls back around `admit`, so each admission is one
attempt; and a cooldown or an open breaker must refuse at once, before the call queues for a
slot or takes a token, so that a fallback moves on without waiting. As in the unary
pipeline, an open breaker spends no token, and a weight that no limiter can ever hold is
refused before the breaker sees it (it says nothing about the upstream).

The breaker counts streams without its slow-call rule: how long a stream runs says nothing
about the upstream's health; the owner bounds the wait for the first chunk and settles a
timeout as a failure.

Every step publishes a `ResilienceEvent`. Rejections, cooldowns and breaker transitions go to
every listener (as the unary pipeline's do); "admitted", "first_chunk" and "settled" only to
listeners added with `lifecycle=True` (per-call metrics), each carrying the `detail` object
the owner attached to the call.

Usage:

    lease = await pipeline.admit(weight=estimate, deadline=deadline)
    with lease:                             # anything left unsettled is settled IGNORED
        try:
            async for chunk in open_stream():
                lease.first_chunk()         # no retry from here on
                yield chunk
        except UpstreamError:
            lease.settle(StreamOutcome.FAILURE)
            raise
        lease.settle(StreamOutcome.SUCCESS, actual_weight=usage.total_tokens)
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, NoReturn, Protocol, runtime_checkable

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
    CoolingDownError,
    ExecutionRejected,
    OverCapacityError,
    RateLimitedError,
)
from sidecar.resilience.events import EventListener, ResilienceEvent, publish
from sidecar.resilience.outcome import current_attempt
from sidecar.resilience.pipeline import PipelineSnapshot
from sidecar.resilience.rate_limiter import (
    RateLimiter,
    RateLimiterSnapshot,
    TokenBucket,
    TokenBucketOptions,
)

__all__ = [
    "RateLimit",
    "StreamLease",
    "StreamOutcome",
    "StreamingOptions",
    "StreamingPipeline",
    "StreamingSnapshot",
]

_log = logging.getLogger(__name__)

_BREAKER_EVENTS: Final = {
    CircuitState.OPEN: "opened",
    CircuitState.HALF_OPEN: "half_opened",
    CircuitState.CLOSED: "closed",
    CircuitState.ISOLATED: "isolated",
}


class StreamOutcome(enum.Enum):
    """How an admitted call ended, as the breaker should count it."""

    SUCCESS = "success"
    """The upstream answered completely."""
    FAILURE = "failure"
    """Upstream trouble (an outage, a timeout, a stream cut short): counts against the
    breaker."""
    IGNORED = "ignored"
    """Says nothing about the upstream: the caller's own error, a cancellation, the caller's
    deadline, a pause the upstream asked for. Not counted; frees a half-open probe slot."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One rate limiter of a streaming pipeline and what an admission takes from it.

    Attributes:
        name: Names the limiter in snapshots and errors ("requests", "tokens"); unique
            within a pipeline.
        options: Its token bucket (rate, burst, queue).
        weighted: True: an admission takes its `weight` (estimated LLM tokens, bytes) and
            `settle` reconciles it with the real one; False: one token per admission.
    """

    name: str
    options: TokenBucketOptions
    weighted: bool = False


@dataclass(frozen=True, slots=True)
class StreamingOptions:
    """Which policies a streaming target uses; None or empty turns a policy off."""

    circuit_breaker: CircuitBreakerOptions | None = None
    bulkhead: BulkheadOptions | None = None
    rate_limits: tuple[RateLimit, ...] = ()

    def __post_init__(self) -> None:
        names = [limit.name for limit in self.rate_limits]
        if len(set(names)) != len(names):
            raise ValueError(f"rate limit names must be unique, got {names}")


@dataclass(frozen=True, slots=True)
class StreamingSnapshot:
    """Read-only views of a streaming pipeline's stateful policies.

    Attributes:
        name: The pipeline's name.
        circuit_breaker: The breaker, or None when off.
        rate_limiters: Each limiter by name, in admission order.
        bulkhead: The bulkhead (possibly shared with other pipelines), or None when off.
        cooldown: Seconds of pause left, or None when not cooling down.
    """

    name: str
    circuit_breaker: CircuitBreakerSnapshot | None
    rate_limiters: Mapping[str, RateLimiterSnapshot]
    bulkhead: BulkheadSnapshot | None
    cooldown: float | None = None

    def as_pipeline_snapshot(self, rate_limiter: str | None = None) -> PipelineSnapshot:
        """The unary pipeline's view (one limiter: `rate_limiter`, else the first), for
        reports that show one breaker, one limiter and one bulkhead per target."""
        limiters = self.rate_limiters
        if rate_limiter is not None and rate_limiter in limiters:
            chosen: RateLimiterSnapshot | None = limiters[rate_limiter]
        else:
            chosen = next(iter(limiters.values()), None)
        return PipelineSnapshot(
            name=self.name,
            circuit_breaker=self.circuit_breaker,
            rate_limiter=chosen,
            bulkhead=self.bulkhead,
        )


@runtime_checkable
class _Adjustable(Protocol):
    """A limiter that can settle a grant with the real usage (`TokenBucket.adjust`)."""

    def adjust(self, delta: float) -> None: ...


@dataclass(frozen=True, slots=True)
class _Limit:
    name: str
    limiter: RateLimiter
    local: TokenBucket | None  # grants without a coroutine when the tokens are there
    weighted: bool
    capacity: float
    adjust: Callable[[float], None] | None  # None: this limiter cannot refund or charge


class StreamingPipeline:
    """Admits streamed calls to one target through its policies.

    Args:
        name: The target's name, used in events and snapshots.
        options: Which policies are on, and their settings.
        clock: Where every policy, cooldown and event timing gets time from.
        bulkhead: A bulkhead to use instead of the one `options.bulkhead` would build:
            several pipelines (the deployments of one service) share one set of slots.
        rate_limiters: Limiters to use, by `RateLimit.name`, instead of the local
            `TokenBucket` that limit's options would build (a global one shared by
            several processes, say). One without `adjust` is never reconciled.
        rejection_error: Turns a core rejection into the error `admit` raises (naming the
            target in the owner's error type, say); the event's `outcome` is that error's
            `reason` when it has one. By default the rejection itself is raised.
    """

    def __init__(
        self,
        name: str,
        options: StreamingOptions,
        *,
        clock: Clock = SYSTEM_CLOCK,
        bulkhead: Bulkhead | None = None,
        rate_limiters: Mapping[str, RateLimiter] | None = None,
        rejection_error: Callable[[ExecutionRejected], Exception] | None = None,
    ) -> None:
        self._name = name
        self._clock = clock
        self._rejection_error = rejection_error
        self._listeners: list[EventListener] = []
        self._lifecycle: list[EventListener] = []
        breaker = options.circuit_breaker
        self._breaker = None
        if breaker is not None and breaker.enabled:
            self._breaker = CircuitBreaker(breaker, clock)
            self._breaker.add_listener(self._on_transition)
        if bulkhead is None and options.bulkhead is not None:
            bulkhead = Bulkhead(options.bulkhead, clock)
        self._bulkhead = bulkhead
        given = dict(rate_limiters or {})
        unknown = set(given) - {limit.name for limit in options.rate_limits}
        if unknown:
            raise ValueError(f"rate_limiters names no configured rate limit: {sorted(unknown)}")
        self._limits: tuple[_Limit, ...] = tuple(
            self._limit(spec, given.get(spec.name), clock) for spec in options.rate_limits
        )
        self._weighted = tuple(limit for limit in self._limits if limit.weighted)
        self._cool_until = -math.inf

    @staticmethod
    def _limit(spec: RateLimit, limiter: RateLimiter | None, clock: Clock) -> _Limit:
        if limiter is None:
            limiter = TokenBucket(spec.options, clock)
        local = limiter if isinstance(limiter, TokenBucket) else None
        adjust = limiter.adjust if isinstance(limiter, _Adjustable) else None
        return _Limit(
            spec.name, limiter, local, spec.weighted, float(spec.options.burst_size), adjust
        )

    @property
    def name(self) -> str:
        """The target's name."""
        return self._name

    @property
    def clock(self) -> Clock:
        """The clock the pipeline runs on."""
        return self._clock

    @property
    def circuit_breaker(self) -> CircuitBreaker | None:
        """The breaker, or None when off."""
        return self._breaker

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The bulkhead, or None when off."""
        return self._bulkhead

    @property
    def rate_limiters(self) -> Mapping[str, RateLimiter]:
        """Every limiter by name, in admission order."""
        return {limit.name: limit.limiter for limit in self._limits}

    def add_listener(self, listener: EventListener, *, lifecycle: bool = False) -> None:
        """Call `listener(event)` for every rejection, cooldown and breaker transition; with
        `lifecycle`, also for every "admitted", "first_chunk" and "settled"."""
        self._listeners.append(listener)
        if lifecycle:
            self._lifecycle.append(listener)

    def cool_down(self, seconds: float) -> None:
        """Admit nothing for `seconds` from now (an upstream's Retry-After); a shorter pause
        never cuts a longer one short."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("seconds must be a finite number >= 0")
        until = self._clock.monotonic() + seconds
        if until > self._cool_until:
            self._cool_until = until
            self._emit("cooldown", "cooldown", delay=seconds)

    def snapshot(self) -> StreamingSnapshot:
        """Read-only views of the breaker, limiters, bulkhead and cooldown."""
        left = self._cool_until - self._clock.monotonic()
        return StreamingSnapshot(
            name=self._name,
            circuit_breaker=self._breaker.snapshot() if self._breaker else None,
            rate_limiters={limit.name: limit.limiter.snapshot() for limit in self._limits},
            bulkhead=self._bulkhead.snapshot() if self._bulkhead else None,
            cooldown=left if left > 0 else None,
        )

    async def admit(
        self,
        *,
        weight: float = 1.0,
        deadline: Deadline | None = None,
        wait: bool = True,
        detail: object = None,
        panic: bool = False,
    ) -> StreamLease:
        """Reserve what one call needs: a breaker permit, a bulkhead slot, and from each
        limiter one token (or `weight` tokens for a weighted one).

        Args:
            weight: The estimated cost the weighted limiters take (LLM tokens, say).
            deadline: The caller's deadline: no queueing for a slot or tokens past it.
            wait: False refuses at once when the bulkhead or a limiter would make the call
                wait (a fallback then tries its next target).
            detail: Attached to the lease and to every event of this call (opaque here).
            panic: Let the call through an open breaker (a failover group whose members
                are all open routes to them anyway, as Envoy below its panic threshold).
                Its outcome is not a probe's: only a success is noted, as evidence that the
                upstream answers (`CircuitBreaker.upstream_recovered`).

        Raises:
            ExecutionRejected: `CoolingDownError`, `OverCapacityError`, `CircuitOpenError`,
                `BulkheadFullError` or `RateLimitedError` (or what `rejection_error` makes
                of it); nothing is kept.
            ValueError: If `weight` is negative or not finite.
        """
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError("weight must be a finite number >= 0")
        now = self._clock.monotonic()
        if now < self._cool_until:
            self._reject(
                CoolingDownError(retry_after=self._cool_until - now),
                "cooldown",
                "cooling_down",
                weight,
                detail,
            )
        for limit in self._limits:
            amount = weight if limit.weighted else 1.0
            if amount > limit.capacity:
                self._reject(
                    OverCapacityError(
                        f"rate limiter {limit.name!r} can never grant {amount:g} "
                        f"(capacity {limit.capacity:g})",
                        limiter=limit.name,
                        weight=amount,
                        capacity=limit.capacity,
                    ),
                    "rate_limiter",
                    "over_capacity",
                    weight,
                    detail,
                )
        breaker = self._breaker
        bypassed = False
        if breaker is not None:
            try:
                breaker.acquire()
            except CircuitOpenError as exc:
                if not panic:
                    self._reject(exc, "circuit_breaker", "circuit_open", weight, detail)
                bypassed = True
                self._emit("circuit_breaker", "panic", weight=weight, detail=detail)
        await self._reserve(weight, deadline, wait, detail, bypassed)
        lease = StreamLease(self, weight, self._bulkhead is not None, detail, bypassed)
        if self._lifecycle:
            self._emit("stream", "admitted", weight=weight, detail=detail, lifecycle=True)
        return lease

    async def _reserve(
        self, weight: float, deadline: Deadline | None, wait: bool, detail: object, bypassed: bool
    ) -> None:
        """The bulkhead slot and every limiter's tokens, all or nothing (the breaker already
        let the call through; its permit is given back if anything here fails)."""
        bulkhead = self._bulkhead
        holds_slot = False
        taken: list[tuple[_Limit, float]] = []
        try:
            if bulkhead is not None:
                if not bulkhead.try_acquire():  # a free slot needs no coroutine
                    if not wait:
                        raise BulkheadFullError("bulkhead is full")
                    await bulkhead.acquire(deadline)
                holds_slot = True
            # Not waiting is waiting with no time left: every limiter, local or remote,
            # then refuses at once with the wait it would have needed as `retry_after`.
            limit_deadline = deadline if wait else Deadline(self._clock.monotonic(), self._clock)
            for limit in self._limits:
                amount = weight if limit.weighted else 1.0
                local = limit.local
                if local is None or not local.try_acquire(amount):
                    await limit.limiter.acquire(amount, limit_deadline)
                taken.append((limit, amount))
        except BaseException as exc:
            for limit, amount in taken:
                if limit.adjust is not None:
                    limit.adjust(-amount)  # give back what this refused call took
            if holds_slot and bulkhead is not None:
                bulkhead.release()
            if self._breaker is not None and not bypassed:
                self._breaker.record_ignored()  # free a half-open probe slot
            if isinstance(exc, BulkheadFullError):
                self._reject(exc, "bulkhead", "bulkhead_full", weight, detail)
            if isinstance(exc, RateLimitedError):
                self._reject(exc, "rate_limiter", "rate_limited", weight, detail)
            raise

    def _settle(
        self,
        lease: StreamLease,
        outcome: StreamOutcome,
        actual_weight: float | None,
        detail: object,
        holds_slot: bool,
    ) -> None:
        """End `lease`: tell the breaker, reconcile the weighted limiters, free the slot."""
        try:
            breaker = self._breaker
            if breaker is not None and lease.bypassed_breaker:
                if outcome is StreamOutcome.SUCCESS:
                    breaker.upstream_recovered()  # evidence, not a probe's verdict
            elif breaker is not None:
                if outcome is StreamOutcome.SUCCESS:
                    breaker.record_success()
                elif outcome is StreamOutcome.FAILURE:
                    breaker.record_failure()
                else:
                    breaker.record_ignored()
            charged = lease.weight
            if actual_weight is not None and self._weighted:
                delta = actual_weight - charged
                if delta:
                    for limit in self._weighted:
                        if limit.adjust is not None:
                            limit.adjust(delta)  # refund (< 0) or charge the overrun (> 0)
                charged = actual_weight
        finally:
            if holds_slot and self._bulkhead is not None:
                self._bulkhead.release()
        if self._lifecycle:
            now = self._clock.monotonic()
            first = lease.first_chunk_at
            self._emit(
                "stream",
                "settled",
                outcome=outcome.value,
                elapsed=now - lease.started,
                first_chunk=None if first is None else first - lease.started,
                weight=charged,
                detail=detail,
                lifecycle=True,
            )

    def _first_chunk(self, lease: StreamLease) -> None:
        if self._lifecycle:
            assert lease.first_chunk_at is not None
            self._emit(
                "stream",
                "first_chunk",
                elapsed=lease.first_chunk_at - lease.started,
                weight=lease.weight,
                detail=lease.detail,
                lifecycle=True,
            )

    def _reject(
        self,
        exc: ExecutionRejected,
        strategy: str,
        event: str,
        weight: float,
        detail: object,
    ) -> NoReturn:
        error: BaseException = exc
        if self._rejection_error is not None:
            error = self._rejection_error(exc)
        if self._listeners:
            reason = getattr(error, "reason", None)
            self._emit(
                strategy,
                event,
                delay=exc.retry_after,
                outcome=reason if isinstance(reason, str) else exc.reason,
                weight=weight,
                detail=detail,
            )
        if error is exc:
            raise exc
        raise error from exc

    def _on_transition(self, old: CircuitState, new: CircuitState) -> None:
        if self._listeners:
            delay = self._breaker.break_duration if self._breaker else None
            self._emit(
                "circuit_breaker",
                _BREAKER_EVENTS[new],
                delay=delay if new is CircuitState.OPEN else None,
            )

    def _emit(
        self,
        strategy: str,
        event: str,
        *,
        delay: float | None = None,
        outcome: str | None = None,
        elapsed: float | None = None,
        first_chunk: float | None = None,
        weight: float | None = None,
        detail: object = None,
        lifecycle: bool = False,
    ) -> None:
        listeners = self._lifecycle if lifecycle else self._listeners
        if not listeners:
            return
        publish(
            listeners,
            ResilienceEvent(
                self._name,
                strategy,
                event,
                current_attempt.get(),
                delay,
                outcome=outcome,
                elapsed=elapsed,
                first_chunk=first_chunk,
                weight=weight,
                detail=detail,
            ),
        )


class StreamLease:
    """What one admitted call holds until it is settled.

    `first_chunk()` marks the moment output reached the caller (`committed`: no retry from
    then on); `settle()` ends the call exactly once. Used as a context manager, it settles
    IGNORED on the way out if nothing settled it (a cancellation, an unexpected error), so
    the bulkhead slot and a half-open probe permit are never leaked.
    """

    __slots__ = (
        "_bypassed_breaker",
        "_detail",
        "_first_chunk_at",
        "_holds_slot",
        "_pipeline",
        "_settled",
        "_started",
        "_weight",
    )

    def __init__(
        self,
        pipeline: StreamingPipeline,
        weight: float,
        holds_slot: bool,
        detail: object,
        bypassed_breaker: bool = False,
    ) -> None:
        self._pipeline = pipeline
        self._bypassed_breaker = bypassed_breaker
        self._weight = weight
        self._holds_slot = holds_slot
        self._detail = detail
        self._started = pipeline.clock.monotonic()
        self._first_chunk_at: float | None = None
        self._settled = False

    @property
    def weight(self) -> float:
        """The weight reserved at admission."""
        return self._weight

    @property
    def detail(self) -> object:
        """What the owner attached at admission."""
        return self._detail

    @property
    def bypassed_breaker(self) -> bool:
        """Admitted through an open breaker in panic mode."""
        return self._bypassed_breaker

    @property
    def holds_slot(self) -> bool:
        """Whether the lease holds a bulkhead slot (until it is settled)."""
        return self._holds_slot

    @property
    def started(self) -> float:
        """When the call was admitted, on the pipeline's clock."""
        return self._started

    @property
    def first_chunk_at(self) -> float | None:
        """When the first chunk went out, on the pipeline's clock; None before."""
        return self._first_chunk_at

    @property
    def committed(self) -> bool:
        """Output reached the caller: the call must not be retried or moved elsewhere."""
        return self._first_chunk_at is not None

    @property
    def settled(self) -> bool:
        """Whether `settle()` has run."""
        return self._settled

    def first_chunk(self) -> None:
        """Mark that output reached the caller. Later calls (and calls after settling)
        change nothing."""
        if self._first_chunk_at is not None or self._settled:
            return
        self._first_chunk_at = self._pipeline.clock.monotonic()
        self._pipeline._first_chunk(self)

    def settle(
        self,
        outcome: StreamOutcome,
        *,
        actual_weight: float | None = None,
        detail: object = None,
    ) -> bool:
        """End the call: record `outcome` on the breaker, charge `actual_weight` instead of
        the reservation on the weighted limiters (refunding or taking the difference; None
        keeps the reservation), and release the bulkhead slot.

        Args:
            outcome: How the call ended.
            actual_weight: The real cost, once known (the upstream's token count).
            detail: Replaces the admission's detail in the "settled" event (None keeps it).

        Returns:
            True; False when the lease was already settled (a bug in the caller, logged):
            the second call changes nothing.

        Raises:
            ValueError: If `actual_weight` is negative or not finite.
        """
        if self._settled:
            _log.warning(
                "stream lease settled twice; the second settle is ignored",
                extra={"pipeline": self._pipeline.name, "outcome": outcome.value},
            )
            return False
        if actual_weight is not None and not (math.isfinite(actual_weight) and actual_weight >= 0):
            raise ValueError("actual_weight must be a finite number >= 0")
        self._settled = True
        holds_slot, self._holds_slot = self._holds_slot, False
        self._pipeline._settle(
            self, outcome, actual_weight, self._detail if detail is None else detail, holds_slot
        )
        return True

    def __enter__(self) -> StreamLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._settled:
            self.settle(StreamOutcome.IGNORED)
