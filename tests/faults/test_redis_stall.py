"""Redis stalled for 3 s (the network holds the bytes, then releases them in order, as a
healed partition does) under a steady load, with the default policies: no call waits past
its deadline by more than 50 ms, the breaker opens on the slow-call rule (calls cut off after
slow_call_duration count as failures), and once the bytes flow again every reply reaches the
caller that asked for it (each caller reads its own key and checks the value)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from fault_load import FIGURES, Load
from faultproxy import FaultProxy
from redis_server import redis_address, unique_prefix

from generated.integration.v1 import cache_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from sidecar.testing import serve_for_test

__all__ = ["redis_address"]

pytestmark = pytest.mark.e2e

STALL = 3.0
DEADLINE = 1.5  # longer than the cache's slow_call_duration (1 s): cut-off calls are failures
KEYS = 16


@pytest.fixture
async def proxy(redis_address: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*redis_address) as proxy:
        yield proxy


async def test_a_stall_costs_no_caller_more_than_its_deadline_and_mixes_no_replies(
    proxy: FaultProxy,
) -> None:
    config = f"""
server: {{access_log: false}}
services:
  cache: {{type: cache, backend: redis, host: {proxy.host}, port: {proxy.port},
           key_prefix: "{unique_prefix()}"}}
"""
    wrong: list[tuple[int, bytes]] = []
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        cache = CacheServiceStub(channel)
        for i in range(KEYS):
            await cache.Set(cache_pb2.SetRequest(key=f"k{i}", value=f"v{i}".encode()))

        async def get(sequence: int) -> None:
            i = sequence % KEYS
            reply = await cache.Get(cache_pb2.GetRequest(key=f"k{i}"), timeout=DEADLINE)
            if reply.value != f"v{i}".encode():
                wrong.append((i, reply.value))

        load = Load(get, callers=8)
        load.start()
        await asyncio.sleep(1.0)
        stall_started = time.monotonic()
        proxy.paused = True
        await asyncio.sleep(STALL)
        proxy.paused = False
        stall_ended = time.monotonic()
        await asyncio.sleep(3.0)
        await load.stop()

    assert wrong == []
    overrun = max(o.seconds - DEADLINE for o in load.outcomes)
    assert overrun <= 0.05
    during = load.between(stall_started, stall_ended)
    reasons = {o.reason for o in during if o.code is not grpc.StatusCode.OK}
    assert "CIRCUIT_OPEN" in reasons  # the slow-call rule opened the breaker
    ok_after = [o.ended for o in load.between(stall_ended, float("inf")) if o.code.name == "OK"]
    assert ok_after, "no call succeeded after the stall"
    recovered_in = min(ok_after) - stall_ended
    last_failure = max(
        (o.ended for o in load.outcomes if o.code is not grpc.StatusCode.OK), default=0.0
    )
    assert recovered_in <= 1.0 and last_failure - stall_ended <= 1.5
    FIGURES.append(
        f"redis stalled {STALL:g}s: {len(during)} calls started during it, longest overrun of "
        f"a deadline {max(overrun, 0.0) * 1000:.0f} ms, refusals {sorted(reasons)}, success "
        f"again {recovered_in * 1000:.0f} ms after the bytes flowed, no reply mixed up"
    )
