"""Load generator, run as its own process: N concurrent callers on one channel for a fixed
time; prints one JSON line with ops/s, p50 and p99 in microseconds."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from generated.integration.v1 import cache_pb2, cache_pb2_grpc


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


WORKLOADS = {"noop": _noop, "cache_get": _cache_get, "cache_set": _cache_set}


async def run(address: str, workload: str, callers: int, seconds: float, warmup: float) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        call = WORKLOADS[workload](channel)
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
