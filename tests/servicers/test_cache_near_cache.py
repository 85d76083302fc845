"""The near cache is a decorator of the cache backend, composed when the backend is built:
the servicer knows nothing of it, and a `backend: redis` service with `near_cache` enabled,
driven through gRPC, still answers repeated Gets without a Redis call and still offers the
Redis backend's optional families."""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import Iterator

import grpc
import pytest
import redis.asyncio as aioredis
from redis_server import OwnedRedis, unique_prefix

from generated.integration.v1 import cache_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from sidecar.backends.cache import CacheBackend
from sidecar.backends.cache.near_cache import NearCache
from sidecar.backends.cache.redis import RedisCache
from sidecar.servicers import cache as cache_servicer
from sidecar.testing import serve_for_test

TIMEOUT = 5


def test_the_servicer_module_does_not_reference_the_near_cache() -> None:
    tree = ast.parse(inspect.getsource(cache_servicer))
    names = {
        node.id if isinstance(node, ast.Name) else node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Name | ast.Attribute)
    }
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {"held", "MISS", "NearCache", "near_cached", "tracking"} & (names | imported)
    assert not any("near" in (module or "") for module in modules)


def test_the_cache_backend_interface_has_no_near_cache_hook() -> None:
    assert not hasattr(CacheBackend, "held")


@pytest.fixture(scope="module")
def owned_redis() -> Iterator[OwnedRedis]:
    """A server of this module's own: its command counters count nobody else's calls."""
    server = OwnedRedis()
    server.start()
    yield server
    server.kill()


async def gets_served_by_redis(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_through_grpc_a_near_cached_service_is_a_decorated_redis_cache(
    owned_redis: OwnedRedis,
) -> None:
    prefix = unique_prefix()
    config = f"""
services:
  near:
    type: cache
    backend: redis
    port: {owned_redis.port}
    key_prefix: "{prefix}"
    near_cache: {{enabled: true}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
        aioredis.Redis(port=owned_redis.port, protocol=2) as admin,
    ):
        backend = running.integrations.resolve("cache", "near").backend
        assert isinstance(backend, NearCache)
        assert isinstance(backend.inner, RedisCache)
        assert "near_cache" in backend.features()
        cache = CacheServiceStub(channel)

        async def get(key: str) -> cache_pb2.GetResponse:
            return await cache.Get(cache_pb2.GetRequest(key=key), timeout=TIMEOUT)

        await cache.Set(cache_pb2.SetRequest(key="k", value=b"1"), timeout=TIMEOUT)
        assert (await get("k")).value == b"1"
        loop = asyncio.get_running_loop()
        give_up = loop.time() + TIMEOUT  # tracking starts with the first read
        while True:
            before = await gets_served_by_redis(admin)
            assert [(await get("k")).value for _ in range(10)] == [b"1"] * 10
            if await gets_served_by_redis(admin) == before:
                break
            assert loop.time() < give_up, "Gets never stayed local"
            await asyncio.sleep(0.01)
        assert backend.held("k") == b"1"

        # A write through the sidecar drops the held copy before it is sent.
        await cache.Delete(cache_pb2.DeleteRequest(keys=["k"]), timeout=TIMEOUT)
        assert not (await get("k")).found

        # The Redis backend's optional families, found through the decorator.
        await cache.HashSet(cache_pb2.HashSetRequest(key="h", fields={"f": b"v"}), timeout=TIMEOUT)
        reply = await cache.HashGet(cache_pb2.HashGetRequest(key="h", field="f"), timeout=TIMEOUT)
        assert (reply.found, reply.value) == (True, b"v")
        await cache.ListPush(
            cache_pb2.ListPushRequest(key="l", values=[b"a", b"b"]), timeout=TIMEOUT
        )
        popped = await cache.ListPop(cache_pb2.ListPopRequest(key="l", count=2), timeout=TIMEOUT)
        assert list(popped.values) == [b"b", b"a"]
        await cache.SetAdd(cache_pb2.SetAddRequest(key="s", members=[b"x"]), timeout=TIMEOUT)
        members = await cache.SetMembers(cache_pb2.SetMembersRequest(key="s"), timeout=TIMEOUT)
        assert list(members.members) == [b"x"]


async def test_a_held_value_needs_no_pipeline_a_miss_still_runs_through_it(
    owned_redis: OwnedRedis,
) -> None:
    """A hit made no upstream call: an isolated breaker does not refuse it (and it takes no
    bulkhead slot or token); a miss goes to Redis, so the breaker refuses it."""
    prefix = unique_prefix()
    config = f"""
services:
  near:
    type: cache
    backend: redis
    port: {owned_redis.port}
    key_prefix: "{prefix}"
    near_cache: {{enabled: true}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        item = running.integrations.resolve("cache", "near")
        backend = item.backend
        cache = CacheServiceStub(channel)
        await cache.Set(cache_pb2.SetRequest(key="k", value=b"1"), timeout=TIMEOUT)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + TIMEOUT  # tracking starts with the first read
        while backend.held("k") != b"1":
            await cache.Get(cache_pb2.GetRequest(key="k"), timeout=TIMEOUT)
            assert loop.time() < give_up, "the value was never held"
            await asyncio.sleep(0.01)

        item.pipeline.circuit_breaker.isolate()
        reply = await cache.Get(cache_pb2.GetRequest(key="k"), timeout=TIMEOUT)
        assert (reply.found, reply.value) == (True, b"1")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cache.Get(cache_pb2.GetRequest(key="not-held"), timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        item.pipeline.circuit_breaker.reset()
