"""Acceptance: two sidecar processes sharing a Redis rate limit of R per second together
grant at most R per second (plus the burst) over a 5-second run, where two local limits
would grant twice that."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from redis_server import free_port

from generated.integration.v1 import cache_pb2
from generated.integration.v1.cache_pb2_grpc import CacheServiceStub

pytestmark = pytest.mark.e2e

RATE = 40
BURST = 10
SECONDS = 5.0
CALLERS_PER_SIDECAR = 4
ROOT = Path(__file__).resolve().parents[2]


def config(host: str, port: int, prefix: str) -> str:
    return f"""
server: {{access_log: false}}
integration:
  retry_policy: {{max_retries: 0}}
services:
  shared: {{type: cache, backend: redis, host: {host}, port: {port}, key_prefix: "{prefix}"}}
  cache:
    type: cache
    rate_limit:
      requests_per_second: {RATE}
      burst_size: {BURST}
      max_queue: 0
      store: redis
      redis_target: shared
"""


def wait_listening(address: str, process: subprocess.Popen[bytes]) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the sidecar did not start") from None
            time.sleep(0.05)


@pytest.fixture
def sidecars(
    redis_address: tuple[str, int], key_prefix: str, tmp_path: Path
) -> Iterator[list[str]]:
    """Two `python -m sidecar serve` processes with the same config file."""
    path = tmp_path / "sidecar.yaml"
    path.write_text(config(*redis_address, key_prefix))
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sidecar", "serve", "--config", str(path), "--listen", address],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for address in addresses
    ]
    try:
        for address, process in zip(addresses, processes, strict=True):
            wait_listening(address, process)
        yield addresses
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


async def hammer(address: str, stop_at: float) -> tuple[int, int, float, float]:
    """Call Cache.Get as fast as possible until `stop_at`: (granted, refused, first send,
    last reply of a granted call)."""
    granted = refused = 0
    first_send, last_reply = float("inf"), 0.0
    async with grpc.aio.insecure_channel(address) as channel:
        cache = CacheServiceStub(channel)
        request = cache_pb2.GetRequest(key="k")

        async def caller() -> None:
            nonlocal granted, refused, first_send, last_reply
            while (sent := time.monotonic()) < stop_at:
                first_send = min(first_send, sent)
                try:
                    await cache.Get(request, timeout=2)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                    refused += 1
                else:
                    granted += 1
                    last_reply = max(last_reply, time.monotonic())

        await asyncio.gather(*(caller() for _ in range(CALLERS_PER_SIDECAR)))
    return granted, refused, first_send, last_reply


async def test_two_sidecars_sharing_a_redis_limit_grant_at_most_the_rate_plus_burst(
    sidecars: list[str],
) -> None:
    for address in sidecars:  # connections up, so the run measures the limit only
        async with grpc.aio.insecure_channel(address) as channel:
            await channel.channel_ready()
    stop_at = time.monotonic() + SECONDS
    results = await asyncio.gather(*(hammer(address, stop_at) for address in sidecars))
    granted = [result[0] for result in results]
    span = max(r[3] for r in results) - min(r[2] for r in results)
    # Every grant happened between the first send and the last granted reply.
    assert sum(granted) <= RATE * span + BURST, (granted, span)
    assert sum(granted) <= RATE * (SECONDS + 0.25) + BURST, (granted, span)
    assert sum(granted) >= 0.8 * (RATE * SECONDS + BURST), granted  # the limit, not less
    assert min(granted) >= 0.1 * sum(granted), granted  # both sidecars drew on it
    assert all(result[1] > 0 for result in results)  # both were held back
