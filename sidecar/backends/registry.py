"""Map a service's configured `type` and `backend` to the factory that builds it.

Factories import their client library lazily, so start-up time and memory depend only on
the backends actually configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidecar.errors import FailedPrecondition

__all__ = ["create_backend", "registered_backends"]


def _memory_cache(settings: Any) -> Any:
    from sidecar.backends.cache.memory import MemoryCache

    return MemoryCache(max_keys=settings.max_keys)


def _memory_broker(settings: Any) -> Any:
    from sidecar.backends.pubsub.memory import MemoryBroker

    return MemoryBroker()


_FACTORIES: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("cache", "memory"): _memory_cache,
    ("pubsub", "memory"): _memory_broker,
}


def _sql_postgres(settings: Any, policies: Any) -> Any:
    from sidecar.backends.sql.postgres import PostgresBackend, PostgresOptions

    pool, timeouts = _pool_and_timeouts(policies)
    return PostgresBackend(
        PostgresOptions(
            dsn=settings.dsn.get_secret_value() if settings.dsn else None,
            host=settings.host,
            port=settings.port,
            database=settings.database,
            user=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            read_only=settings.read_only,
            allow_privileged_role=settings.allow_privileged_role,
            min_size=pool.min_connections,
            max_size=pool.max_connections,
            acquire_timeout=pool.acquire_timeout,
            idle_timeout=pool.idle_timeout,
            connect_timeout=timeouts.connect,
            request_timeout=timeouts.request,
            statement_cache_size=settings.statement_cache_size,
            max_stream_connections=settings.max_stream_connections,
        )
    )


def _sql_sqlite(settings: Any, policies: Any) -> Any:
    from sidecar.backends.sql.sqlite import SqliteBackend, SqliteOptions

    pool, timeouts = _pool_and_timeouts(policies)
    return SqliteBackend(
        SqliteOptions(
            path=settings.path,
            read_only=settings.read_only,
            acquire_timeout=pool.acquire_timeout,
            request_timeout=timeouts.request,
        )
    )


def _pool_and_timeouts(policies: Any) -> tuple[Any, Any]:
    """The resolved `connection_pool` and `timeouts`, or their defaults without policies."""
    if policies is not None:
        return policies.connection_pool, policies.timeouts
    from sidecar.config import ConnectionPoolConfig, TimeoutsConfig

    return ConnectionPoolConfig(), TimeoutsConfig()


def _ai_model(settings: Any, policies: Any) -> Any:
    from sidecar.ai.build import model_service

    return model_service(settings, policies)


def _ai_alias(settings: Any, policies: Any) -> Any:
    from sidecar.ai.build import alias_service

    return alias_service(settings, policies)


# Factories of backends that keep a connection pool also take the service's resolved
# policies (`Config.policies_for(name)`): `connection_pool` sizes the pool, `timeouts` bound
# connecting and each request.
_POOLED_FACTORIES: dict[tuple[str, str], Callable[[Any, Any], Any]] = {
    ("sql", "postgres"): _sql_postgres,
    ("sql", "sqlite"): _sql_sqlite,
    # AI: `backend` is the provider; timeouts, breaker and retry come from the policies.
    ("ai_model", "openai"): _ai_model,
    ("ai_model", "anthropic"): _ai_model,
    ("ai_model", "huggingface"): _ai_model,
    ("ai_model", "echo"): _ai_model,
    ("ai_alias", "router"): _ai_alias,
}


def _redis_cache(settings: Any, name: str, connection: Any) -> Any:
    from sidecar.backends.cache._near_cache import NearCache
    from sidecar.backends.cache.redis import RedisCache

    near = settings.near_cache
    near_cache = (
        NearCache(
            max_entries=near.max_entries,
            max_value_size=near.max_value_size,
            max_ttl=near.max_ttl,
        )
        if near.enabled
        else None
    )
    return RedisCache(connection, name=name, key_prefix=settings.key_prefix, near_cache=near_cache)


def _redis_broker(settings: Any, name: str, connection: Any) -> Any:
    from sidecar.backends.pubsub.redis import RedisBroker
    from sidecar.backends.pubsub.redis_streams import with_reliable_topics

    broker = RedisBroker(connection, name=name, key_prefix=settings.key_prefix)
    # Reliable topics (if any) ride on the connection's client too.
    return with_reliable_topics(broker, connection.client, settings, name=name)


# Backends on a connection take their service name (errors report it as `target`) and the
# connection they share with the other services naming it.
_CONNECTED_FACTORIES: dict[tuple[str, str], Callable[[Any, str, Any], Any]] = {
    ("cache", "redis"): _redis_cache,
    ("pubsub", "redis"): _redis_broker,
}


def registered_backends() -> list[tuple[str, str]]:
    """Every (type, backend) pair the sidecar can build."""
    return sorted({*_FACTORIES, *_POOLED_FACTORIES, *_CONNECTED_FACTORIES})


def create_backend(
    settings: Any, policies: Any = None, name: str | None = None, connection: Any = None
) -> Any:
    """Build the backend for one service's settings (which carry `type` and `backend`).

    `policies` are the service's resolved policies (`Config.policies_for(name)`); backends
    that pool connections size their pool from them (defaults when None). `name` is the
    service's name (default: its type); `connection` the connection it names or implies.
    """
    connected = _CONNECTED_FACTORIES.get((settings.type, settings.backend))
    if connected is not None:
        return connected(settings, name or settings.type, connection)
    pooled = _POOLED_FACTORIES.get((settings.type, settings.backend))
    if pooled is not None:
        return pooled(settings, policies)
    factory = _FACTORIES.get((settings.type, settings.backend))
    if factory is None:
        raise FailedPrecondition(
            f"no backend {settings.backend!r} for service type {settings.type!r}",
            reason="UNSUPPORTED_BACKEND",
        )
    return factory(settings)
