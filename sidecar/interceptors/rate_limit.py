"""Inbound rate limits per gRPC method: a token bucket per configured method (or "*" for
every method without its own), checked without waiting; an empty bucket answers
RESOURCE_EXHAUSTED with a RetryInfo saying when a token will be there."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sidecar.errors import ResourceExhausted
from sidecar.resilience import SYSTEM_CLOCK, Clock, TokenBucket, TokenBucketOptions

__all__ = ["InboundRateLimits"]


class InboundRateLimits:
    """The inbound buckets, one per limited method.

    Args:
        limits: full method name (`/integration.v1.CacheService/Get`) or `*` -> bucket options.
        clock: time source, injected by tests.
    """

    def __init__(
        self, limits: Mapping[str, TokenBucketOptions], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._buckets = {method: TokenBucket(opts, clock) for method, opts in limits.items()}
        self._buckets.pop("*", None)
        self._fallback_options = limits.get("*")
        self._clock = clock

    def guard(self, method: str) -> Callable[[], None] | None:
        """A check that takes one token of `method`'s bucket or raises ResourceExhausted;
        None when the method is not limited. Called once per method, at registration."""
        bucket = self._buckets.get(method)
        if bucket is None and self._fallback_options is not None:
            # "*" gives every other method a bucket of its own with the same options.
            bucket = self._buckets[method] = TokenBucket(self._fallback_options, self._clock)
        if bucket is None:
            return None
        limited = bucket

        def take_token() -> None:
            if not limited.try_acquire(1):
                raise ResourceExhausted(
                    f"inbound rate limit of {method} exceeded",
                    reason="RATE_LIMITED",
                    metadata={"method": method},
                    retry_after=_seconds_until_token(limited),
                )

        return take_token


def _seconds_until_token(bucket: TokenBucket) -> float:
    snapshot = bucket.snapshot()
    missing = max(1.0 - snapshot.available, 0.0)
    return missing / snapshot.rate if snapshot.rate > 0 else 1.0
