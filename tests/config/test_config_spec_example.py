"""The configuration example of the original specification, as far as it is supported."""

from __future__ import annotations

import pytest
import yaml

from sidecar.config import (
    SERVICE_TYPES,
    CacheServiceConfig,
    CloudServiceConfig,
    ConfigError,
    RateLimitConfig,
    SqlServiceConfig,
    parse_config,
)

# Verbatim from the specification's "Integration Configuration" section.
SPEC_INTEGRATION = """\
integration:
  connection_pools:
    default:
      min_connections: 2
      max_connections: 10
      acquire_timeout: 10s
      idle_timeout: 5m

  retry_policy:
    max_retries: 3
    base_delay: 1s
    max_delay: 30s
    backoff_multiplier: 2
    jitter: true

  circuit_breaker:
    failure_threshold: 5
    reset_timeout: 30s
    monitoring_period: 10s

  rate_limiting:
    default:
      requests_per_second: 10
      burst_size: 20

  timeouts:
    connect: 10s
    request: 30s
    read: 30s

  health_monitoring:
    check_interval: 30s
    timeout: 5s
    consecutive_failures: 3

  metrics:
    enabled: true
    export_interval: 15s
    retention_period: 7d
"""

SPEC_SERVICES = """\
services:
  openai:
    type: ai_model
    endpoint: https://api.openai.com/v1
    auth:
      type: bearer
      token: ${OPENAI_API_KEY}
    rate_limit:
      requests_per_minute: 3500
      tokens_per_minute: 90000

  postgresql:
    type: database
    host: localhost
    port: 5432
    database: parallel_ai
    username: ${DB_USERNAME}
    password: ${DB_PASSWORD}
    pool:
      max_connections: 20
      idle_timeout: 30s

  redis:
    type: cache
    host: localhost
    port: 6379
    database: 0
    password: ${REDIS_PASSWORD}

  aws:
    type: cloud
    region: us-east-1
    credentials:
      access_key_id: ${AWS_ACCESS_KEY_ID}
      secret_access_key: ${AWS_SECRET_ACCESS_KEY}
"""

SPEC_ENV = {
    "OPENAI_API_KEY": "sk-test",
    "DB_USERNAME": "app",
    "DB_PASSWORD": "pw",
    "REDIS_PASSWORD": "pw",
    "AWS_ACCESS_KEY_ID": "AKIA",
    "AWS_SECRET_ACCESS_KEY": "secret",
}


def test_spec_integration_section_parses() -> None:
    integration = parse_config(SPEC_INTEGRATION, environ={}).integration
    assert integration.connection_pools.default.idle_timeout == 300.0
    assert integration.retry_policy.max_delay == 30.0
    assert integration.circuit_breaker.reset_timeout == 30.0
    assert integration.rate_limiting.default == RateLimitConfig(
        requests_per_second=10, burst_size=20, max_queue=1000
    )
    assert integration.timeouts.read == 30.0
    assert integration.health_monitoring.consecutive_failures == 3
    assert integration.metrics.retention_period == 7 * 86400.0


def test_spec_integration_values_equal_the_built_in_defaults_apart_from_rate_limit() -> None:
    parsed = parse_config(SPEC_INTEGRATION, environ={}).integration
    defaults = parse_config("", environ={}).integration
    assert parsed.model_copy(update={"rate_limiting": defaults.rate_limiting}) == defaults


