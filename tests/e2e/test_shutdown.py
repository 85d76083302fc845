"""SIGTERM on a real sidecar process: health turns NOT_SERVING, the in-flight unary call
completes, the open Subscribe stream ends with a clean status, and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import grpc
import pytest
from sidecar_process import sidecar_process

from generated.integration.v1 import cache_pb2, cache_pb2_grpc, pubsub_pb2, pubsub_pb2_grpc

pytestmark = pytest.mark.e2e

# The outbound limit of 1 call per second makes the second Set wait ~1 s for a token:
# a genuinely slow unary call, with no test hook in the sidecar.
CONFIG = """
server:
  shutdown_grace: 5s
  event_loop: {event_loop}
services:
  cache:
    type: cache
    rate_limit: {requests_per_second: 1, burst_size: 1}
  pubsub:
    type: pubsub
"""


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_sigterm_finishes_inflight_calls_ends_streams_and_exits_zero(
    tmp_path: Path, event_loop: str
) -> None:
    async with sidecar_process(tmp_path, CONFIG.replace("{event_loop}", event_loop)) as sidecar:
        process = sidecar.process
        async with grpc.aio.insecure_channel(sidecar.address) as channel:
            cache = cache_pb2_grpc.CacheServiceStub(channel)
            pubsub = pubsub_pb2_grpc.PubSubServiceStub(channel)
            stream = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["events"]))
            assert (await stream.read()).WhichOneof("event") == "started"
            await cache.Set(cache_pb2.SetRequest(key="first", value=b"1"), timeout=10)
            slow = asyncio.ensure_future(
                cache.Set(cache_pb2.SetRequest(key="slow", value=b"2"), timeout=10)
            )
            await asyncio.sleep(0.3)
            assert not slow.done()
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)

            reply = await asyncio.wait_for(slow, 10)
            assert reply.applied
            assert await asyncio.wait_for(stream.read(), 5) is grpc.aio.EOF
            assert await stream.code() is grpc.StatusCode.OK
            exit_code = await asyncio.wait_for(process.wait(), 10)
            assert exit_code == 0
            assert time.monotonic() - started < 5.0
    stderr = sidecar.stderr_path.read_bytes()
    assert b"Traceback" not in stderr, stderr.decode()
    # Access lines are written in batches; the last ones leave when the process exits.
    access = [json.loads(line) for line in stderr.splitlines() if b'"sidecar.access"' in line]
    sets = [entry for entry in access if entry["method"] == "/integration.v1.CacheService/Set"]
    assert [entry["status"] for entry in sets] == ["OK", "OK"]
