"""The streaming pipelines of one `ai_model` service's deployments, and their refusals.

Each deployment (`service/model`) runs its calls through one `StreamingPipeline`: its own
circuit breaker, its own requests-per-minute and tokens-per-minute buckets, its own cooldown
(set by an upstream 429's Retry-After), and the service's bulkhead, shared by all its
deployments. The pipelines are made on first use and kept by the service (`ModelService`),
so every route naming a deployment (an alias, the service, `service/model`) shares one, and
AdminService and the breaker metrics report the breakers that really run.

With `store: redis` the two buckets of a deployment live on Redis (`RedisTokenBucket`),
shared by every sidecar whose service has the same name and `key_prefix`, at

    <key_prefix>sidecar:ratelimit:ai:<service>/<model>:requests
    <key_prefix>sidecar:ratelimit:ai:<service>/<model>:tokens

so every pod in front of one API key draws on one budget; the pipeline reconciles the
tokens bucket with each call's real usage there too (`RedisTokenBucket.adjust`).

A refusal becomes a `sidecar.errors` type naming the deployment:

    cooling down     ResourceExhausted  UPSTREAM_RATE_LIMITED  (retry_after: cooldown left)
    too many tokens  ResourceExhausted  TOKEN_LIMIT_EXCEEDED   (never fits this budget)
    breaker open     Unavailable        CIRCUIT_OPEN           (retry_after: until the probe)
    bulkhead full    ResourceExhausted  BULKHEAD_FULL
    no tokens        ResourceExhausted  RATE_LIMITED           (retry_after: refill time)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sidecar.errors import ResourceExhausted, SidecarError, Unavailable
from sidecar.resilience import (
    Bulkhead,
    BulkheadFullError,
    CircuitOpenError,
    Clock,
    CoolingDownError,
    EventListener,
    ExecutionRejected,
    OverCapacityError,
    RateLimit,
    RateLimitedError,
    RateLimiter,
    StreamingOptions,
    StreamingPipeline,
    TokenBucketOptions,
)

__all__ = [
    "REQUESTS",
    "TOKENS",
    "DeploymentPipelines",
    "SharedLimiters",
    "budget_key",
    "per_minute",
    "per_minute_limits",
    "refusal",
]

REQUESTS = "requests"
"""The limiter taking one token per call (`requests_per_minute`)."""
TOKENS = "tokens"
"""The weighted limiter taking the call's estimated LLM tokens (`tokens_per_minute`)."""


SharedLimiters = Callable[[str, RateLimit, Clock], RateLimiter]
"""Makes the limiter of one limit of a scope (a deployment's `service/model`, an alias, an
alias's caller) in a store every sidecar shares, from the limit's bucket options, on the
pipeline's clock."""


def budget_key(prefix: str, scope: str, limit: str) -> str:
    """The Redis key of the `limit` bucket ("requests", "tokens") of `scope` (a deployment's
    `service/model`, an alias's name, `<alias>:caller:<value>`)."""
    return f"{prefix}sidecar:ratelimit:ai:{scope}:{limit}"


def per_minute(name: str, limit: float, max_queue: int, *, weighted: bool) -> RateLimit:
    """A limit of `limit` per minute: a bucket of one minute's worth, refilled evenly (no
    cliff at the minute's turn). A request bucket holds at least one request."""
    burst = limit if weighted else max(limit, 1.0)
    return RateLimit(name, TokenBucketOptions(limit / 60.0, burst, max_queue), weighted=weighted)


def per_minute_limits(
    requests: float | None, tokens: float | None, max_queue: int
) -> tuple[RateLimit, ...]:
    """The requests- then tokens-per-minute limits of a budget (None or 0: no such limit)."""
    limits: list[RateLimit] = []
    if requests:
        limits.append(per_minute(REQUESTS, requests, max_queue, weighted=False))
    if tokens:
        limits.append(per_minute(TOKENS, tokens, max_queue, weighted=True))
    return tuple(limits)


