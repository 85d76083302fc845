"""Health through `grpc.health.v1.Health/Watch` and grpcurl, per gRPC service, per
integration and per connection: a Redis the test owns is stopped (NOT_SERVING within the
configured checks) and started again on the same port (SERVING again, no restart of the
sidecar); AdminService shows each check's time, latency and error."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis_server import OwnedRedis
from support import grpcurl_path

from generated.integration.v1 import admin_pb2, admin_pb2_grpc
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAMES = ("integration.v1.CacheService", "cache", "connection:cache")


@pytest.fixture
def redis() -> Iterator[OwnedRedis]:
    server = OwnedRedis()
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def sidecar(redis: OwnedRedis) -> AsyncIterator[RunningServer]:
    config = f"""
server: {{access_log: false}}
integration:
  health_monitoring: {{check_interval: 100ms, timeout: 300ms, consecutive_failures: 2}}
services:
  cache: {{type: cache, backend: redis, host: 127.0.0.1, port: {redis.port}}}
"""
    async with serve_for_test(config) as running:
        yield running


class Watcher:
    """One Watch stream, its statuses read into a list as they arrive."""

    def __init__(self, stub: health_pb2_grpc.HealthStub, service: str) -> None:
        self.seen: list[int] = []
        self._call = stub.Watch(health_pb2.HealthCheckRequest(service=service))
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for response in self._call:
            self.seen.append(response.status)

    async def reaches(self, status: int, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not self.seen or self.seen[-1] != status:
            assert time.monotonic() < deadline, f"never {status}: {self.seen}"
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._call.cancel()


def changes(statuses: list[int]) -> list[int]:
    """`statuses` without repeats in a row."""
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


async def grpcurl_health(address: str, service: str) -> str:
    process = await asyncio.create_subprocess_exec(
        grpcurl_path(),
        "-plaintext",
        "-d",
        json.dumps({"service": service}),
        address,
        "grpc.health.v1.Health/Check",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    status: str = json.loads(out)["status"]
    return status


async def test_a_stopped_backend_turns_not_serving_and_serving_again_when_back(
    sidecar: RunningServer, redis: OwnedRedis
) -> None:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watchers = [Watcher(stub, name) for name in NAMES]
        try:
            for watcher in watchers:
                await watcher.reaches(SERVING)

            redis.kill()
            for watcher in watchers:
                await watcher.reaches(NOT_SERVING)
            assert await grpcurl_health(sidecar.address, "connection:cache") == "NOT_SERVING"
            assert await grpcurl_health(sidecar.address, "") == "SERVING"  # the process is up
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            down = (await admin.ListConnections(admin_pb2.ListConnectionsRequest())).connections
            (connection,) = down
            assert connection.health == admin_pb2.HEALTH_STATE_NOT_SERVING
            assert connection.last_check.error  # why it failed
            assert connection.last_check.time.seconds >= int(time.time()) - 5

            redis.start()  # the same port: the sidecar reconnects by itself
            for watcher in watchers:
                await watcher.reaches(SERVING)
            assert await grpcurl_health(sidecar.address, "integration.v1.CacheService") == "SERVING"
            # Each stream saw the whole story, in order.
            for watcher in watchers:
                assert changes(watcher.seen) == [SERVING, NOT_SERVING, SERVING]
            reply = await admin.GetIntegration(admin_pb2.GetIntegrationRequest(name="cache"))
            check = reply.integration.last_check
            assert check.error == ""
            assert 0 < check.latency_seconds < 0.3
        finally:
            for watcher in watchers:
                watcher.close()