def test_the_spec_services_load_verbatim_each_as_what_it_names() -> None:
    config = parse_config(SPEC_INTEGRATION + SPEC_SERVICES, environ=SPEC_ENV, source="spec.yaml")
    kinds = {name: (service.type, service.backend) for name, service in config.services.items()}
    assert kinds == {
        "openai": ("ai_model", "openai"),
        "postgresql": ("sql", "postgres"),  # type: database
        "redis": ("cache", "redis"),  # Redis settings without backend: mean Redis
        "aws": ("cloud", "aws"),
    }
    postgresql = config.services["postgresql"]
    assert isinstance(postgresql, SqlServiceConfig)
    assert (postgresql.host, postgresql.port, postgresql.database) == (
        "localhost",
        5432,
        "parallel_ai",
    )
    assert postgresql.username == "app"
    pool = config.policies_for("postgresql").connection_pool  # `pool:` is connection_pool
    assert (pool.max_connections, pool.idle_timeout, pool.min_connections) == (20, 30.0, 2)
    aws = config.services["aws"]
    assert isinstance(aws, CloudServiceConfig)
    assert aws.region == "us-east-1" and aws.credentials is not None
    assert aws.credentials.secret_access_key.get_secret_value() == "secret"
    assert "AKIA" not in repr(aws) and "SecretStr('**********')" in repr(aws)
    assert (config.connection_of("redis"), config.connection_of("aws")) == ("redis", "aws")
    assert SERVICE_TYPES[:6] == ("cache", "pubsub", "sql", "ai_model", "ai_alias", "cloud")


def _spec_service(name: str) -> str:
    """One service of SPEC_SERVICES, verbatim, as a document of its own."""
    lines = SPEC_SERVICES.splitlines(keepends=True)
    start = lines.index(f"  {name}:\n")
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i].startswith("  ") and lines[i][2] != " "
        ),
        len(lines),
    )
    return "services:\n" + "".join(lines[start:end])


def test_spec_redis_service_parses_with_the_redis_backend() -> None:
    text = _spec_service("redis").replace(
        "    type: cache\n", "    type: cache\n    backend: redis\n"
    )
    assert "backend: redis" in text
    config = parse_config(text, environ=SPEC_ENV)
    redis = config.services["redis"]
    assert isinstance(redis, CacheServiceConfig)
    assert (redis.type, redis.backend) == ("cache", "redis")
    assert (redis.host, redis.port, redis.database) == ("localhost", 6379, 0)
    assert redis.password is not None
    assert redis.password.get_secret_value() == SPEC_ENV["REDIS_PASSWORD"]
    assert (redis.username, redis.tls.enabled, redis.key_prefix) == (None, False, "")
    # The client's pool size is the resolved connection_pool.max_connections.
    assert config.policies_for("redis").connection_pool.max_connections == 10


def test_spec_redis_service_without_backend_is_a_redis_cache() -> None:
    redis = parse_config(_spec_service("redis"), environ=SPEC_ENV).services["redis"]
    assert (redis.type, redis.backend) == ("cache", "redis")


def test_redis_settings_on_an_explicit_memory_backend_are_refused() -> None:
    text = _spec_service("redis").replace(
        "    type: cache\n", "    type: cache\n    backend: memory\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=SPEC_ENV)
    assert caught.value.problems == [
        ("services.redis", "database, host, password, port are only for backend: redis")
    ]


def test_spec_services_without_their_environment_name_every_missing_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(SPEC_SERVICES, environ={})
    assert ("services.openai.auth.token", "environment variable OPENAI_API_KEY is not set") in (
        caught.value.problems
    )
    missing = {m for _, m in caught.value.problems if m.startswith("environment variable")}
    assert len(missing) == len(SPEC_ENV)


def test_spec_example_is_the_shape_of_the_whole_file() -> None:
    document = yaml.safe_load(SPEC_INTEGRATION + SPEC_SERVICES)
    assert set(document) == {"integration", "services"}


@pytest.mark.parametrize(
    ("setting", "default"), [("export_interval: 60s", "15s"), ("retention_period: 30d", "7d")]
)
def test_metrics_settings_the_sidecar_cannot_honour_are_refused_clearly(
    setting: str, default: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"integration:\n  metrics: {{{setting}}}\n", environ={})
    name = setting.split(":", maxsplit=1)[0]
    ((path, message),) = caught.value.problems
    assert path == f"integration.metrics.{name}"
    assert message.startswith(f"{name} is not the sidecar's to set")
    assert f"only the default {default} is accepted" in message
