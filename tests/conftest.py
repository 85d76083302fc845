"""Fixtures: a real sidecar on a free port and stubs connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from support import RedisConnect

from generated.integration.v1 import admin_pb2_grpc, cache_pb2_grpc, pubsub_pb2_grpc
from sidecar.config import RedisEndpoint
from sidecar.connections.redis import RedisConnection, create_client
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test


@pytest.fixture
async def sidecar() -> AsyncIterator[RunningServer]:
    async with serve_for_test() as running:
        yield running


@pytest.fixture
async def channel(sidecar: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sidecar.address) as channel:
        yield channel


@pytest.fixture
def cache(channel: grpc.aio.Channel) -> cache_pb2_grpc.CacheServiceStub:
    return cache_pb2_grpc.CacheServiceStub(channel)


@pytest.fixture
def pubsub(channel: grpc.aio.Channel) -> pubsub_pb2_grpc.PubSubServiceStub:
    return pubsub_pb2_grpc.PubSubServiceStub(channel)


@pytest.fixture
def admin(channel: grpc.aio.Channel) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(channel)


@pytest.fixture
async def redis_connect() -> AsyncIterator[RedisConnect]:
    """Make `RedisConnection`s for backends built by hand; all are closed after the test
    (a backend's `close` leaves its connection open, as the runtime closes it later)."""
    made: list[RedisConnection] = []

    def connect(
        settings: RedisEndpoint,
        name: str = "cache",
        *,
        keepalive: float = 1.0,
        **client_options: Any,
    ) -> RedisConnection:
        connection = RedisConnection(
            name, create_client(settings, **client_options), subscriber_keepalive=keepalive
        )
        made.append(connection)
        return connection

    yield connect
    for connection in made:
        await connection.close()
