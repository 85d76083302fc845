"""The streaming pipelines of one `ai_model` service's deployments, and their refusals.

Each deployment (`service/model`) runs its calls through one `StreamingPipeline`: its own
circuit breaker, its own requests-per-minute and tokens-per-minute buckets, its own cooldown
(set by an upstream 429's Retry-After), and the service's bulkhead, shared by all its
deployments. The pipelines are made on first use and kept by the service (`ModelService`),
so every route naming a deployment (an alias, the service, `service/model`) shares one, and
AdminService and the breaker metrics report the breakers that really run.

A refusal becomes a `sidecar.errors` type naming the deployment:

    cooling down     ResourceExhausted  UPSTREAM_RATE_LIMITED  (retry_after: cooldown left)
    too many tokens  ResourceExhausted  TOKEN_LIMIT_EXCEEDED   (never fits this budget)
    breaker open     Unavailable        CIRCUIT_OPEN           (retry_after: until the probe)
    bulkhead full    ResourceExhausted  BULKHEAD_FULL
    no tokens        ResourceExhausted  RATE_LIMITED           (retry_after: refill time)
"""

from __future__ import annotations

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
    StreamingOptions,
    StreamingPipeline,
    TokenBucketOptions,
)

__all__ = ["REQUESTS", "TOKENS", "DeploymentPipelines", "per_minute", "refusal"]

REQUESTS = "requests"
"""The limiter taking one token per call (`requests_per_minute`)."""
TOKENS = "tokens"
"""The weighted limiter taking the call's estimated LLM tokens (`tokens_per_minute`)."""


def per_minute(name: str, limit: float, max_queue: int, *, weighted: bool) -> RateLimit:
    """A limit of `limit` per minute: a bucket of one minute's worth, refilled evenly (no
    cliff at the minute's turn). A request bucket holds at least one request."""
    burst = limit if weighted else max(limit, 1.0)
    return RateLimit(name, TokenBucketOptions(limit / 60.0, burst, max_queue), weighted=weighted)


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
    """

    def __init__(self, provider: str, options: StreamingOptions) -> None:
        self._provider = provider
        self._options = options
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
            pipeline = StreamingPipeline(
                deployment,
                self._options,
                clock=clock,
                bulkhead=self._bulkhead,
                rejection_error=refusal(deployment, self._provider),
            )
            for listener, lifecycle in self._listeners:
                pipeline.add_listener(listener, lifecycle=lifecycle)
            self._pipelines[deployment] = pipeline
        return pipeline

    def all(self) -> tuple[StreamingPipeline, ...]:
        """Every pipeline made so far, in the order they were made."""
        return tuple(self._pipelines.values())

    def add_listener(self, listener: EventListener, *, lifecycle: bool = False) -> None:
        """Add `listener` to every pipeline, those made so far and those made later."""
        self._listeners.append((listener, lifecycle))
        for pipeline in self._pipelines.values():
            pipeline.add_listener(listener, lifecycle=lifecycle)
