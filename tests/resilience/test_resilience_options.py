"""Every options class: its defaults, and the message each bad value gets."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.resilience import (
    BulkheadOptions,
    CircuitBreakerOptions,
    PipelineOptions,
    RetryOptions,
    TimeoutOptions,
    TokenBucketOptions,
)


def test_circuit_breaker_options_defaults() -> None:
    options = CircuitBreakerOptions()
    assert (
        options.enabled,
        options.failure_threshold,
        options.reset_timeout,
        options.failure_ratio,
        options.minimum_throughput,
        options.sampling_duration,
        options.half_open_max_calls,
    ) == (True, 5, 30.0, 0.5, 20, 10.0, 1)


def test_retry_options_defaults() -> None:
    options = RetryOptions()
    assert (
        options.max_retries,
        options.base_delay,
        options.max_delay,
        options.backoff_multiplier,
        options.jitter,
        options.budget_ratio,
        options.budget_min_retries_per_second,
        options.budget_window,
    ) == (3, 1.0, 30.0, 2.0, True, 0.2, 10.0, 10.0)


def test_token_bucket_options_defaults() -> None:
    assert TokenBucketOptions(requests_per_second=5, burst_size=10).max_queue == 1000


def test_bulkhead_options_defaults() -> None:
    options = BulkheadOptions()
    assert (options.max_concurrent_calls, options.max_queued_calls) == (100, 100)


def test_timeout_options_defaults() -> None:
    options = TimeoutOptions()
    assert (options.attempt_timeout, options.total_timeout) == (30.0, None)


def test_pipeline_options_default_to_every_strategy_off() -> None:
    options = PipelineOptions()
    assert (
        options.retry,
        options.circuit_breaker,
        options.rate_limit,
        options.bulkhead,
        options.timeout,
    ) == (None, None, None, None, None)


_BUCKET = {"requests_per_second": 1.0, "burst_size": 1.0}


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (CircuitBreakerOptions, {"failure_threshold": -1}, "failure_threshold must be >= 0"),
        (CircuitBreakerOptions, {"reset_timeout": 0}, "reset_timeout must be > 0"),
        (CircuitBreakerOptions, {"failure_ratio": 1.5}, "failure_ratio must be between 0 and 1"),
        (CircuitBreakerOptions, {"minimum_throughput": 0}, "minimum_throughput must be >= 1"),
        (CircuitBreakerOptions, {"sampling_duration": 0}, "sampling_duration must be > 0"),
        (CircuitBreakerOptions, {"half_open_max_calls": 0}, "half_open_max_calls must be >= 1"),
        (RetryOptions, {"max_retries": -1}, "max_retries must be >= 0"),
        (RetryOptions, {"base_delay": -0.1}, "base_delay must be >= 0"),
        (RetryOptions, {"base_delay": 5, "max_delay": 1}, "max_delay must be >= base_delay"),
        (RetryOptions, {"backoff_multiplier": 0.5}, "backoff_multiplier must be >= 1"),
        (RetryOptions, {"budget_ratio": -1}, "budget_ratio must be >= 0"),
        (
            RetryOptions,
            {"budget_min_retries_per_second": -1},
            "budget_min_retries_per_second must be >= 0",
        ),
        (RetryOptions, {"budget_window": 0}, "budget_window must be > 0"),
        (
            TokenBucketOptions,
            {**_BUCKET, "requests_per_second": 0},
            "requests_per_second must be > 0",
        ),
        (TokenBucketOptions, {**_BUCKET, "burst_size": 0}, "burst_size must be > 0"),
        (TokenBucketOptions, {**_BUCKET, "max_queue": -1}, "max_queue must be >= 0"),
        (BulkheadOptions, {"max_concurrent_calls": 0}, "max_concurrent_calls must be >= 1"),
        (BulkheadOptions, {"max_queued_calls": -1}, "max_queued_calls must be >= 0"),
        (TimeoutOptions, {"attempt_timeout": 0}, "attempt_timeout must be > 0 or None"),
        (TimeoutOptions, {"total_timeout": -1}, "total_timeout must be > 0 or None"),
    ],
)
def test_options_validation_names_the_bad_field(
    factory: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        factory(**kwargs)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_options_reject_non_finite_durations(value: float) -> None:
    with pytest.raises(ValueError, match="reset_timeout must be > 0"):
        CircuitBreakerOptions(reset_timeout=value)
