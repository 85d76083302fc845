"""Redis connection settings of cache and pub/sub services, and pub/sub's reliable topics."""

from __future__ import annotations

import pytest

from sidecar.config import (
    CacheServiceConfig,
    ConfigError,
    PubSubServiceConfig,
    RedisConnectionSettings,
    parse_config,
)
from sidecar.config.backends import backend_names


def _problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return caught.value.problems


@pytest.mark.parametrize("model", [CacheServiceConfig, PubSubServiceConfig])
def test_cache_and_pubsub_carry_every_redis_setting(model: type[RedisConnectionSettings]) -> None:
    assert issubclass(model, RedisConnectionSettings)
    assert set(RedisConnectionSettings.model_fields) <= set(model.model_fields)
    assert model.model_fields["backend"].default == "memory"


@pytest.mark.parametrize("service_type", ["cache", "pubsub"])
def test_every_redis_setting_parses(service_type: str) -> None:
    config = parse_config(
        "services:\n"
        "  shared:\n"
        f"    type: {service_type}\n"
        "    backend: redis\n"
        "    host: redis.internal\n"
        "    port: 6380\n"
        "    database: 3\n"
        "    username: app\n"
        "    password: ${REDIS_PASSWORD}\n"
        "    tls: true\n"
        "    key_prefix: 'orders:'\n"
        "    connection_pool: {max_connections: 32}\n",
        environ={"REDIS_PASSWORD": "pw"},
    )
    service = config.services["shared"]
    assert service.backend == "redis"
    assert (service.host, service.port, service.database) == ("redis.internal", 6380, 3)
    assert service.username == "app"
    assert service.password is not None
    assert service.password.get_secret_value() == "pw"
    assert (service.tls.enabled, service.key_prefix) == (True, "orders:")
    assert config.policies_for("shared").connection_pool.max_connections == 32


def test_redis_settings_on_another_backend_are_refused() -> None:
    # Without any backend, Redis settings mean backend: redis (the specification's shape).
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "services:\n  kv: {type: cache, backend: memory, host: elsewhere, port: 7000}\n",
            environ={},
        )
    assert caught.value.problems == [("services.kv", "host, port are only for backend: redis")]


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("port: 0", ("services.kv.port", "must be >= 1")),
        ("port: 65536", ("services.kv.port", "must be <= 65535")),
        ("port: redis", ("services.kv.port", "must be a whole number")),
        ("database: -1", ("services.kv.database", "must be >= 0")),
        ("tls: maybe", ("services.kv.tls", "must be true or false")),
        ("backend: mongo", ("services.kv.backend", "must be one of: memory, redis (got 'mongo')")),
    ],
)
def test_bad_redis_settings_are_rejected(setting: str, problem: tuple[str, str]) -> None:
    assert _problems(f"services:\n  kv: {{type: cache, {setting}}}\n") == [problem]


def test_pubsub_reliability_defaults() -> None:
    pubsub = PubSubServiceConfig()
    assert pubsub.reliable_topics == ()
    assert pubsub.max_stream_length == 100_000
    assert pubsub.visibility_timeout == 30.0
    assert pubsub.max_deliveries == 5


def test_reliable_topics_parse_with_the_redis_backend() -> None:
    config = parse_config(
        "services:\n"
        "  events:\n"
        "    type: pubsub\n"
        "    backend: redis\n"
        "    reliable_topics: ['orders.*', 'billing']\n"
        "    max_stream_length: 5000\n"
        "    visibility_timeout: 1m30s\n"
        "    max_deliveries: 3\n",
        environ={},
    )
    events = config.services["events"]
    assert isinstance(events, PubSubServiceConfig)
    assert events.reliable_topics == ("orders.*", "billing")
    assert events.max_stream_length == 5000
    assert events.visibility_timeout == 90.0
    assert events.max_deliveries == 3


@pytest.mark.parametrize("backend", ["", "backend: memory, "])
def test_reliable_topics_need_the_redis_backend(backend: str) -> None:
    assert _problems(
        f"services:\n  events: {{type: pubsub, {backend}reliable_topics: ['orders.*']}}\n"
    ) == [
        (
            "services.events.reliable_topics",
            "backend memory has no reliable topics (they need one of: kafka, nats, rabbitmq, "
            "redis)",
        )
    ]


def test_empty_reliable_topics_need_no_redis() -> None:
    for value in ("[]", "null"):
        config = parse_config(
            f"services:\n  events: {{type: pubsub, reliable_topics: {value}}}\n", environ={}
        )
        events = config.services["events"]
        assert isinstance(events, PubSubServiceConfig)
        assert events.reliable_topics == ()


def test_invalid_backend_is_reported_once_not_as_a_reliable_topics_problem() -> None:
    known = ", ".join(backend_names("pubsub"))
    assert _problems(
        "services:\n  events: {type: pubsub, backend: nosuch, reliable_topics: ['a']}\n"
    ) == [("services.events.backend", f"must be one of: {known} (got 'nosuch')")]


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("max_stream_length: 0", ("services.events.max_stream_length", "must be >= 1")),
        ("max_deliveries: 0", ("services.events.max_deliveries", "must be >= 1")),
        ("reliable_topics: orders", ("services.events.reliable_topics", "must be a list")),
    ],
)
def test_bad_reliability_settings_are_rejected(setting: str, problem: tuple[str, str]) -> None:
    assert _problems(f"services:\n  events: {{type: pubsub, backend: redis, {setting}}}\n") == [
        problem
    ]


def test_bad_visibility_timeout_is_rejected() -> None:
    [(path, _)] = _problems(
        "services:\n  events: {type: pubsub, backend: redis, visibility_timeout: soon}\n"
    )
    assert path == "services.events.visibility_timeout"
