"""Per-service-type policy defaults: a Redis-backed cache or pubsub gives up on an attempt
after 5 s and counts a 1 s call as slow; others keep 30 s and 10 s; anything the user set,
in `integration:` or on the service, wins."""

from __future__ import annotations

from sidecar.config import parse_config
from sidecar.runtime.policies import pipeline_options

SERVICES = """
services:
  cache: {type: cache, backend: redis, key_prefix: "t:"}
  pubsub: {type: pubsub, backend: redis}
  db: {type: sql, backend: sqlite, path: ":memory:"}
"""


def attempt_and_slow(yaml: str, service: str) -> tuple[float | None, float | None]:
    options = pipeline_options(parse_config(yaml).policies_for(service))
    assert options.timeout is not None and options.circuit_breaker is not None
    return options.timeout.attempt_timeout, options.circuit_breaker.slow_call_duration


def test_redis_services_default_to_a_short_attempt_timeout_and_slow_call_duration() -> None:
    assert attempt_and_slow(SERVICES, "cache") == (5.0, 1.0)
    assert attempt_and_slow(SERVICES, "pubsub") == (5.0, 1.0)


def test_other_services_keep_the_integration_defaults() -> None:
    assert attempt_and_slow(SERVICES, "db") == (30.0, 10.0)


def test_a_value_set_in_integration_applies_to_every_service() -> None:
    yaml = "integration:\n  timeouts: {request: 30s}\n  circuit_breaker: {slow_call_duration: 3s}\n"
    assert attempt_and_slow(yaml + SERVICES, "cache") == (30.0, 3.0)


def test_integration_setting_another_field_keeps_the_type_default() -> None:
    yaml = "integration:\n  timeouts: {read: 10s}\n  circuit_breaker: {reset_timeout: 5s}\n"
    assert attempt_and_slow(yaml + SERVICES, "cache") == (5.0, 1.0)


def test_a_service_override_wins_over_the_type_default() -> None:
    yaml = """
services:
  cache:
    type: cache
    backend: redis
    timeouts: {request: 2s}
    circuit_breaker: {slow_call_duration: 500ms, slow_call_ratio: 0.8}
"""
    options = pipeline_options(parse_config(yaml).policies_for("cache"))
    assert options.timeout is not None and options.circuit_breaker is not None
    breaker = options.circuit_breaker
    assert (options.timeout.attempt_timeout, breaker.slow_call_duration) == (2.0, 0.5)
    assert breaker.slow_call_ratio == 0.8


def test_slow_call_ratio_zero_turns_the_rule_off() -> None:
    yaml = "integration:\n  circuit_breaker: {slow_call_ratio: 0}\n" + SERVICES
    options = pipeline_options(parse_config(yaml).policies_for("cache"))
    assert options.circuit_breaker is not None
    assert options.circuit_breaker.slow_call_ratio == 0.0
