"""The connection pool under stress: exhaustion past the acquire timeout, connections cut or
refused on the way (through `FaultProxy`), and recovery for the next call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from faultproxy import FaultProxy

from generated.integration.v1 import sql_pb2, sql_pb2_grpc
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]
Code = grpc.StatusCode


@asynccontextmanager
async def sidecar(config: str) -> AsyncIterator[sql_pb2_grpc.SqlServiceStub]:
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield sql_pb2_grpc.SqlServiceStub(channel)


@pytest.fixture
async def proxy(postgres: Any) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(postgres.host, postgres.port) as running:
        yield running


@pytest.fixture
def proxied_config(
    postgres: Any, pg_database: str, proxy: FaultProxy, config_for: Callable[..., str]
) -> Callable[..., str]:
    def make(**settings: str) -> str:
        dsn = postgres.dsn(pg_database, host=proxy.host, port=proxy.port)
        return config_for(dsn, **settings)

    return make


async def one(sql: sql_pb2_grpc.SqlServiceStub) -> int:
    reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"), timeout=10)
    return reply.rows[0].values[0].int_value


async def test_pool_exhaustion_past_the_acquire_timeout_is_resource_exhausted(
    make_config: Callable[..., str], expect_error: ExpectError
) -> None:
    config = make_config(
        connection_pool="{min_connections: 1, max_connections: 1, acquire_timeout: 200ms}"
    )
    async with sidecar(config) as sql:
        busy = asyncio.ensure_future(sql.Query(sql_pb2.QueryRequest(sql="SELECT pg_sleep(1)")))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await expect_error(
            sql.Query(sql_pb2.QueryRequest(sql="SELECT 1")),
            Code.RESOURCE_EXHAUSTED,
            "POOL_EXHAUSTED",
            max_connections="1",
        )
        waited = time.monotonic() - started
        await busy
        assert await one(sql) == 1  # the connection is free again
    assert 0.15 < waited < 0.9


async def test_a_cut_connection_is_unavailable_and_the_pool_recovers_for_the_next_call(
    proxy: FaultProxy, proxied_config: Callable[..., str], expect_error: ExpectError
) -> None:
    async with sidecar(proxied_config()) as sql:
        assert await one(sql) == 1
        running = asyncio.ensure_future(sql.Query(sql_pb2.QueryRequest(sql="SELECT pg_sleep(5)")))
        await asyncio.sleep(0.3)
        assert await proxy.cut() >= 1
        await expect_error(running, Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", sqlstate="08003")
        assert await one(sql) == 1


async def test_refused_connections_are_unavailable_until_the_database_is_back(
    proxy: FaultProxy, proxied_config: Callable[..., str], expect_error: ExpectError
) -> None:
    async with sidecar(proxied_config()) as sql:
        assert await one(sql) == 1
        await proxy.stop_accepting()
        await proxy.cut()
        await expect_error(
            sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"), timeout=10),
            Code.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
        )
        await proxy.start_accepting()
        assert await one(sql) == 1


async def test_a_query_cut_midway_is_retried_on_a_fresh_connection(
    proxy: FaultProxy, proxied_config: Callable[..., str]
) -> None:
    config = proxied_config(retry_policy="{max_retries: 2, base_delay: 10ms, max_delay: 20ms}")
    async with sidecar(config) as sql:
        running = asyncio.ensure_future(
            sql.Query(sql_pb2.QueryRequest(sql="SELECT 7 FROM pg_sleep(0.5)"), timeout=10)
        )
        await asyncio.sleep(0.2)
        await proxy.cut()
        reply = await running
    assert reply.rows[0].values[0].int_value == 7


async def test_an_execute_cut_midway_is_not_retried(
    proxy: FaultProxy, proxied_config: Callable[..., str], expect_error: ExpectError
) -> None:
    config = proxied_config(
        retry_policy="{max_retries: 2, base_delay: 10ms, max_delay: 20ms}",
        # min 0: the pool does not refill itself in the background, so a new connection
        # could only come from a retry.
        connection_pool="{min_connections: 0, max_connections: 1}",
    )
    async with sidecar(config) as sql:
        running = asyncio.ensure_future(
            sql.Execute(sql_pb2.ExecuteRequest(sql="SELECT pg_sleep(0.5)"), timeout=10)
        )
        await asyncio.sleep(0.2)
        accepted = proxy.accepted
        await proxy.cut()
        await expect_error(running, Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
        assert proxy.accepted == accepted  # no new connection was opened for a retry


async def test_a_slow_network_within_the_deadline_still_answers(
    proxy: FaultProxy, proxied_config: Callable[..., str]
) -> None:
    async with sidecar(proxied_config()) as sql:
        assert await one(sql) == 1
        proxy.latency = 0.05
        started = time.monotonic()
        assert await one(sql) == 1
    assert time.monotonic() - started >= 0.1  # request and reply both waited
