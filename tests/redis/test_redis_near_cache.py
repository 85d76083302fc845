"""The Redis near cache against a Redis server this module owns (its command counters,
FLUSHDB and CLIENT KILL touch nobody else's keys): hits that never reach Redis, writes by
other clients invalidating, read-your-writes, key TTLs, and losing either connection.
The conformance suite runs every cache operation on a near-cached backend as well."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest
import redis.asyncio as aioredis
from redis_server import OwnedRedis
from support import RedisConnect

from generated.integration.v1 import cache_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from sidecar.backends.cache import MISS, SetOp
from sidecar.backends.cache._held_values import HeldValues
from sidecar.backends.cache._redis_tracking import RedisTracking
from sidecar.backends.cache.near_cache import NearCache, near_cached
from sidecar.backends.cache.redis import RedisCache
from sidecar.config import CacheServiceConfig
from sidecar.connections.redis import RedisConnection
from sidecar.errors import FailedPrecondition
from sidecar.testing import serve_for_test

TIMEOUT = 5


@pytest.fixture(scope="module")
def owned_redis() -> Iterator[OwnedRedis]:
    server = OwnedRedis()
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def other(owned_redis: OwnedRedis) -> AsyncIterator[aioredis.Redis]:
    """Another client of the same Redis: an app replica writing behind the sidecar's back."""
    client = aioredis.Redis(port=owned_redis.port, protocol=2)
    yield client
    await client.aclose()


def near_cached_redis(
    connection: RedisConnection, held: HeldValues, *, key_prefix: str
) -> NearCache:
    """A `RedisCache` decorated with a near cache, as the build function composes them."""
    cache = RedisCache(connection, name="cache", key_prefix=key_prefix)
    return near_cached(cache, held, RedisTracking(connection, held, name="cache"))


@pytest.fixture
async def near_cache(
    owned_redis: OwnedRedis, key_prefix: str, redis_connect: RedisConnect
) -> AsyncIterator[NearCache]:
    settings = CacheServiceConfig(backend="redis", port=owned_redis.port, key_prefix=key_prefix)
    near = HeldValues(max_entries=100, max_value_size=1024, max_ttl=60.0)
    connection = redis_connect(settings, client_name="sidecar:cache")
    cache = near_cached_redis(connection, near, key_prefix=key_prefix)
    await cache.get("warm-up")
    await until(lambda: active(cache))
    yield cache
    await cache.close()


def active(cache: NearCache) -> bool:
    return cache.tracking.active


