"""A deployment (one model on one `ai_model` service) and the admission of one attempt.

Each deployment owns its circuit breaker, its requests-per-minute and tokens-per-minute
buckets, and a cooldown set by an upstream 429's Retry-After; the service's bulkhead is
shared by all its deployments. Admission checks them in the order of the architecture's
pipeline (cooldown, breaker, bulkhead, limiters), so an open breaker spends no token, and
turns every refusal into a `sidecar.errors` type naming the deployment:

    cooling down     ResourceExhausted  UPSTREAM_RATE_LIMITED  (retry_after: cooldown left)
    too many tokens  ResourceExhausted  TOKEN_LIMIT_EXCEEDED   (never fits this budget)
    breaker open     Unavailable        CIRCUIT_OPEN           (retry_after: until the probe)
    bulkhead full    ResourceExhausted  BULKHEAD_FULL
    no tokens        ResourceExhausted  RATE_LIMITED           (retry_after: refill time)

`wait=False` refuses at once when a limiter or the bulkhead would make the call wait (an
alias then tries its next deployment); `wait=True` queues within the deadline.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from sidecar.ai.services import ModelService
from sidecar.backends.ai.base import ChatRequest
from sidecar.errors import ResourceExhausted, SidecarError, Unavailable
from sidecar.resilience import (
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Clock,
    Deadline,
    RateLimitedError,
    TokenBucket,
    TokenBucketOptions,
)
from sidecar.resilience.bulkhead import Bulkhead

__all__ = ["Admission", "Deployment"]

DEFAULT_COOLDOWN: Final = 1.0
"""Seconds a deployment rests after a 429 that names no Retry-After."""


def _bucket(per_minute: float | None, max_queue: int, clock: Clock) -> TokenBucket | None:
    if not per_minute:
        return None
    # One minute's worth of burst: the per-minute limit, spread out without a cliff.
    options = TokenBucketOptions(per_minute / 60.0, per_minute, max_queue)
    return TokenBucket(options, clock)


class Deployment:
    """One model on one service.

    Args:
        service_name: The `ai_model` service.
        model: The upstream model.
        service: The service's settings and provider.
        bulkhead: The service's bulkhead (shared by its deployments), or None.
        clock: Time for breakers, buckets and cooldowns.
    """

    def __init__(
        self,
        service_name: str,
        model: str,
        service: ModelService,
        bulkhead: Bulkhead | None,
        clock: Clock,
    ) -> None:
        self.name = f"{service_name}/{model}"
        self.service_name = service_name
        self.model = model
        self.service = service
        self.provider = service.provider
        self.provider_name = service.provider.provider
        options = service.circuit_breaker
        self.breaker = CircuitBreaker(options, clock) if options and options.enabled else None
        limits = service.limits
        self.requests = _bucket(limits.requests_per_minute, limits.max_queue, clock)
        self.tokens = _bucket(limits.tokens_per_minute, limits.max_queue, clock)
        self.bulkhead = bulkhead
        self._clock = clock
        self._cool_until = 0.0
        self._metadata = {"deployment": self.name, "provider": self.provider.provider}

    def prepare(self, request: ChatRequest) -> ChatRequest:
        """The request with this service's defaults filled in where it set nothing."""
        defaults = self.service.defaults
        changes: dict[str, Any] = {}
        if request.temperature is None and defaults.temperature is not None:
            changes["temperature"] = defaults.temperature
        if request.top_p is None and defaults.top_p is not None:
            changes["top_p"] = defaults.top_p
        if request.max_tokens is None and defaults.max_tokens is not None:
            changes["max_tokens"] = defaults.max_tokens
        return dataclasses.replace(request, **changes) if changes else request

    def cool_down(self, seconds: float | None) -> None:
        """Send no calls here for `seconds` (an upstream 429's Retry-After)."""
        until = self._clock.monotonic() + (seconds if seconds is not None else DEFAULT_COOLDOWN)
        self._cool_until = max(self._cool_until, until)

    async def admit(self, weight: int, deadline: Deadline | None, *, wait: bool) -> Admission:
        """Reserve what one attempt needs: a breaker slot, a bulkhead slot, 1 request and
        `weight` tokens.

        Raises:
            SidecarError: The deployment refuses the attempt (see the module docstring).
        """
        now = self._clock.monotonic()
        if now < self._cool_until:
            raise self._refused(
                ResourceExhausted,
                "UPSTREAM_RATE_LIMITED",
                "is cooling down after an upstream 429",
                self._cool_until - now,
            )
        tokens = self.tokens
        if tokens is not None and weight > tokens.snapshot().capacity:
            raise self._refused(
                ResourceExhausted,
                "TOKEN_LIMIT_EXCEEDED",
                f"cannot take a request estimated at {weight} tokens per minute",
            )
        breaker = self.breaker
        if breaker is not None:
            try:
                breaker.acquire()
            except CircuitOpenError as exc:
                raise self._refused(
                    Unavailable, "CIRCUIT_OPEN", "has an open circuit breaker", exc.retry_after
                ) from exc
        taken: list[tuple[TokenBucket, float]] = []
        bulkhead_taken = False
        try:
            bulkhead = self.bulkhead
            if bulkhead is not None:
                if not bulkhead.try_acquire():
                    if not wait:
                        raise BulkheadFullError()
                    await bulkhead.acquire(deadline)
                bulkhead_taken = True
            for bucket, amount in ((self.requests, 1.0), (tokens, float(weight))):
                if bucket is not None:
                    await self._take(bucket, amount, deadline, wait)
                    taken.append((bucket, amount))
        except BaseException as exc:
            for bucket, amount in taken:
                bucket.adjust(-amount)  # give back what this refused attempt took
            if bulkhead_taken and self.bulkhead is not None:
                self.bulkhead.release()
            if breaker is not None:
                breaker.record_ignored()  # free a half-open probe slot
            if isinstance(exc, BulkheadFullError):
                raise self._refused(ResourceExhausted, "BULKHEAD_FULL", "is at its limit") from exc
            if isinstance(exc, RateLimitedError):
                raise self._refused(
                    ResourceExhausted, "RATE_LIMITED", "is over its rate limit", exc.retry_after
                ) from exc
            raise
        return Admission(self, weight if tokens is not None else 0, bulkhead_taken)

    async def _take(
        self, bucket: TokenBucket, amount: float, deadline: Deadline | None, wait: bool
    ) -> None:
        if bucket.try_acquire(amount):
            return
        if not wait:
            state = bucket.snapshot()
            raise RateLimitedError(retry_after=max(amount - state.available, amount) / state.rate)
        await bucket.acquire(amount, deadline)

    def _refused(
        self,
        kind: type[SidecarError],
        reason: str,
        what: str,
        retry_after: float | None = None,
    ) -> SidecarError:
        return kind(
            f"deployment {self.name} {what}",
            reason=reason,
            metadata=self._metadata,
            retry_after=retry_after,
        )


