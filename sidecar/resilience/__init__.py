"""The resilience core: bulkhead, timeouts, retry, circuit breaker and rate limiter.

Knows nothing of gRPC, of backends, or of `sidecar.errors`: operations are plain async
callables, failures are told apart by an injected `classify`, and time comes from an
injected `Clock`. Each target builds one `Pipeline` at start-up and runs every call through
it; a streamed target (an AI deployment) builds a `StreamingPipeline` instead and drives
each call through admit -> first chunk -> settle.

Usage:

    pipeline = Pipeline(
        "openai-main",
        PipelineOptions(retry=RetryOptions(), circuit_breaker=CircuitBreakerOptions()),
        classify=lambda exc: Classification(is_failure=isinstance(exc, ConnectionError)),
    )
    reply = await pipeline.execute(lambda: client.complete(prompt), deadline=deadline)
"""

from sidecar.resilience.answered import Answered
from sidecar.resilience.bulkhead import Bulkhead, BulkheadOptions, BulkheadSnapshot
from sidecar.resilience.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerOptions,
    CircuitBreakerSnapshot,
    CircuitState,
    TransitionListener,
)
from sidecar.resilience.clock import SYSTEM_CLOCK, Clock, SystemClock
from sidecar.resilience.deadline import Deadline
from sidecar.resilience.errors import (
    BulkheadFullError,
    CircuitOpenError,
    CoolingDownError,
    ExecutionRejected,
    ExecutionTimeout,
    OverCapacityError,
    RateLimitedError,
)
from sidecar.resilience.events import EventListener, ResilienceEvent
from sidecar.resilience.outcome import Classification, current_attempt
from sidecar.resilience.pipeline import (
    AttemptWrapper,
    Pipeline,
    PipelineOptions,
    PipelineSnapshot,
)
from sidecar.resilience.rate_limiter import (
    RateLimiter,
    RateLimiterSnapshot,
    TokenBucket,
    TokenBucketOptions,
)
from sidecar.resilience.retry import RetryBudget, RetryOptions, backoff_delay
from sidecar.resilience.streaming import (
    RateLimit,
    StreamingOptions,
    StreamingPipeline,
    StreamingSnapshot,
    StreamLease,
    StreamOutcome,
)
from sidecar.resilience.timeout import TimeoutOptions, run_with_timeout

__all__ = [
    "SYSTEM_CLOCK",
    "Answered",
    "AttemptWrapper",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadOptions",
    "BulkheadSnapshot",
    "CircuitBreaker",
    "CircuitBreakerOptions",
    "CircuitBreakerSnapshot",
    "CircuitOpenError",
    "CircuitState",
    "Classification",
    "Clock",
    "CoolingDownError",
    "Deadline",
    "EventListener",
    "ExecutionRejected",
    "ExecutionTimeout",
    "OverCapacityError",
    "Pipeline",
    "PipelineOptions",
    "PipelineSnapshot",
    "RateLimit",
    "RateLimitedError",
    "RateLimiter",
    "RateLimiterSnapshot",
    "ResilienceEvent",
    "RetryBudget",
    "RetryOptions",
    "StreamLease",
    "StreamOutcome",
    "StreamingOptions",
    "StreamingPipeline",
    "StreamingSnapshot",
    "SystemClock",
    "TimeoutOptions",
    "TokenBucket",
    "TokenBucketOptions",
    "TransitionListener",
    "backoff_delay",
    "current_attempt",
    "run_with_timeout",
]
