"""The shared Redis plumbing: `create_client` settings and the error mapping."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from redis import exceptions as rex
from redis.asyncio import Connection, SSLConnection

from sidecar.config import CacheServiceConfig
from sidecar.connections.redis.client import (
    create_client,
    glob_escape,
    map_redis_error,
    redis_errors,
)
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)


async def test_client_takes_every_connection_setting_and_the_pool_size() -> None:
    settings = CacheServiceConfig(
        backend="redis",
        host="redis.internal",
        port=6380,
        database=3,
        username="app",
        password=SecretStr("s3cret"),
    )
    client = create_client(settings, max_connections=7, client_name="sidecar:cache")
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    assert (pool.max_connections, pool.connection_class) == (7, Connection)
    assert {k: kwargs[k] for k in ("host", "port", "db", "username", "password")} == {
        "host": "redis.internal",
        "port": 6380,
        "db": 3,
        "username": "app",
        "password": "s3cret",
    }
    assert (kwargs["client_name"], kwargs["protocol"]) == ("sidecar:cache", 2)
    await client.aclose()


async def test_client_with_tls_uses_ssl_connections() -> None:
    client = create_client(CacheServiceConfig(backend="redis", tls=True))
    assert client.connection_pool.connection_class is SSLConnection
    await client.aclose()


MAPPED = [
    (rex.ConnectionError("refused"), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (rex.BusyLoadingError("LOADING"), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (rex.AuthenticationError("WRONGPASS"), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (ConnectionResetError(), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (rex.TimeoutError("slow"), DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (rex.ResponseError("WRONGTYPE Operation against a key"), FailedPrecondition, "WRONG_TYPE"),
    (
        rex.ResponseError("value is not an integer or out of range"),
        FailedPrecondition,
        "NOT_AN_INTEGER",
    ),
    (
        rex.ResponseError("increment or decrement would overflow"),
        FailedPrecondition,
        "INTEGER_OVERFLOW",
    ),
    (rex.ResponseError("OOM command not allowed"), ResourceExhausted, "CACHE_FULL"),
    (rex.ResponseError("READONLY You can't write"), Unavailable, "UPSTREAM_UNAVAILABLE"),
    (rex.ResponseError("unknown command 'LPOP'"), FailedPrecondition, "UNSUPPORTED_OPERATION"),
    (rex.InvalidResponse("garbage"), Unavailable, "UPSTREAM_UNAVAILABLE"),
]


@pytest.mark.parametrize(
    ("error", "kind", "reason"), MAPPED, ids=[repr(case[0]) for case in MAPPED]
)
def test_redis_error_maps_to_the_sidecar_error_with_its_reason(
    error: Exception, kind: type[SidecarError], reason: str
) -> None:
    mapped = map_redis_error(error, "cache")
    assert (type(mapped), mapped.reason if mapped else None) == (kind, reason)
    assert mapped is not None and mapped.metadata == {"target": "cache"}


def test_mapped_error_is_raised_from_the_original() -> None:
    original = rex.ConnectionError("refused")
    with pytest.raises(Unavailable) as raised, redis_errors("cache"):
        raise original
    assert raised.value.__cause__ is original


def test_other_exceptions_pass_through_the_error_mapping_unchanged() -> None:
    with pytest.raises(KeyError), redis_errors("cache"):
        raise KeyError("not redis")


def test_connection_error_message_does_not_leak_the_redis_text() -> None:
    mapped = map_redis_error(rex.ConnectionError("Error connecting to secret-host:6379"), "c")
    assert mapped is not None and "secret-host" not in mapped.message


@pytest.mark.parametrize(
    ("prefix", "escaped"),
    [("app:", "app:"), ("a*b?", "a\\*b\\?"), ("[x]\\", "\\[x\\]\\\\")],
)
def test_glob_escape_escapes_every_glob_character(prefix: str, escaped: str) -> None:
    assert glob_escape(prefix) == escaped
