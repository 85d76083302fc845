"""Translate resolved configuration policies into resilience-core options."""

from __future__ import annotations

from sidecar.config import RateLimitConfig, ServicePolicies
from sidecar.resilience import (
    BulkheadOptions,
    CircuitBreakerOptions,
    PipelineOptions,
    RetryOptions,
    TimeoutOptions,
    TokenBucketOptions,
)

__all__ = ["pipeline_options", "token_bucket_options"]


def token_bucket_options(limit: RateLimitConfig) -> TokenBucketOptions:
    """Options of one configured rate limit (requests_per_second, burst_size, max_queue)."""
    return TokenBucketOptions(
        requests_per_second=limit.requests_per_second,
        burst_size=limit.burst_size,
        max_queue=limit.max_queue,
    )


def pipeline_options(policies: ServicePolicies) -> PipelineOptions:
    """The pipeline of one service from its fully resolved policies."""
    retry = policies.retry_policy
    breaker = policies.circuit_breaker
    return PipelineOptions(
        retry=RetryOptions(
            max_retries=retry.max_retries,
            base_delay=retry.base_delay,
            max_delay=retry.max_delay,
            backoff_multiplier=retry.backoff_multiplier,
            jitter=retry.jitter,
            budget_ratio=retry.budget_ratio,
            budget_min_retries_per_second=retry.budget_min_retries_per_second,
        )
        if retry.max_retries > 0
        else None,
        circuit_breaker=CircuitBreakerOptions(
            failure_threshold=breaker.failure_threshold,
            reset_timeout=breaker.reset_timeout,
            min_reset_timeout=breaker.min_reset_timeout,
            failure_ratio=breaker.failure_ratio,
            minimum_throughput=breaker.minimum_throughput,
            sampling_duration=breaker.monitoring_period,
            half_open_max_calls=breaker.half_open_max_calls,
            slow_call_duration=breaker.slow_call_duration,
            slow_call_ratio=breaker.slow_call_ratio,
        )
        if breaker.enabled
        else None,
        rate_limit=token_bucket_options(policies.rate_limit) if policies.rate_limit else None,
        bulkhead=BulkheadOptions(
            max_concurrent_calls=policies.bulkhead.max_concurrent_calls,
            max_queued_calls=policies.bulkhead.max_queued_calls,
        ),
        timeout=TimeoutOptions(attempt_timeout=policies.timeouts.request),
    )