class Admission:
    """What one admitted attempt holds, and how it ends for the breaker and the budget.

    Exactly one of `succeeded` or `failed` records the attempt on the breaker;
    `release` gives the bulkhead slot back. Both are safe to call more than once.
    """

    __slots__ = ("_deployment", "_holds_slot", "_recorded", "_reserved")

    def __init__(self, deployment: Deployment, reserved: int, holds_slot: bool) -> None:
        self._deployment = deployment
        self._reserved = reserved
        self._holds_slot = holds_slot
        self._recorded = False

    def settle(self, used_tokens: int | None) -> None:
        """Charge the real usage instead of the reservation (refunding the difference)."""
        tokens = self._deployment.tokens
        if tokens is not None and used_tokens is not None and self._reserved:
            tokens.adjust(used_tokens - self._reserved)
            self._reserved = used_tokens

    def succeeded(self) -> None:
        """The upstream answered completely."""
        if not self._recorded and self._deployment.breaker is not None:
            self._deployment.breaker.record_success()
        self._recorded = True

    def failed(self, error: BaseException) -> None:
        """The attempt ended with `error`: upstream trouble counts against the breaker, a
        429 cools the deployment down, anything else (the caller's own mistake, a
        cancellation, the caller's deadline) says nothing about the upstream."""
        if self._recorded:
            return
        self._recorded = True
        breaker = self._deployment.breaker
        if isinstance(error, SidecarError) and error.reason == "UPSTREAM_RATE_LIMITED":
            self._deployment.cool_down(error.retry_after)
            if breaker is not None:
                breaker.record_ignored()
        elif isinstance(error, SidecarError) and error.transient:
            if breaker is not None:
                breaker.record_failure()
        elif breaker is not None:
            breaker.record_ignored()

    def release(self) -> None:
        """Give the bulkhead slot back."""
        if self._holds_slot:
            self._holds_slot = False
            bulkhead = self._deployment.bulkhead
            if bulkhead is not None:
                bulkhead.release()
