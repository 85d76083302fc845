"""The cost of an AI token budget per call: reserve at admission, reconcile at the end.

A deployment's `StreamingPipeline` with a tokens-per-minute limit admits a call (taking its
estimate from the bucket) and settles it with the real usage (`actual_weight`: the
difference is refunded), once with the bucket in this process and once on Redis
(`rate_limit: {store: redis}`: `RedisTokenBucket`, one script run to reserve and one to
reconcile, both on the connection's multiplexed link). Each figure is the median time of
one admit + settle, the Redis one waiting until the settlement has reached Redis; with 32
concurrent callers, the median of the wall time per call. The budget is large enough that
nothing ever waits. The Redis is the one on 127.0.0.1:6379, or a redis-server started for
the run.

Usage: make bench, or python -m bench.ai_budget  (BENCH_SECONDS, BENCH_REPEATS)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from bench.__main__ import redis_address
from bench.results import record
from sidecar.backends.ratelimit.redis import RedisTokenBucket
from sidecar.config import parse_config
from sidecar.connections import build_connections
from sidecar.connections.redis import RedisConnection
from sidecar.resilience import (
    RateLimit,
    StreamingOptions,
    StreamingPipeline,
    StreamOutcome,
    TokenBucketOptions,
)

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
CONCURRENT = 32
ESTIMATE, USED = 2_100, 640  # a prompt of ~100 tokens plus max_tokens 2000; what it cost
LIMIT = RateLimit("tokens", TokenBucketOptions(1e9, 1e9), weighted=True)


async def _call(pipeline: StreamingPipeline, settled: Callable[[], Awaitable[None]]) -> None:
    lease = await pipeline.admit(weight=ESTIMATE)
    lease.settle(StreamOutcome.SUCCESS, actual_weight=USED)
    await settled()


async def _measure(
    pipeline: StreamingPipeline, settled: Callable[[], Awaitable[None]]
) -> dict[str, float]:
    """Median µs of one call alone, and of wall time per call with CONCURRENT callers."""
    samples: list[float] = []
    stop = time.perf_counter() + SECONDS / 2
    while time.perf_counter() < stop:
        started = time.perf_counter()
        await _call(pipeline, settled)
        samples.append(time.perf_counter() - started)
    batches: list[float] = []
    stop = time.perf_counter() + SECONDS / 2
    while time.perf_counter() < stop:
        started = time.perf_counter()
        await asyncio.gather(*(_call(pipeline, settled) for _ in range(CONCURRENT)))
        batches.append((time.perf_counter() - started) / CONCURRENT)
    return {
        "alone": statistics.median(samples) * 1e6,
        "concurrent": statistics.median(batches) * 1e6,
    }


async def _nothing() -> None:
    """A local bucket settles synchronously: nothing to wait for."""


async def _run(host: str, port: int) -> dict[str, list[dict[str, float]]]:
    config = parse_config(f"connections:\n  budget: {{type: redis, host: {host}, port: {port}}}\n")
    connections = build_connections(config)
    redis = connections.get("budget")
    assert isinstance(redis, RedisConnection)
    key = f"sidecar-bench:{uuid.uuid4().hex[:8]}:sidecar:ratelimit:ai:bench/model:tokens"
    shared = RedisTokenBucket(redis, key, LIMIT.options)
    options = StreamingOptions(rate_limits=(LIMIT,))
    local = StreamingPipeline("bench/model", options)
    remote = StreamingPipeline("bench/model", options, rate_limiters={LIMIT.name: shared})
    results: dict[str, list[dict[str, float]]] = {"local": [], "redis": []}
    try:
        await _call(remote, shared.settled)  # connected and the scripts loaded
        for _ in range(REPEATS):  # interleaved: this machine drifts between runs
            results["local"].append(await _measure(local, _nothing))
            results["redis"].append(await _measure(remote, shared.settled))
    finally:
        await redis.client.delete(key)
        await connections.close()
    return results


def main() -> int:
    host, port, own_redis = redis_address()
    try:
        results = asyncio.run(_run(host, port))
    finally:
        if own_redis is not None:
            own_redis.terminate()
            own_redis.wait(10)
    print("\nAI token budget: reserve + reconcile per call (median us)")
    print(f"  {'bucket':<8} {'1 caller':>10} {f'{CONCURRENT} callers':>12}")
    for name, runs in results.items():
        alone = statistics.median(run["alone"] for run in runs)
        concurrent = statistics.median(run["concurrent"] for run in runs)
        print(f"  {name:<8} {alone:>10.1f} {concurrent:>12.1f}")
        record("ai_budget", name, callers=1, us_per_call=alone)
        record("ai_budget", name, callers=CONCURRENT, us_per_call=concurrent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
