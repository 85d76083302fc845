"""Fixtures for the backend conformance suites.

Each capability has one parametrised fixture yielding a ready backend: `memory`, and `redis`
against a real Redis server (`redis_address`: the shared one, or one the session starts).
Every Redis test gets its own key prefix, so tests never see each other's data, and its keys
are deleted afterwards.

`elapse` moves a fake clock for the memory cache. For Redis it makes time pass for the test's
keys only, by shortening each key's TTL by `seconds` (PEXPIRE; a key whose TTL runs out is
deleted), which is what a real sleep would do to them, without the sleep. `settle` waits for
one PING round trip on the broker's subscriber connection, after which every message Redis
already sent is in the buffers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from redis_server import redis_address, unique_prefix
from support import RedisConnect

from sidecar.backends.cache import CacheBackend, MemoryCache
from sidecar.backends.cache._near_cache import NearCache
from sidecar.backends.cache.redis import RedisCache
from sidecar.backends.pubsub import MemoryBroker, PubSubBackend
from sidecar.backends.pubsub.redis import RedisBroker
from sidecar.config import CacheServiceConfig, PubSubServiceConfig

__all__ = ["redis_address"]

CACHE_BACKENDS = ["memory", "redis", "redis_near"]
PUBSUB_BACKENDS = ["memory", "redis"]

Elapse = Callable[[float], Awaitable[None]]
Settle = Callable[[], Awaitable[None]]


class FakeClock:
    """A clock callable whose time moves only when a test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=CACHE_BACKENDS)
def cache_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
def key_prefix() -> str:
    return unique_prefix()


@pytest.fixture
async def cache(
    redis_connect: RedisConnect,
    cache_kind: str,
    clock: FakeClock,
    request: pytest.FixtureRequest,
    key_prefix: str,
) -> AsyncIterator[CacheBackend]:
    backend: CacheBackend
    if cache_kind == "memory":
        backend = MemoryCache(clock=clock)
        yield backend
        await backend.close()
        return
    host, port = request.getfixturevalue("redis_address")
    settings = CacheServiceConfig(backend="redis", host=host, port=port, key_prefix=key_prefix)
    near = None
    if cache_kind == "redis_near":  # every read may be answered by the near cache
        near = NearCache(max_entries=1000, max_value_size=1 << 20, max_ttl=60.0)
    backend = RedisCache(
        redis_connect(settings), name="cache", key_prefix=key_prefix, near_cache=near
    )
    if near is not None:
        await _tracking_in_place(backend)
    yield backend
    await backend.close()
    async with aioredis.Redis(host=host, port=port) as admin:
        keys = await admin.keys(key_prefix + "*")
        if keys:
            await admin.delete(*keys)


async def _tracking_in_place(cache: RedisCache) -> None:
    """Read once, then wait (bounded) until Redis tracks the cache's connection."""
    assert cache.tracking is not None
    await cache.get("-")
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 5
    while not cache.tracking.active:
        assert loop.time() < give_up, "Redis never tracked the connection"
        await asyncio.sleep(0.005)


@pytest.fixture
def elapse(
    cache: CacheBackend, clock: FakeClock, key_prefix: str, request: pytest.FixtureRequest
) -> Elapse:
    """Make `seconds` pass for the cache under test."""

    async def elapse(seconds: float) -> None:
        if isinstance(cache, RedisCache):
            host, port = request.getfixturevalue("redis_address")
            async with aioredis.Redis(host=host, port=port) as admin:
                await admin.eval(_ELAPSE_LUA, 0, key_prefix, round(seconds * 1000))
            if cache.tracking is not None:  # expiry reached the near cache too
                await cache.tracking.sync()
        else:
            clock.advance(seconds)

    return elapse


@pytest.fixture(params=PUBSUB_BACKENDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def broker(
    redis_connect: RedisConnect, broker_kind: str, request: pytest.FixtureRequest, key_prefix: str
) -> AsyncIterator[PubSubBackend]:
    backend: PubSubBackend
    if broker_kind == "memory":
        backend = MemoryBroker()
    else:
        host, port = request.getfixturevalue("redis_address")
        settings = PubSubServiceConfig(backend="redis", host=host, port=port, key_prefix=key_prefix)
        backend = RedisBroker(
            redis_connect(settings, "pubsub"), name="pubsub", key_prefix=key_prefix
        )
    yield backend
    await backend.close()


@pytest.fixture
def settle(broker: PubSubBackend) -> Settle:
    """Wait until messages already published have reached the subscriptions' buffers."""

    async def settle() -> None:
        if isinstance(broker, RedisBroker):
            await broker.sync()
        else:
            await asyncio.sleep(0)  # the memory broker delivers inside publish()

    return settle
