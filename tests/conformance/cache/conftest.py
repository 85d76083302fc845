"""The table of cache backends the conformance suite runs against, and their fixtures.

Every backend is built the way the sidecar builds it, through its spec in the registry. A
row names the backend and how it is set up; a backend registered in
`sidecar.config.backends` without a row of its own runs with its defaults and no connection.
A test marked `needs("hashes")` (a family) runs only on backends whose spec lists it.

`elapse` makes time pass: the fake clock of the build context for backends that keep time
themselves; for Redis, the test's keys' TTLs are shortened by `seconds` (PEXPIRE; a key
whose TTL runs out is deleted), which is what a real wait would do to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import pytest
import redis.asyncio as aioredis
from redis_server import redis_address, unique_prefix
from support import RedisConnect

from sidecar.backends.cache import CacheBackend
from sidecar.backends.cache.near_cache import NearCache
from sidecar.backends.registry import build_backend, spec_for
from sidecar.backends.spec import BuildContext
from sidecar.config import CacheServiceConfig, Config
from sidecar.config.backends import backend_names
from sidecar.connections import Connection
from sidecar.testing import FakeClock

__all__ = ["redis_address"]

Elapse = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    """One backend set up one way."""

    id: str
    backend: str
    redis: bool = False
    """Runs against the test Redis server, on a connection of its own."""
    near_cache: bool = False

    @property
    def features(self) -> frozenset[str]:
        extra = {"near_cache"} if self.near_cache else set()
        return spec_for("cache", self.backend).features | extra


# ==== the backends: one row per way of running one ==========================================
TABLE = (
    Row("memory", "memory"),
    Row("redis", "redis", redis=True),
    Row("redis_near", "redis", redis=True, near_cache=True),
)
# ==== end of the backends ===================================================================


def rows() -> list[Row]:
    """The table, and a default row for every registered backend it does not name."""
    named = {row.backend for row in TABLE}
    return [*TABLE, *(Row(name, name) for name in backend_names("cache") if name not in named)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cache_row" not in metafunc.fixturenames:
        return
    needs = {need for marker in metafunc.definition.iter_markers("needs") for need in marker.args}
    eligible = [row for row in rows() if needs <= row.features]
    metafunc.parametrize("cache_row", eligible, ids=[row.id for row in eligible])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000.0)


@pytest.fixture
def key_prefix() -> str:
    return unique_prefix()


@pytest.fixture
async def cache(
    cache_row: Row,
    clock: FakeClock,
    redis_connect: RedisConnect,
    request: pytest.FixtureRequest,
    key_prefix: str,
) -> AsyncIterator[CacheBackend]:
    settings = CacheServiceConfig(backend=cache_row.backend)
    connection: Connection | None = None
    if cache_row.redis:
        host, port = request.getfixturevalue("redis_address")
        settings = CacheServiceConfig.model_validate(
            {
                "backend": cache_row.backend,
                "host": host,
                "port": port,
                "key_prefix": key_prefix,
                "near_cache": {
                    "enabled": cache_row.near_cache,
                    "max_entries": 1000,
                    "max_value_size": 1 << 20,
                    "max_ttl": 60,
                },
            }
        )
        connection = redis_connect(settings)
    policies = Config(services={"cache": settings}).policies_for("cache")
    built = build_backend(BuildContext("cache", settings, policies, connection, clock))
    backend = cast(CacheBackend, built.backend)
    assert built.features == cache_row.features
    assert isinstance(backend, NearCache) == cache_row.near_cache  # composed by the build
    if isinstance(backend, NearCache):
        await _tracking_in_place(backend)
    yield backend
    await backend.close()
    if cache_row.redis:
        host, port = request.getfixturevalue("redis_address")
        async with aioredis.Redis(host=host, port=port) as admin:
            keys = await admin.keys(key_prefix + "*")
            if keys:
                await admin.delete(*keys)


async def _tracking_in_place(cache: NearCache) -> None:
    """Read once, then wait (bounded) until Redis tracks the cache's connection."""
    await cache.get("-")
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 5
    while not cache.tracking.active:
        assert loop.time() < give_up, "Redis never tracked the connection"
        await asyncio.sleep(0.005)


# Shorten the TTL of every key under a prefix, as `seconds` of waiting would.
_ELAPSE_LUA = """
local gone = 0
for _, key in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do
  local left = redis.call('PTTL', key)
  if left >= 0 then
    if left - tonumber(ARGV[2]) <= 0 then
      gone = gone + redis.call('DEL', key)
    else
      redis.call('PEXPIRE', key, left - tonumber(ARGV[2]))
    end
  end
end
return gone
"""


@pytest.fixture
def elapse(
    cache: CacheBackend,
    cache_row: Row,
    clock: FakeClock,
    key_prefix: str,
    request: pytest.FixtureRequest,
) -> Elapse:
    """Make `seconds` pass for the cache under test."""

    async def elapse(seconds: float) -> None:
        if not cache_row.redis:
            await clock.advance(seconds)
            return
        host, port = request.getfixturevalue("redis_address")
        async with aioredis.Redis(host=host, port=port) as admin:
            await admin.eval(_ELAPSE_LUA, 0, key_prefix, round(seconds * 1000))
        if isinstance(cache, NearCache):
            await cache.tracking.sync()  # expiry reached the near cache too

    return elapse