async def until(condition: Callable[[], bool], within: float = TIMEOUT) -> None:
    """Wait until `condition()` holds (a reconnection in the background), bounded."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not condition():
        if loop.time() > give_up:
            pytest.fail(f"{condition} never held")
        await asyncio.sleep(0.005)


async def gets_served_by_redis(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def synced(cache: NearCache) -> None:
    await cache.tracking.sync()


async def test_repeated_gets_are_answered_without_asking_redis(
    near_cache: NearCache, other: aioredis.Redis, key_prefix: str
) -> None:
    await other.set(key_prefix + "k", b"v")
    assert await near_cache.get("k") == b"v"
    before = await gets_served_by_redis(other)
    assert [await near_cache.get("k") for _ in range(50)] == [b"v"] * 50
    assert near_cache.held("k") == b"v"
    assert await gets_served_by_redis(other) == before


async def test_a_write_by_another_client_invalidates_the_held_value(
    near_cache: NearCache, other: aioredis.Redis, key_prefix: str
) -> None:
    await other.set(key_prefix + "k", b"old")
    assert await near_cache.get("k") == b"old"
    await other.set(key_prefix + "k", b"new")
    await synced(near_cache)  # the invalidation has arrived
    assert await near_cache.get("k") == b"new"
    await other.delete(key_prefix + "k")
    await synced(near_cache)
    assert await near_cache.get("k") is None


async def test_a_key_created_after_a_miss_was_held_is_seen(
    near_cache: NearCache, other: aioredis.Redis, key_prefix: str
) -> None:
    assert await near_cache.get("later") is None
    assert await near_cache.get("later") is None  # held as absent
    await other.set(key_prefix + "later", b"here")
    await synced(near_cache)
    assert await near_cache.get("later") == b"here"


async def test_the_sidecars_own_writes_are_seen_by_its_next_read_without_redis_help(
    near_cache: NearCache, owned_redis: OwnedRedis
) -> None:
    # White-box: point the data connection's tracking at a subscriber of the test's own, so
    # no invalidation reaches the cache; its own writes must not need one.
    silent = aioredis.Redis(port=owned_redis.port, protocol=2, single_connection_client=True)
    silent_id = await silent.client_id()
    inner = near_cache.inner
    assert isinstance(inner, RedisCache)
    await inner._execute("CLIENT", "TRACKING", "ON", "REDIRECT", silent_id)
    try:
        writes = [
            lambda: near_cache.set("k", b"2"),
            lambda: near_cache.batch([SetOp("k", b"3")], atomic=True),
            lambda: near_cache.batch([SetOp("k", b"4")], atomic=False),
            lambda: near_cache.set_many([("k", b"5")]),
            lambda: near_cache.set_many([("k", b"6")], ttl=60),
            lambda: near_cache.increment("k", 1),
        ]
        await near_cache.set("k", b"1")
        for write, expected in zip(writes, [b"2", b"3", b"4", b"5", b"6", b"7"], strict=True):
            await near_cache.get("k")
            assert near_cache.held("k") is not MISS
            await write()
            assert await near_cache.get("k") == expected
        await near_cache.get("k")
        await near_cache.delete(["k"])
        assert await near_cache.get("k") is None
        await near_cache.hash_set("k", {"f": b"1"})
        with pytest.raises(FailedPrecondition):
            await near_cache.get("k")
    finally:
        await silent.aclose()


async def test_a_value_is_not_held_past_its_keys_ttl(
    near_cache: NearCache, other: aioredis.Redis, key_prefix: str
) -> None:
    await other.set(key_prefix + "short", b"v", px=150)
    assert await near_cache.get("short") == b"v"
    assert near_cache.held("short") == b"v"
    await asyncio.sleep(0.3)  # real Redis expiry: Redis may not have sent anything yet
    assert near_cache.held("short") is MISS
    assert await near_cache.get("short") is None


async def test_flushdb_empties_the_near_cache(
    near_cache: NearCache, other: aioredis.Redis, key_prefix: str
) -> None:
    await other.set(key_prefix + "k", b"v")
    assert await near_cache.get("k") == b"v"
    await other.flushdb()
    await synced(near_cache)
    assert await near_cache.get("k") is None


# The subscriber link is named `sidecar-sub:<connection>:<random>`, the data link by its
# CLIENT SETNAME.
@pytest.mark.parametrize("connection", ["sidecar-sub:cache:", "sidecar:cache"])
async def test_losing_either_connection_empties_it_until_tracking_is_back(
    near_cache: NearCache, other: aioredis.Redis, key_prefix: str, connection: str
) -> None:
    await other.set(key_prefix + "k", b"before")
    assert await near_cache.get("k") == b"before"
    assert near_cache.held("k") == b"before"
    victims = [
        c["id"]
        for c in await other.client_list()
        if c["name"] == connection
        or (connection.endswith(":") and c["name"].startswith(connection))
    ]
    assert victims
    for client_id in victims:
        await other.client_kill_filter(_id=client_id)
    await until(lambda: not active(near_cache))
    assert near_cache.held("k") is MISS
    # Written while nobody may have been listening: must not be served stale.
    await other.set(key_prefix + "k", b"after")
    assert await near_cache.get("k") == b"after"
    await until(lambda: active(near_cache))
    assert await near_cache.get("k") == b"after"
    before = await gets_served_by_redis(other)
    assert await near_cache.get("k") == b"after"
    assert await gets_served_by_redis(other) == before  # held again


async def test_without_tracking_permission_it_reads_through(
    redis_connect: RedisConnect,
    owned_redis: OwnedRedis,
    other: aioredis.Redis,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await other.acl_setuser(
        "app",
        enabled=True,
        passwords=["+app-secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-client|tracking"],
    )
    settings = CacheServiceConfig(
        backend="redis",
        port=owned_redis.port,
        key_prefix=key_prefix,
        username="app",
        password="app-secret",
    )
    near = HeldValues(max_entries=10, max_value_size=1024, max_ttl=60.0)
    cache = near_cached_redis(redis_connect(settings), near, key_prefix=key_prefix)
    try:
        await other.set(key_prefix + "k", b"v")
        for _ in range(20):
            assert await cache.get("k") == b"v"
            await asyncio.sleep(0.01)
        assert not active(cache)
        assert len(near) == 0
        assert "client-side caching unavailable" in caplog.text  # refused, not just slow
    finally:
        await cache.close()
        await other.acl_deluser("app")


async def test_through_the_server_repeated_gets_stay_local_and_see_other_writes(
    owned_redis: OwnedRedis, other: aioredis.Redis, key_prefix: str
) -> None:
    config = f"""
services:
  cache:
    type: cache
    backend: redis
    port: {owned_redis.port}
    key_prefix: "{key_prefix}"
    near_cache: {{enabled: true, max_entries: 100}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        cache = CacheServiceStub(channel)

        async def get() -> bytes:
            reply = await cache.Get(cache_pb2.GetRequest(key="k"), timeout=TIMEOUT)
            return reply.value

        await cache.Set(cache_pb2.SetRequest(key="k", value=b"1"), timeout=TIMEOUT)
        assert await get() == b"1"
        loop = asyncio.get_running_loop()
        give_up = loop.time() + TIMEOUT  # tracking starts with the first read
        while True:
            before = await gets_served_by_redis(other)
            assert [await get() for _ in range(10)] == [b"1"] * 10
            if await gets_served_by_redis(other) == before:
                break
            assert loop.time() < give_up, "Gets never stayed local"
            await asyncio.sleep(0.01)
        await other.set(key_prefix + "k", b"2")
        give_up = loop.time() + TIMEOUT  # the invalidation's way: well under a second
        while (value := await get()) != b"2":
            assert value == b"1"
            assert loop.time() < give_up, "the other client's write was never seen"
            await asyncio.sleep(0.001)
        await cache.Set(cache_pb2.SetRequest(key="k", value=b"3"), timeout=TIMEOUT)
        assert await get() == b"3"
