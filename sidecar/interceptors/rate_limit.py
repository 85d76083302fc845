"""Inbound rate limits per gRPC method: a token bucket per configured method (or "*" for
every method without its own), checked without waiting; an empty bucket answers
RESOURCE_EXHAUSTED with a RetryInfo saying when a token will be there."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from sidecar.errors import ResourceExhausted
from sidecar.interceptors._handlers import Continuation, Handler, rejecting_handler
from sidecar.resilience import SYSTEM_CLOCK, Clock, TokenBucket, TokenBucketOptions

__all__ = ["InboundRateLimitInterceptor"]

_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class InboundRateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuse calls beyond each method's rate.

    Args:
        limits: full method name (`/integration.v1.CacheService/Get`) or `*` -> bucket options.
        clock: time source, injected by tests.
    """

    def __init__(
        self, limits: Mapping[str, TokenBucketOptions], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._buckets = {method: TokenBucket(opts, clock) for method, opts in limits.items()}
        self._buckets.pop("*", None)
        self._per_method_fallback: dict[str, TokenBucket] = {}
        self._fallback_options = limits.get("*")
        self._clock = clock

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_EXEMPT_PREFIXES):
            return handler
        bucket = self._bucket_for(method)
        if bucket is None or bucket.try_acquire(1):
            return handler
        wait = _seconds_until_token(bucket)
        return rejecting_handler(
            handler,
            lambda: ResourceExhausted(
                f"inbound rate limit of {method} exceeded",
                reason="RATE_LIMITED",
                metadata={"method": method},
                retry_after=wait,
            ),
        )

    def _bucket_for(self, method: str) -> TokenBucket | None:
        bucket = self._buckets.get(method)
        if bucket is not None or self._fallback_options is None:
            return bucket
        # "*" gives every other method a bucket of its own with the same options.
        bucket = self._per_method_fallback.get(method)
        if bucket is None:
            bucket = TokenBucket(self._fallback_options, self._clock)
            self._per_method_fallback[method] = bucket
        return bucket


def _seconds_until_token(bucket: TokenBucket) -> float:
    snapshot = bucket.snapshot()
    missing = max(1.0 - snapshot.available, 0.0)
    return missing / snapshot.rate if snapshot.rate > 0 else 1.0
