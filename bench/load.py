"""Load generator, run as its own process: N concurrent callers on one channel (or one
redis-py client, for the `redispy_*` workloads, or one asyncpg pool, for `asyncpg_query`) for
a fixed time; prints one JSON line with ops/s, p50 and p99 in microseconds."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from generated.integration.v1 import cache_pb2, cache_pb2_grpc, common_pb2, sql_pb2, sql_pb2_grpc

# The one-row query of the SQL workloads, through the sidecar and with asyncpg directly.
SQL_QUERY = "SELECT $1::int8 AS id, 'bench'::text AS name"


def _noop(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    call = channel.unary_unary("/bench.Noop/Call")
    payload = b"k" * 16
    return lambda: call(payload)


def _cache_get(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    request = cache_pb2.GetRequest(key="bench:key")
    return lambda: stub.Get(request)


def _cache_set(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    request = cache_pb2.SetRequest(key="bench:key", value=b"v" * 64)
    return lambda: stub.Set(request)


# A caller's trace that it does not sample (flags 00): what most calls of a traced fleet
# at a low sampling ratio look like.
_SAMPLED_OUT = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),)


def _cache_get_traced(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    request = cache_pb2.GetRequest(key="bench:key")
    return lambda: stub.Get(request, metadata=_SAMPLED_OUT)


def _redis_get(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    request = cache_pb2.GetRequest(target="redis", key="bench:key")
    return lambda: stub.Get(request)


def _redis_near_get(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    request = cache_pb2.GetRequest(target="redis-near", key="bench:key")
    return lambda: stub.Get(request)


def _redis_set(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    request = cache_pb2.SetRequest(target="redis", key="bench:key", value=b"v" * 64)
    return lambda: stub.Set(request)


def _batch(target: str) -> Callable[[grpc.aio.Channel], Callable[[], Awaitable[Any]]]:
    """A Batch of 100 Gets on `target` ("" is the memory cache) in one call."""
    request = cache_pb2.BatchRequest(
        target=target,
        operations=[
            cache_pb2.BatchOperation(get=cache_pb2.GetRequest(key=f"bench:key:{i}"))
            for i in range(100)
        ],
    )

    def workload(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        return lambda: stub.Batch(request)

    return workload


def _sql_query(channel: grpc.aio.Channel) -> Callable[[], Awaitable[Any]]:
    stub = sql_pb2_grpc.SqlServiceStub(channel)
    request = sql_pb2.QueryRequest(
        target="sql-bench", sql=SQL_QUERY, parameters=[common_pb2.Value(int_value=42)]
    )
    return lambda: stub.Query(request)


WORKLOADS = {
    "noop": _noop,
    "noop_uvloop": _noop,
    "cache_get": _cache_get,
    "cache_set": _cache_set,
    "cache_get_traced": _cache_get_traced,
    "cache_get_traceparent": _cache_get_traced,  # on a sidecar without tracing
    "redis_get": _redis_get,
    "redis_near_get": _redis_near_get,
    "redis_set": _redis_set,
    "sql_query": _sql_query,
    "cache_batch": _batch(""),
    "redis_batch": _batch("redis"),
}


def _redispy(address: str, workload: str) -> tuple[Any, Callable[[], Awaitable[Any]]]:
    """redis-py used directly by the app, as the sidecar's Redis workloads compare to."""
    import redis.asyncio as aioredis

    host, port = address.rsplit(":", 1)
    client = aioredis.Redis(host=host, port=int(port))
    # The sidecar's redis service has key_prefix "sidecar-bench:": the same key.
    if workload == "redispy_get":
        return client, lambda: client.get("sidecar-bench:bench:key")
    value = b"v" * 64
    return client, lambda: client.set("sidecar-bench:bench:key", value)


async def _asyncpg_query(dsn: str, callers: int, seconds: float, warmup: float) -> None:
    """asyncpg used directly by the app (a pool as large as the sidecar's), as `sql_query`
    compares to; `address` is then a postgresql:// DSN."""
    import asyncpg

    async with asyncpg.create_pool(dsn, min_size=2, max_size=10) as pool:
        await drive(lambda: pool.fetch(SQL_QUERY, 42), callers, seconds, warmup)


async def run(address: str, workload: str, callers: int, seconds: float, warmup: float) -> None:
    if workload == "asyncpg_query":
        await _asyncpg_query(address, callers, seconds, warmup)
        return
    if workload.startswith("redispy_"):
        client, call = _redispy(address, workload)
        async with client:
            await drive(call, callers, seconds, warmup)
        return
    async with grpc.aio.insecure_channel(address) as channel:
        await drive(WORKLOADS[workload](channel), callers, seconds, warmup)


async def drive(
    call: Callable[[], Awaitable[Any]], callers: int, seconds: float, warmup: float
) -> None:
    """Run `callers` concurrent loops of `call`; print ops/s, p50 and p99 as one JSON line."""
    latencies: list[float] = []
    measuring = False
    stop_at = time.perf_counter() + warmup + seconds

    async def caller() -> None:
        while (now := time.perf_counter()) < stop_at:
            await call()
            if measuring:
                latencies.append(time.perf_counter() - now)

    tasks = [asyncio.create_task(caller()) for _ in range(callers)]
    await asyncio.sleep(warmup)
    measuring = True
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies.sort()
    count = len(latencies)
    print(
        json.dumps(
            {
                "ops": count / elapsed,
                "p50_us": latencies[count // 2] * 1e6 if count else 0.0,
                "p99_us": latencies[min(count - 1, int(count * 0.99))] * 1e6 if count else 0.0,
                "calls": count,
            }
        )
    )


if __name__ == "__main__":
    address, workload, callers, seconds, warmup = sys.argv[1:6]
    asyncio.run(run(address, workload, int(callers), float(seconds), float(warmup)))
