"""Values the sidecar cannot run with are rejected with `must be ...` messages."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, parse_config


def _problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return caught.value.problems


@pytest.mark.parametrize(
    "listen",
    [
        "127.0.0.1:50051",
        "0.0.0.0:0",
        "localhost:8080",
        "sidecar.default.svc:443",
        "[::1]:50051",
        "[::]:50051",
        "unix:/run/sidecar.sock",
    ],
)
def test_listen_accepts_host_port_and_unix_socket(listen: str) -> None:
    config = parse_config(f"server:\n  listen: '{listen}'\n", environ={})
    assert config.server.listen == listen


@pytest.mark.parametrize(
    "listen", ["50051", ":50051", "localhost", "host:99999", "unix:", "unix:relative", "::1:5"]
)
def test_listen_rejects_anything_else(listen: str) -> None:
    [(path, message)] = _problems(f"server:\n  listen: '{listen}'\n")
    assert path == "server.listen"
    assert message.startswith(f"invalid listen address {listen!r}: use host:port")


def test_prometheus_listen_must_be_host_port() -> None:
    config = parse_config(
        "integration:\n  metrics: {prometheus_listen: '127.0.0.1:9464'}\n", environ={}
    )
    assert config.integration.metrics.prometheus_listen == "127.0.0.1:9464"
    [(path, message)] = _problems(
        "integration:\n  metrics: {prometheus_listen: 'unix:/tmp/m.sock'}\n"
    )
    assert path == "integration.metrics.prometheus_listen"
    assert message.startswith("invalid address 'unix:/tmp/m.sock': use host:port")


def test_max_connections_must_not_be_below_min_connections() -> None:
    assert _problems(
        "integration:\n  connection_pools:\n    default: {min_connections: 5, max_connections: 2}\n"
    ) == [
        (
            "integration.connection_pools.default.max_connections",
            "must be >= min_connections (5)",
        )
    ]


def test_only_the_default_pool_exists() -> None:
    assert _problems("integration:\n  connection_pools:\n    big: {max_connections: 2}\n") == [
        ("integration.connection_pools.big", "unknown field")
    ]


@pytest.mark.parametrize(("ratio", "ok"), [(0, True), (1, True), (0.5, True), (-0.1, False)])
def test_failure_ratio_is_between_zero_and_one(ratio: float, ok: bool) -> None:
    text = f"integration:\n  circuit_breaker: {{failure_ratio: {ratio}}}\n"
    if ok:
        assert parse_config(text, environ={}).integration.circuit_breaker.failure_ratio == ratio
    else:
        assert _problems(text) == [("integration.circuit_breaker.failure_ratio", "must be >= 0")]


def test_backoff_multiplier_is_at_least_one() -> None:
    assert _problems("integration:\n  retry_policy: {backoff_multiplier: 0.9}\n") == [
        ("integration.retry_policy.backoff_multiplier", "must be >= 1")
    ]


def test_counts_must_be_at_least_one() -> None:
    assert _problems(
        "integration:\n"
        "  circuit_breaker: {failure_threshold: 0, half_open_max_calls: 0}\n"
        "  bulkhead: {max_concurrent_calls: 0}\n"
        "  health_monitoring: {consecutive_failures: 0}\n"
        "services:\n  ps: {type: pubsub, subscriber_buffer: 0}\n"
    ) == [
        ("integration.circuit_breaker.failure_threshold", "must be >= 1"),
        ("integration.circuit_breaker.half_open_max_calls", "must be >= 1"),
        ("integration.bulkhead.max_concurrent_calls", "must be >= 1"),
        ("integration.health_monitoring.consecutive_failures", "must be >= 1"),
        ("services.ps.subscriber_buffer", "must be >= 1"),
    ]


def test_rate_limits_must_be_positive() -> None:
    assert _problems(
        "integration:\n  rate_limiting:\n"
        "    default: {requests_per_second: 0, burst_size: 0, max_queue: -1}\n"
    ) == [
        ("integration.rate_limiting.default.requests_per_second", "must be > 0"),
        ("integration.rate_limiting.default.burst_size", "must be >= 1"),
        ("integration.rate_limiting.default.max_queue", "must be >= 0"),
    ]


@pytest.mark.parametrize("name", ["a", "redis", "cache-2", "ai_model", "a" * 63])
def test_good_service_names(name: str) -> None:
    config = parse_config(f"services:\n  {name}: {{type: cache}}\n", environ={})
    assert list(config.services) == [name]


@pytest.mark.parametrize("name", ["Redis", "2cache", "_x", "-x", "a.b", "a" * 64])
def test_bad_service_names(name: str) -> None:
    [(_, message)] = _problems(f"services:\n  '{name}': {{type: cache}}\n")
    assert message.startswith(f"invalid service name {name!r}")


def test_inbound_rate_limits_are_keyed_by_method_or_star() -> None:
    config = parse_config(
        "server:\n  inbound_rate_limits:\n"
        "    '*': {requests_per_second: 100, burst_size: 200}\n"
        "    /integration.v1.CacheService/Get: {requests_per_second: 5.5, burst_size: 1}\n",
        environ={},
    )
    limits = config.server.inbound_rate_limits
    assert limits["*"].burst_size == 200
    assert limits["/integration.v1.CacheService/Get"].requests_per_second == 5.5
    assert _problems(
        "server:\n  inbound_rate_limits:\n"
        "    CacheService.Get: {requests_per_second: 1, burst_size: 1}\n"
    ) == [
        (
            'server.inbound_rate_limits["CacheService.Get"]',
            "invalid method 'CacheService.Get': use a full gRPC method name such as "
            "'/integration.v1.CacheService/Get', or '*' for every method",
        )
    ]


def test_inbound_limit_problems_name_the_method() -> None:
    assert _problems("server:\n  inbound_rate_limits:\n    '*': {requests_per_second: 1}\n") == [
        ('server.inbound_rate_limits["*"].burst_size', "required field is missing")
    ]


def test_log_level_and_compression_are_enumerations() -> None:
    config = parse_config("server: {log_level: debug, compression: gzip}\n", environ={})
    assert (config.server.log_level, config.server.compression) == ("debug", "gzip")
