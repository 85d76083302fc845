"""A Redis that stops answering (a black-holed network) while every caller's deadline is
shorter than the attempt timeout: the calls cut off by their deadlines count as slow calls,
the breaker opens and calls fail fast with CIRCUIT_OPEN; once Redis answers again the
breaker closes by itself, without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from faultproxy import FaultProxy
from support import error_info

from generated.integration.v1 import admin_pb2, admin_pb2_grpc, cache_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

CALLER_DEADLINE = 0.5  # shorter than any attempt timeout
RESET_TIMEOUT = 1.0


def black_hole_config(host: str, port: int, prefix: str) -> str:
    # Every default but a shorter wait before a call counts as slow, and the reset timeout.
    return f"""
integration:
  retry_policy: {{max_retries: 0}}
services:
  cache:
    type: cache
    backend: redis
    host: {host}
    port: {port}
    key_prefix: "{prefix}"
    circuit_breaker:
      slow_call_duration: 200ms
      reset_timeout: {RESET_TIMEOUT}s
"""


@pytest.fixture
async def proxy(redis_address: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*redis_address) as proxy:
        yield proxy


@pytest.fixture
async def channel(proxy: FaultProxy, key_prefix: str) -> AsyncIterator[grpc.aio.Channel]:
    config = black_hole_config(proxy.host, proxy.port, key_prefix)
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield channel


async def breaker_state(channel: grpc.aio.Channel) -> int:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    reply = await admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="cache"))
    return reply.integration.circuit_breaker.state


async def get_code(cache: CacheServiceStub, key: str) -> grpc.StatusCode:
    try:
        await cache.Get(cache_pb2.GetRequest(key=key), timeout=CALLER_DEADLINE)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_black_holed_redis_opens_the_breaker_then_recovers_without_restart(
    proxy: FaultProxy, channel: grpc.aio.Channel
) -> None:
    cache = CacheServiceStub(channel)
    await cache.Set(cache_pb2.SetRequest(key="k", value=b"v"))
    proxy.paused = True

    codes = await asyncio.gather(*(get_code(cache, "k") for _ in range(5)))
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 5
    assert await breaker_state(channel) == admin_pb2.CIRCUIT_STATE_OPEN

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await cache.Get(cache_pb2.GetRequest(key="k"), timeout=CALLER_DEADLINE)
    assert time.monotonic() - started < CALLER_DEADLINE / 2  # fails fast, no waiting
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(raised.value).reason == "CIRCUIT_OPEN"

    proxy.paused = False
    await asyncio.sleep(RESET_TIMEOUT)
    reply = await cache.Get(cache_pb2.GetRequest(key="k"), timeout=CALLER_DEADLINE)
    assert (reply.found, reply.value) == (True, b"v")
    assert await breaker_state(channel) == admin_pb2.CIRCUIT_STATE_CLOSED
