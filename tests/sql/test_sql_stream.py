"""QueryStream: rows arrive in batches from a server-side cursor, the columns come first,
and cancelling the call closes the cursor and its transaction at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
import pytest

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc

pytestmark = pytest.mark.e2e

V = common_pb2.Value
ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]

SIDECAR_SESSIONS = """
    SELECT state, query FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'integration-sidecar'
"""


async def collect(call: grpc.aio.UnaryStreamCall) -> list[sql_pb2.QueryStreamResponse]:  # type: ignore[type-arg]
    return [message async for message in call]


async def test_rows_arrive_in_batches_of_the_requested_size(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    messages = await collect(
        sql.QueryStream(
            sql_pb2.QueryStreamRequest(
                sql="SELECT g AS n FROM generate_series(1, $1::int) g",
                parameters=[V(int_value=25)],
                batch_size=10,
            )
        )
    )
    assert [len(m.rows) for m in messages] == [10, 10, 5]
    assert [r.values[0].int_value for m in messages for r in m.rows] == list(range(1, 26))


async def test_columns_come_in_the_first_message_only(sql: sql_pb2_grpc.SqlServiceStub) -> None:
    messages = await collect(
        sql.QueryStream(
            sql_pb2.QueryStreamRequest(
                sql="SELECT g::int8 AS n, 'x'::text AS s FROM generate_series(1, 4) g",
                batch_size=2,
            )
        )
    )
    assert [(c.name, c.type) for c in messages[0].columns] == [("n", "int8"), ("s", "text")]
    assert all(not m.columns for m in messages[1:])


async def test_an_empty_result_still_sends_the_columns(sql: sql_pb2_grpc.SqlServiceStub) -> None:
    messages = await collect(
        sql.QueryStream(sql_pb2.QueryStreamRequest(sql="SELECT 1 AS n WHERE false"))
    )
    assert len(messages) == 1
    assert ([c.name for c in messages[0].columns], len(messages[0].rows)) == (["n"], 0)


async def test_large_rows_are_split_to_keep_messages_small(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    messages = await collect(
        sql.QueryStream(
            sql_pb2.QueryStreamRequest(
                sql="SELECT repeat('x', 300000) FROM generate_series(1, 10)", batch_size=10
            )
        )
    )
    assert sum(len(m.rows) for m in messages) == 10
    assert all(m.ByteSize() <= 1024 * 1024 for m in messages)


async def test_cancelling_the_call_closes_the_cursor_and_transaction_at_once(
    sql: sql_pb2_grpc.SqlServiceStub, pg_dsn: str
) -> None:
    call = sql.QueryStream(
        sql_pb2.QueryStreamRequest(
            # The first batch comes at once; the second makes the database sleep.
            sql="SELECT g, CASE WHEN g > 10 THEN pg_sleep(30) END FROM generate_series(1, 20) g",
            batch_size=10,
        )
    )
    first = await call.read()
    assert len(first.rows) == 10  # type: ignore[union-attr]
    await asyncio.sleep(0.2)  # the second batch is running in the database
    watcher = await asyncpg.connect(pg_dsn)
    try:
        busy = await watcher.fetch(SIDECAR_SESSIONS + " AND state <> 'idle'")
        assert busy, "the second batch should be running"
        call.cancel()
        cancelled_at = time.monotonic()
        while busy and time.monotonic() - cancelled_at < 2:
            await asyncio.sleep(0.05)
            busy = await watcher.fetch(SIDECAR_SESSIONS + " AND state <> 'idle'")
        elapsed = time.monotonic() - cancelled_at
    finally:
        await watcher.close()
    assert busy == []  # no running query and no open transaction left behind
    assert elapsed < 1.0


async def test_a_stream_frees_its_connection_for_the_next_call(
    make_config: Callable[..., str],
) -> None:
    from sidecar.testing import serve_for_test

    config = make_config(connection_pool="{min_connections: 1, max_connections: 1}")
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        sql = sql_pb2_grpc.SqlServiceStub(channel)
        for _ in range(3):
            call = sql.QueryStream(
                sql_pb2.QueryStreamRequest(sql="SELECT generate_series(1, 100)", batch_size=10)
            )
            await call.read()
            call.cancel()
        reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT 42"), timeout=5)
    assert reply.rows[0].values[0].int_value == 42


async def test_a_failing_stream_statement_is_an_error_before_any_row(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        collect(sql.QueryStream(sql_pb2.QueryStreamRequest(sql="SELECT * FROM missing"))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SQL_ERROR",
        sqlstate="42P01",
    )


async def test_an_error_in_a_later_batch_ends_the_stream_with_its_status(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    call = sql.QueryStream(
        sql_pb2.QueryStreamRequest(
            sql="SELECT 1 / (20 - g) FROM generate_series(1, 30) g", batch_size=10
        )
    )
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in call:
            received += len(message.rows)
    assert received == 10
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_batch_size_out_of_range_is_invalid_argument(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        collect(sql.QueryStream(sql_pb2.QueryStreamRequest(sql="SELECT 1", batch_size=-1))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field="batch_size",
    )
