"""What only `RedisCache` promises, beyond the conformance suite: key prefixes, real
expiry, exact int64 arithmetic in atomic batches, and behaviour when Redis misbehaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from faultproxy import FaultProxy
from redis_server import free_port
from support import RedisConnect

from sidecar.backends.cache import CacheOp, DeleteOp, GetOp, IncrementOp, SetOp
from sidecar.backends.cache.redis import RedisCache
from sidecar.config import CacheServiceConfig
from sidecar.errors import DeadlineExceeded, FailedPrecondition, Unavailable

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


@pytest.fixture
async def cache(
    redis_connect: RedisConnect, cache_settings: CacheServiceConfig
) -> AsyncIterator[RedisCache]:
    backend = RedisCache(
        redis_connect(cache_settings), name="cache", key_prefix=cache_settings.key_prefix
    )
    yield backend
    await backend.close()


async def test_every_key_is_stored_under_the_key_prefix(
    cache: RedisCache, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    await cache.set("user:1", b"ada")
    await cache.hash_set("h", {"f": b"1"})
    await cache.batch([SetOp("b", b"2")], atomic=True)
    assert sorted(await redis_client.keys(key_prefix + "*")) == [
        f"{key_prefix}{key}".encode() for key in ("b", "h", "user:1")
    ]


async def test_two_prefixes_never_see_each_other_s_keys(
    redis_connect: RedisConnect,
    cache: RedisCache,
    cache_settings: CacheServiceConfig,
    redis_client: aioredis.Redis,
) -> None:
    other_prefix = cache_settings.key_prefix + "other:"
    other = RedisCache(redis_connect(cache_settings), name="other", key_prefix=other_prefix)
    await cache.set("k", b"mine")
    await other.set("k", b"theirs")
    assert (await cache.get("k"), await other.get("k")) == (b"mine", b"theirs")
    await other.close()


async def test_key_expires_on_the_server_after_its_real_ttl(cache: RedisCache) -> None:
    await cache.set("k", b"v", ttl=0.15)
    await asyncio.sleep(0.25)
    assert await cache.exists("k") is False


async def test_ttl_is_sent_in_milliseconds(
    cache: RedisCache, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    await cache.set("k", b"v", ttl=12.3456)
    assert 12_000 < await redis_client.pttl(key_prefix + "k") <= 12_346


@pytest.mark.parametrize(
    ("start", "deltas"),
    [
        (INT64_MAX - 10, [5, 4, 1]),
        (INT64_MIN + 10, [-5, -4, -1]),
        (0, [INT64_MAX, INT64_MIN]),
        (999_999_999, [1, -1_000_000_000, 1]),
        (123_456_789_012_345_678, [876_543_210_987_654_321, -(10**18)]),
    ],
)
async def test_atomic_batch_increments_are_exact_across_the_int64_range(
    cache: RedisCache, start: int, deltas: list[int]
) -> None:
    await cache.set("n", str(start).encode())
    results = await cache.batch([IncrementOp("n", d) for d in deltas], atomic=True)
    expected, running = [], start
    for delta in deltas:
        running += delta
        expected.append(running)
    assert (results, await cache.get("n")) == (expected, str(running).encode())


async def test_atomic_batch_stops_before_an_increment_that_would_overflow_later_in_it(
    cache: RedisCache,
) -> None:
    await cache.set("n", str(INT64_MAX - 3).encode())
    with pytest.raises(FailedPrecondition) as raised:
        ops: list[CacheOp] = [SetOp("other", b"x"), IncrementOp("n", 2), IncrementOp("n", 2)]
        await cache.batch(ops, atomic=True)
    assert raised.value.reason == "INTEGER_OVERFLOW"
    assert (await cache.get("n"), await cache.exists("other")) == (
        str(INT64_MAX - 3).encode(),
        False,
    )


async def test_atomic_batch_sees_its_own_delete_before_a_type_check(cache: RedisCache) -> None:
    await cache.hash_set("k", {"f": b"1"})
    ops: list[CacheOp] = [DeleteOp(("k",)), IncrementOp("k", 2), GetOp("k")]
    results = await cache.batch(ops, atomic=True)
    assert results == [1, 2, b"2"]


async def test_non_atomic_batch_with_an_empty_delete_counts_zero(cache: RedisCache) -> None:
    assert await cache.batch([DeleteOp(()), SetOp("a", b"1")], atomic=False) == [0, True]


async def test_increment_by_a_delta_beyond_int64_fails_with_integer_overflow(
    cache: RedisCache,
) -> None:
    with pytest.raises(FailedPrecondition) as raised:
        await cache.increment("n", 2**64)
    assert raised.value.reason == "INTEGER_OVERFLOW"


async def test_many_concurrent_calls_each_get_their_own_reply(cache: RedisCache) -> None:
    await cache.set_many([(f"k{i}", str(i).encode()) for i in range(200)])
    values = await asyncio.gather(*(cache.get(f"k{i}") for i in range(200)))
    assert values == [str(i).encode() for i in range(200)]


async def test_an_error_reply_fails_only_its_own_call(cache: RedisCache) -> None:
    await cache.hash_set("h", {"f": b"1"})
    await cache.set("s", b"ok")
    results = await asyncio.gather(cache.get("h"), cache.get("s"), return_exceptions=True)
    assert isinstance(results[0], FailedPrecondition)
    assert results[1] == b"ok"


async def test_calls_reconnect_after_the_server_drops_the_connection(
    redis_connect: RedisConnect,
    cache_settings: CacheServiceConfig,
    redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:
    name = f"sidecar-test:{key_prefix.strip(':').replace(':', '-')}"
    cache = RedisCache(redis_connect(cache_settings, client_name=name), name="cache")
    await cache.set("k", b"v")
    for entry in await redis_client.client_list():  # only ours: the server is shared
        if entry.get("name") == name:
            await redis_client.client_kill_filter(_id=entry["id"])
    # The call in flight when a connection dies fails; the next one reconnects.
    for _ in range(3):
        try:
            assert await cache.get("k") == b"v"
            break
        except Unavailable:
            continue
    else:
        pytest.fail("the cache never reconnected")
    await cache.close()


async def test_unreachable_redis_fails_with_unavailable(redis_connect: RedisConnect) -> None:
    settings = CacheServiceConfig(backend="redis", host="127.0.0.1", port=free_port())
    cache = RedisCache(redis_connect(settings), name="cache")
    with pytest.raises(Unavailable) as raised:
        await cache.get("k")
    assert raised.value.metadata == {"target": "cache"}
    with pytest.raises(Unavailable):
        await cache.batch([GetOp("k")], atomic=True)
    await cache.close()


async def test_silent_redis_fails_calls_in_flight_with_deadline_exceeded(
    redis_connect: RedisConnect,
    redis_address: tuple[str, int],
) -> None:
    async with FaultProxy(*redis_address) as proxy:
        settings = CacheServiceConfig(backend="redis", host=proxy.host, port=proxy.port)
        cache = RedisCache(redis_connect(settings, socket_timeout=0.3), name="cache")
        await cache.ping()
        proxy.paused = True
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(cache.get("k"), 5)
        proxy.paused = False
        await cache.ping()  # a fresh connection serves again
        await cache.close()


async def test_calls_after_close_fail_without_reconnecting(cache: RedisCache) -> None:
    await cache.set("k", b"v")
    await cache.close()
    with pytest.raises(Unavailable) as raised:
        await cache.get("k")
    assert raised.value.reason == "BACKEND_CLOSED"
