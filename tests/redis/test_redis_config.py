"""Configuring Redis backends and global rate limits: validation, and what gets built."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sidecar.backends.cache.near_cache import NearCache
from sidecar.backends.cache.redis import RedisCache
from sidecar.backends.pubsub.redis import RedisBroker
from sidecar.backends.ratelimit.redis import RedisTokenBucket
from sidecar.backends.registry import registered_backends
from sidecar.config import ConfigError, parse_config
from sidecar.connections.redis import RedisConnection
from sidecar.resilience import TokenBucket
from sidecar.runtime import Integrations, build_integrations

SERVICES = """
services:
  shared:
    type: cache
    backend: redis
    key_prefix: "app1:"
    connection_pool: {max_connections: 7}
  events: {type: pubsub, backend: redis}
  local:
    type: cache
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    return str(raised.value)


@pytest.fixture
async def built() -> AsyncIterator[Integrations]:
    config = parse_config(
        SERVICES
        + """
  limited:
    type: cache
    rate_limit: {requests_per_second: 5, burst_size: 2, store: redis, redis_target: shared}
  plain:
    type: cache
    rate_limit: {requests_per_second: 5, burst_size: 2}
"""
    )
    integrations = build_integrations(config)
    yield integrations
    await integrations.close()


def test_redis_store_without_a_target_is_refused_at_its_path() -> None:
    text = SERVICES + "    rate_limit: {requests_per_second: 1, burst_size: 1, store: redis}\n"
    assert "services.local.rate_limit.redis_target: store: redis needs redis_target" in problems(
        text
    )


def test_redis_target_that_is_not_redis_backed_is_refused() -> None:
    text = SERVICES + (
        "    rate_limit: {requests_per_second: 1, burst_size: 1, store: redis, "
        "redis_target: local}\n"
    )
    assert (
        "services.local.rate_limit.redis_target: 'local' is not a service with backend: redis"
        in problems(text)
    )


def test_redis_target_naming_no_service_is_refused() -> None:
    text = SERVICES + (
        "    rate_limit: {requests_per_second: 1, burst_size: 1, store: redis, "
        "redis_target: nowhere}\n"
    )
    assert "'nowhere' is not a service with backend: redis" in problems(text)


def test_inherited_redis_target_is_reported_once_at_the_default() -> None:
    text = (
        """
integration:
  rate_limiting:
    default: {requests_per_second: 1, burst_size: 1, store: redis, redis_target: local}
"""
        + SERVICES
    )
    found = problems(text)
    assert found.count("redis_target") == 1
    assert "integration.rate_limiting.default.redis_target" in found


def test_local_store_is_the_default() -> None:
    config = parse_config(SERVICES + "    rate_limit: {requests_per_second: 1, burst_size: 1}\n")
    limit = config.policies_for("local").rate_limit
    assert limit is not None and (limit.store, limit.redis_target) == ("local", None)


def test_registry_builds_redis_caches_and_brokers() -> None:
    assert {("cache", "redis"), ("pubsub", "redis")} <= set(registered_backends())


async def test_redis_services_get_redis_backends_with_their_pool_and_name(
    built: Integrations,
) -> None:
    shared, events = built.get("shared"), built.get("events")
    assert shared is not None and isinstance(shared.backend, RedisCache)
    assert events is not None and isinstance(events.backend, RedisBroker)
    connection = built.connections.get("shared")  # the service's implicit connection
    assert isinstance(connection, RedisConnection)
    pool = connection.client.connection_pool
    assert (pool.max_connections, pool.connection_kwargs["client_name"]) == (7, "sidecar:shared")


async def test_redis_store_limit_is_a_shared_bucket_keyed_by_the_limited_service(
    built: Integrations,
) -> None:
    limited, plain, shared = built.get("limited"), built.get("plain"), built.get("shared")
    assert limited is not None and plain is not None and shared is not None
    limiter = limited.pipeline.rate_limiter
    assert isinstance(limiter, RedisTokenBucket)
    assert limiter.key == "app1:sidecar:ratelimit:limited"
    assert isinstance(plain.pipeline.rate_limiter, TokenBucket)


def test_a_near_cache_needs_the_redis_backend() -> None:
    message = problems("services:\n  c: {type: cache, near_cache: {enabled: true}}\n")
    assert "services.c" in message
    assert "near_cache is only for backend: redis" in message


async def test_an_enabled_near_cache_is_built_on_the_redis_cache() -> None:
    config = parse_config(
        "services:\n  c:\n    type: cache\n    backend: redis\n"
        "    near_cache: {enabled: true, max_entries: 5, max_value_size: 1KiB, max_ttl: 2s}\n"
    )
    integrations = build_integrations(config)
    try:
        backend = integrations.resolve("cache", "c").backend
        assert isinstance(backend, NearCache)  # the decorator, over the Redis cache
        assert isinstance(backend.inner, RedisCache)
        assert backend.tracking is not None
    finally:
        await integrations.close()
