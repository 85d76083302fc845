"""While a SIGTERMed sidecar lets its in-flight calls finish, a new call is refused with
UNAVAILABLE and says why: ErrorInfo reason SHUTTING_DOWN."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from sidecar_process import sidecar_process

from generated.integration.v1 import cache_pb2, cache_pb2_grpc

pytestmark = pytest.mark.e2e

# The outbound limit of one call per 2 s makes the second Set wait ~2 s for a token: a
# genuinely slow call in flight when SIGTERM arrives, with no test hook in the sidecar.
CONFIG = """
server:
  shutdown_grace: 30s
services:
  cache:
    type: cache
    rate_limit: {requests_per_second: 0.5, burst_size: 1}
"""


async def until_not_serving(channel: grpc.aio.Channel) -> None:
    """Return once the health check stops answering SERVING: shutdown has begun."""
    health = health_pb2_grpc.HealthStub(channel)
    while True:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return
        await asyncio.sleep(0.01)


async def test_a_new_call_during_the_grace_period_is_refused_with_shutting_down(
    tmp_path: Path,
) -> None:
    async with (
        sidecar_process(tmp_path, CONFIG) as sidecar,
        grpc.aio.insecure_channel(sidecar.address) as channel,
    ):
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        await cache.Set(cache_pb2.SetRequest(key="first", value=b"1"), timeout=10)
        slow = asyncio.ensure_future(
            cache.Set(cache_pb2.SetRequest(key="slow", value=b"2"), timeout=10)
        )
        await asyncio.sleep(0.2)
        assert not slow.done()
        started = time.monotonic()
        sidecar.process.send_signal(signal.SIGTERM)
        await until_not_serving(channel)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cache.Get(cache_pb2.GetRequest(key="first"), timeout=5)
        assert not slow.done()  # the refusal came while a call was still in flight

        assert (await asyncio.wait_for(slow, 10)).applied
        assert await asyncio.wait_for(sidecar.process.wait(), 10) == 0
        assert time.monotonic() - started < 10  # not the whole 30 s grace
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(caught.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("SHUTTING_DOWN", "integration.v1")