def refusal(deployment: str, provider: str) -> Callable[[ExecutionRejected], SidecarError]:
    """What a deployment's pipeline raises instead of the core's rejections."""
    metadata = {"deployment": deployment, "provider": provider}

    def refuse(exc: ExecutionRejected) -> SidecarError:
        kind: type[SidecarError] = ResourceExhausted
        if isinstance(exc, CoolingDownError):
            reason, what = "UPSTREAM_RATE_LIMITED", "is cooling down after an upstream 429"
        elif isinstance(exc, OverCapacityError):
            reason = "TOKEN_LIMIT_EXCEEDED"
            what = f"cannot take a request estimated at {exc.weight:g} tokens per minute"
        elif isinstance(exc, CircuitOpenError):
            kind, reason, what = Unavailable, "CIRCUIT_OPEN", "has an open circuit breaker"
        elif isinstance(exc, BulkheadFullError):
            reason, what = "BULKHEAD_FULL", "is at its limit"
        elif isinstance(exc, RateLimitedError):
            reason, what = "RATE_LIMITED", "is over its rate limit"
        else:
            kind, reason, what = Unavailable, exc.reason, "refused the call"
        return kind(
            f"deployment {deployment} {what}",
            reason=reason,
            metadata=metadata,
            retry_after=exc.retry_after,
        )

    return refuse


class DeploymentPipelines:
    """The pipelines of one service's deployments, by deployment name.

    Args:
        provider: The service's provider (named in refusals).
        options: The policies of each deployment; `options.bulkhead` is built once and
            shared by every deployment of the service.
        shared: Makes each deployment's limiters in a shared store (Redis); None keeps
            them in this process.
    """

    def __init__(
        self, provider: str, options: StreamingOptions, shared: SharedLimiters | None = None
    ) -> None:
        self._provider = provider
        self._options = options
        self._shared = shared
        self._limiters: list[RateLimiter] = []
        self._bulkhead: Bulkhead | None = None
        self._pipelines: dict[str, StreamingPipeline] = {}
        self._listeners: list[tuple[EventListener, bool]] = []

    def get(self, deployment: str, clock: Clock) -> StreamingPipeline:
        """The pipeline of `deployment` (`service/model`), made on first use on `clock`
        (every router of one server passes the integrations' clock)."""
        pipeline = self._pipelines.get(deployment)
        if pipeline is None:
            if self._bulkhead is None and self._options.bulkhead is not None:
                self._bulkhead = Bulkhead(self._options.bulkhead, clock)
            limiters = None
            if self._shared is not None:
                shared = self._shared
                limiters = {
                    limit.name: shared(deployment, limit, clock)
                    for limit in self._options.rate_limits
                }
                self._limiters.extend(limiters.values())
            pipeline = StreamingPipeline(
                deployment,
                self._options,
                clock=clock,
                bulkhead=self._bulkhead,
                rate_limiters=limiters,
                rejection_error=refusal(deployment, self._provider),
            )
            for listener, lifecycle in self._listeners:
                pipeline.add_listener(listener, lifecycle=lifecycle)
            self._pipelines[deployment] = pipeline
        return pipeline

    async def settled(self) -> None:
        """Wait for the settlements still on their way to the shared store (at shutdown)."""
        waits = [
            settled()
            for limiter in self._limiters
            if (settled := getattr(limiter, "settled", None)) is not None
        ]
        await asyncio.gather(*waits)

    def all(self) -> tuple[StreamingPipeline, ...]:
        """Every pipeline made so far, in the order they were made."""
        return tuple(self._pipelines.values())

    def add_listener(self, listener: EventListener, *, lifecycle: bool = False) -> None:
        """Add `listener` to every pipeline, those made so far and those made later."""
        self._listeners.append((listener, lifecycle))
        for pipeline in self._pipelines.values():
            pipeline.add_listener(listener, lifecycle=lifecycle)
