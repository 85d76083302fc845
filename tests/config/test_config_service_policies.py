"""A service's partial policy overrides are merged over the `integration:` defaults."""

from __future__ import annotations

import pytest

from sidecar.config import (
    BulkheadConfig,
    CacheServiceConfig,
    Config,
    ConfigError,
    RateLimitConfig,
    RetryPolicyOverride,
    parse_config,
)

RATE_LIMITED = """
integration:
  rate_limiting:
    default: {requests_per_second: 10, burst_size: 20}
services:
"""


def test_partial_retry_override_keeps_the_other_defaults() -> None:
    config = parse_config(
        "integration:\n  retry_policy: {base_delay: 2s}\n"
        "services:\n  kv: {type: cache, retry_policy: {max_retries: 7}}\n",
        environ={},
    )
    retry = config.policies_for("kv").retry_policy
    assert retry.max_retries == 7
    assert retry.base_delay == 2.0  # from integration:
    assert retry.max_delay == 30.0  # built-in default
    assert retry.jitter is True


def test_service_without_overrides_gets_the_integration_policies() -> None:
    config = parse_config(
        "integration:\n  bulkhead: {max_concurrent_calls: 7}\nservices:\n  kv: {type: cache}\n",
        environ={},
    )
    assert config.policies_for("kv").bulkhead == BulkheadConfig(max_concurrent_calls=7)


def test_every_policy_can_be_overridden() -> None:
    config = parse_config(
        RATE_LIMITED + "  kv:\n"
        "    type: cache\n"
        "    circuit_breaker: {enabled: false}\n"
        "    rate_limit: {max_queue: 0}\n"
        "    bulkhead: {max_queued_calls: 0}\n"
        "    timeouts: {request: 2s}\n"
        "    connection_pool: {max_connections: 50}\n",
        environ={},
    )
    policies = config.policies_for("kv")
    assert policies.circuit_breaker.enabled is False
    assert policies.circuit_breaker.failure_threshold == 5
    assert policies.rate_limit == RateLimitConfig(
        requests_per_second=10, burst_size=20, max_queue=0
    )
    assert policies.bulkhead == BulkheadConfig(max_concurrent_calls=100, max_queued_calls=0)
    assert (policies.timeouts.connect, policies.timeouts.request) == (10.0, 2.0)
    assert policies.connection_pool.max_connections == 50
    assert policies.connection_pool.min_connections == 2


def test_inherited_rate_limit_applies_when_the_service_sets_none() -> None:
    config = parse_config(RATE_LIMITED + "  kv: {type: cache}\n", environ={})
    assert config.policies_for("kv").rate_limit == RateLimitConfig(
        requests_per_second=10, burst_size=20
    )


def test_explicit_null_rate_limit_turns_the_inherited_limit_off() -> None:
    config = parse_config(RATE_LIMITED + "  kv: {type: cache, rate_limit: null}\n", environ={})
    assert config.policies_for("kv").rate_limit is None


def test_service_can_set_a_limit_when_there_is_no_default() -> None:
    config = parse_config(
        "services:\n  kv: {type: cache, rate_limit: {requests_per_second: 5, burst_size: 1}}\n"
        "  other: {type: cache}\n",
        environ={},
    )
    assert config.policies_for("kv").rate_limit == RateLimitConfig(
        requests_per_second=5, burst_size=1
    )
    assert config.policies_for("other").rate_limit is None


def test_incomplete_limit_with_no_default_to_inherit_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "services:\n  kv: {type: cache, rate_limit: {requests_per_second: 5}}\n", environ={}
        )
    assert caught.value.problems == [
        ("services.kv.rate_limit.burst_size", "required field is missing")
    ]


def test_override_that_conflicts_with_an_inherited_value_is_reported_at_the_service() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "services:\n"
            "  kv: {type: cache, connection_pool: {min_connections: 50}}\n"
            "  jobs: {type: pubsub, retry_policy: {base_delay: 1m}}\n",
            environ={},
        )
    assert caught.value.problems == [
        ("services.kv.connection_pool.max_connections", "must be >= min_connections (50)"),
        ("services.jobs.retry_policy.max_delay", "must be >= base_delay (60s)"),
    ]


def test_override_values_are_validated_like_the_defaults() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "services:\n  kv: {type: cache, retry_policy: {max_retries: -1, typo: 1}}\n",
            environ={},
        )
    assert caught.value.problems == [
        ("services.kv.retry_policy.max_retries", "must be >= 0"),
        ("services.kv.retry_policy.typo", "unknown field"),
    ]


def test_policies_are_resolved_for_configs_built_in_python() -> None:
    config = Config(
        services={"kv": CacheServiceConfig(retry_policy=RetryPolicyOverride(max_retries=0))}
    )
    assert config.policies_for("kv").retry_policy.max_retries == 0


def test_unknown_service_has_no_policies() -> None:
    with pytest.raises(KeyError, match="no service named 'nope'"):
        Config().policies_for("nope")
