"""QueryStream readers that stop reading (issue #10, item 12): a stream whose reader takes
no message for `stream_idle_timeout` ends with ABORTED STREAM_IDLE_TIMEOUT and gives its
connection (and transaction) back, and streams can never hold every pooled connection, so
other calls go on. Through the real PostgreSQL, and SQLite for the idle timeout."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
import pytest

from generated.integration.v1 import sql_pb2, sql_pb2_grpc
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]
Code = grpc.StatusCode
# Rows of 64 KiB: a few messages fill every flow-control window between the sidecar and a
# client that stopped reading, so the sidecar's next write waits for the reader.
BIG_ROWS = {
    "postgres": "SELECT g, repeat('x', 65536) FROM generate_series(1, 100000) g",
    "sqlite": "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 100000) "
    "SELECT g, replace(hex(zeroblob(32768)), '0', 'x') FROM s",
}
OPEN_TRANSACTIONS = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'integration-sidecar'
      AND state LIKE 'idle in transaction%'
"""


@asynccontextmanager
async def sidecar(config: str) -> AsyncIterator[sql_pb2_grpc.SqlServiceStub]:
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield sql_pb2_grpc.SqlServiceStub(channel)


def sqlite_config(**settings: str) -> str:
    lines = ["server: {access_log: false}", "services:", "  db:", "    type: sql"]
    lines += ["    backend: sqlite", "    retry_policy: {max_retries: 0}"]
    lines += [f"    {key}: {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


async def stalled_stream(sql: sql_pb2_grpc.SqlServiceStub, kind: str) -> Any:
    """A QueryStream whose reader takes one message and then stops reading."""
    call = sql.QueryStream(sql_pb2.QueryStreamRequest(sql=BIG_ROWS[kind], batch_size=8))
    first = await call.read()
    assert first is not grpc.aio.EOF
    return call


async def read_to_the_end(call: Any) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


async def open_transactions(pg_dsn: str) -> int:
    conn = await asyncpg.connect(pg_dsn)
    try:
        count: int = await conn.fetchval(OPEN_TRANSACTIONS)
        return count
    finally:
        await conn.close()


IDLE_SETTINGS = {
    "stream_idle_timeout": "500ms",
    "connection_pool": "{min_connections: 1, max_connections: 1, acquire_timeout: 5s}",
}


@pytest.fixture(params=["postgres", "sqlite"])
def idle_target(request: pytest.FixtureRequest) -> tuple[str, str, str | None]:
    """(kind, config, dsn): one connection, streams idle for 500 ms end."""
    if request.param == "sqlite":
        return "sqlite", sqlite_config(**IDLE_SETTINGS), None
    pg_dsn: str = request.getfixturevalue("pg_dsn")
    return "postgres", request.getfixturevalue("config_for")(pg_dsn, **IDLE_SETTINGS), pg_dsn


async def test_a_stalled_reader_is_ended_and_its_connection_freed(
    idle_target: tuple[str, str, str | None], expect_error: ExpectError
) -> None:
    kind, config, pg_dsn = idle_target
    async with sidecar(config) as sql:
        call = await stalled_stream(sql, kind)
        started = time.monotonic()
        # The only connection comes back once the stream has been idle for 500 ms.
        reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT 42"), timeout=5)
        assert reply.rows[0].values[0].int_value == 42
        assert time.monotonic() - started < 3
        if pg_dsn is not None:
            assert await open_transactions(pg_dsn) == 0
        # The reader, back at last, gets what was already sent, then the reason it ended.
        await expect_error(
            read_to_the_end(call),
            Code.ABORTED,
            "STREAM_IDLE_TIMEOUT",
            idle_timeout_seconds="0.5",
        )


async def test_streams_cannot_take_every_connection(
    make_config: Callable[..., str], expect_error: ExpectError
) -> None:
    config = make_config(
        connection_pool="{min_connections: 1, max_connections: 3, acquire_timeout: 300ms}"
    )
    async with sidecar(config) as sql:
        # The default reserve: streams get at most max_connections - 1 = 2 connections.
        stalled = [await stalled_stream(sql, "postgres") for _ in range(2)]
        await expect_error(
            stalled_stream(sql, "postgres"),
            Code.RESOURCE_EXHAUSTED,
            "POOL_EXHAUSTED",
            max_stream_connections="2",
        )
        reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"), timeout=5)
        assert reply.rows[0].values[0].int_value == 1
        for call in stalled:
            call.cancel()
        # Cancelled streams give their slots back.
        again = await stalled_stream(sql, "postgres")
        again.cancel()


async def test_max_stream_connections_is_configurable(
    make_config: Callable[..., str], expect_error: ExpectError
) -> None:
    config = make_config(
        max_stream_connections="1",
        connection_pool="{min_connections: 1, max_connections: 5, acquire_timeout: 300ms}",
    )
    async with sidecar(config) as sql:
        first = await stalled_stream(sql, "postgres")
        await expect_error(
            stalled_stream(sql, "postgres"),
            Code.RESOURCE_EXHAUSTED,
            "POOL_EXHAUSTED",
            max_stream_connections="1",
        )
        first.cancel()
