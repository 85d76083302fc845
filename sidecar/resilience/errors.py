"""The errors the resilience core raises itself, apart from whatever the operation raises.

    Exception
    ├── ExecutionRejected         a policy refused to run the call; never retried
    │   ├── CircuitOpenError      CIRCUIT_OPEN: the breaker is open, isolated or probing
    │   ├── RateLimitedError      RATE_LIMITED: no tokens in time, or the limiter queue is full
    │   │   ├── CoolingDownError  COOLING_DOWN: the upstream asked for a pause that has not
    │   │   │                     ended (a 429's Retry-After)
    │   │   └── OverCapacityError OVER_CAPACITY: the weight is more than the limiter can ever
    │   │                         hold; no retry_after, since waiting never helps
    │   └── BulkheadFullError     BULKHEAD_FULL: no free slot in time, or the queue is full
    └── ExecutionTimeout          DEADLINE_EXCEEDED: an attempt or the whole call ran out of time

The error-mapping layer (outside this package) turns a rejection into UNAVAILABLE or
RESOURCE_EXHAUSTED with a RetryInfo built from `retry_after`, and a timeout into
DEADLINE_EXCEEDED. This module knows nothing of gRPC, so it carries only the facts.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "CoolingDownError",
    "ExecutionRejected",
    "ExecutionTimeout",
    "OverCapacityError",
    "RateLimitedError",
]


class ExecutionRejected(Exception):
    """A policy refused to run the call. Rejections are never retried.

    Attributes:
        reason: An UPPER_SNAKE machine-readable reason.
        retry_after: Seconds after which trying again may succeed, or None if unknown.
    """

    reason: ClassVar[str] = "EXECUTION_REJECTED"
    _default_message: ClassVar[str] = "execution rejected"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message or self._default_message)
        self.retry_after = retry_after


class CircuitOpenError(ExecutionRejected):
    """The circuit breaker is not letting calls through.

    `retry_after` is the time until the breaker probes again (None while a probe is already
    in flight, since nobody knows when it ends).
    """

    reason: ClassVar[str] = "CIRCUIT_OPEN"
    _default_message: ClassVar[str] = "circuit breaker is open"


class RateLimitedError(ExecutionRejected):
    """The rate limiter could not grant tokens in time; `retry_after` says when it could."""

    reason: ClassVar[str] = "RATE_LIMITED"
    _default_message: ClassVar[str] = "rate limit exceeded"


class CoolingDownError(RateLimitedError):
    """The target is resting: its upstream asked for a pause (`retry_after`: what is left)."""

    reason: ClassVar[str] = "COOLING_DOWN"
    _default_message: ClassVar[str] = "cooling down after the upstream asked for a pause"


class OverCapacityError(RateLimitedError):
    """The weight asked for is more than a limiter holds when full: it can never be granted.

    Attributes:
        limiter: The name of the limiter that refused.
        weight: The weight asked for.
        capacity: The most that limiter can grant at once.
    """

    reason: ClassVar[str] = "OVER_CAPACITY"
    _default_message: ClassVar[str] = "weight exceeds the rate limiter's capacity"

    def __init__(
        self, message: str | None = None, *, limiter: str, weight: float, capacity: float
    ) -> None:
        super().__init__(message, retry_after=None)
        self.limiter = limiter
        self.weight = weight
        self.capacity = capacity


class BulkheadFullError(ExecutionRejected):
    """The bulkhead had no free slot and no room (or no time) left to queue for one."""

    reason: ClassVar[str] = "BULKHEAD_FULL"
    _default_message: ClassVar[str] = "too many concurrent calls"


class ExecutionTimeout(Exception):
    """A call or an attempt ran out of time.

    Attributes:
        reason: Always "DEADLINE_EXCEEDED".
        caller_deadline: True when the caller's total deadline ran out (final: nothing is
            left to retry with); False when only a per-attempt timeout fired (retryable).
        timeout: The timeout in seconds that fired, if known.
    """

    reason: ClassVar[str] = "DEADLINE_EXCEEDED"

    def __init__(
        self,
        message: str | None = None,
        *,
        caller_deadline: bool,
        timeout: float | None = None,
    ) -> None:
        if message is None:
            message = "deadline exceeded" if caller_deadline else "attempt timed out"
            if timeout is not None:
                message = f"{message} after {timeout:.3f}s"
        super().__init__(message)
        self.caller_deadline = caller_deadline
        self.timeout = timeout
