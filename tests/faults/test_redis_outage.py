"""Redis refused or cut for 5 s under a steady load, with the default policies: calls fail
fast while it is down (UNAVAILABLE, the breaker open; p99 of the failed calls under 50 ms),
and succeed again within 1 s of its return, without a restart.

Before the recovery prober and the growing break, the default 30 s break held callers off for
~25 s after Redis was back (47,033 refused calls in the run that filed issue #19).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from fault_load import FIGURES, Load, median, p99
from faultproxy import FaultProxy
from redis_server import redis_address, unique_prefix

from generated.integration.v1 import cache_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from sidecar.testing import serve_for_test

__all__ = ["redis_address"]

pytestmark = pytest.mark.e2e

OUTAGE = 5.0
DEADLINE = 1.0


@pytest.fixture
async def proxy(redis_address: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*redis_address) as proxy:
        yield proxy


@pytest.mark.parametrize("fault", ["refused", "cut"])
async def test_calls_fail_fast_during_an_outage_and_succeed_within_a_second_of_its_end(
    proxy: FaultProxy, fault: str
) -> None:
    config = f"""
server: {{access_log: false}}
services:
  cache: {{type: cache, backend: redis, host: {proxy.host}, port: {proxy.port},
           key_prefix: "{unique_prefix()}"}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        cache = CacheServiceStub(channel)
        await cache.Set(cache_pb2.SetRequest(key="k", value=b"v"))

        async def get(_: int) -> None:
            reply = await cache.Get(cache_pb2.GetRequest(key="k"), timeout=DEADLINE)
            assert reply.value == b"v"

        load = Load(get)
        load.start()
        await asyncio.sleep(1.0)
        fault_started = time.monotonic()
        if fault == "refused":
            await proxy.stop_accepting()
            await proxy.cut()
            await asyncio.sleep(OUTAGE)
            await proxy.start_accepting()
        else:  # the open connection and every new one reset (RST) at once
            proxy.resetting = True
            await proxy.cut()
            await asyncio.sleep(OUTAGE)
            proxy.resetting = False
        fault_ended = time.monotonic()
        await asyncio.sleep(2.5)
        await load.stop()

    before = [o for o in load.outcomes if o.ended < fault_started]  # done before the fault
    during = load.between(fault_started, fault_ended)
    after = load.between(fault_ended, float("inf"))
    assert before and [o for o in before if o.code is not grpc.StatusCode.OK] == []
    failed = [o for o in during if o.code is not grpc.StatusCode.OK]
    assert {o.code.name for o in failed} <= {"UNAVAILABLE"}
    # fast failure: once the breaker is open (within the first half second), not one slow call
    settled = [o for o in failed if o.started >= fault_started + 0.5]
    assert settled and p99([o.seconds for o in settled]) < 0.05
    first_ok = min(o.ended for o in after if o.code is grpc.StatusCode.OK)
    recovered_in = first_ok - fault_ended
    assert recovered_in <= 1.0
    late = load.between(first_ok, float("inf"))
    assert all(o.code is grpc.StatusCode.OK for o in late)
    FIGURES.append(
        f"redis {fault} {OUTAGE:g}s: {len(during)} calls during, {len(failed)} failed "
        f"(median {median([o.seconds for o in failed]) * 1000:.1f} ms, p99 "
        f"{p99([o.seconds for o in settled]) * 1000:.1f} ms once open); success again "
        f"{recovered_in * 1000:.0f} ms after the end of the fault"
    )
