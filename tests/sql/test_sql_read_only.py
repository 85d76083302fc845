"""A read-only target refuses writes, enforced by the PostgreSQL session (not by reading
the SQL), whatever the statements try."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import grpc
import pytest
from pg_roles import login_role, with_user

from generated.integration.v1 import sql_pb2, sql_pb2_grpc
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]
Code = grpc.StatusCode


@pytest.fixture
async def seeded(pg_dsn: str, table: str) -> str:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1)")
    finally:
        await conn.close()
    return table


@pytest.fixture
async def reader(
    pg_dsn: str, config_for: Callable[..., str]
) -> AsyncIterator[sql_pb2_grpc.SqlServiceStub]:
    # A plain role: a read-only target refuses a superuser (see test_sql_hardening_security).
    async with (
        login_role(pg_dsn) as role,
        serve_for_test(config_for(with_user(pg_dsn, role), read_only="true")) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield sql_pb2_grpc.SqlServiceStub(channel)


async def rows(sql: sql_pb2_grpc.SqlServiceStub, table: str) -> int:
    reply = await sql.Query(sql_pb2.QueryRequest(sql=f"SELECT count(*) FROM {table}"))
    return reply.rows[0].values[0].int_value


async def test_a_read_only_target_refuses_an_insert(
    reader: sql_pb2_grpc.SqlServiceStub, seeded: str, expect_error: ExpectError
) -> None:
    await expect_error(
        reader.Execute(sql_pb2.ExecuteRequest(sql=f"INSERT INTO {seeded} VALUES (2)")),
        Code.PERMISSION_DENIED,
        "READ_ONLY",
        sqlstate="25006",
    )
    assert await rows(reader, seeded) == 1


async def test_a_read_only_target_still_answers_queries_and_streams(
    reader: sql_pb2_grpc.SqlServiceStub, seeded: str
) -> None:
    streamed = [
        message
        async for message in reader.QueryStream(
            sql_pb2.QueryStreamRequest(sql=f"SELECT id FROM {seeded}")
        )
    ]
    assert await rows(reader, seeded) == 1
    assert streamed[0].rows[0].values[0].int_value == 1


async def test_a_read_only_target_refuses_a_write_transaction_even_if_it_asks_read_write(
    reader: sql_pb2_grpc.SqlServiceStub, seeded: str, expect_error: ExpectError
) -> None:
    await expect_error(
        reader.Transaction(
            sql_pb2.TransactionRequest(
                read_only=False,
                statements=[sql_pb2.Statement(sql=f"DELETE FROM {seeded}")],
            )
        ),
        Code.PERMISSION_DENIED,
        "READ_ONLY",
        sqlstate="25006",
    )
    assert await rows(reader, seeded) == 1


async def test_a_write_inside_a_function_body_is_refused_too(
    reader: sql_pb2_grpc.SqlServiceStub, seeded: str, expect_error: ExpectError
) -> None:
    await expect_error(
        reader.Execute(
            sql_pb2.ExecuteRequest(
                sql=f"DO $$ BEGIN SET LOCAL transaction_read_only = off; "
                f"INSERT INTO {seeded} VALUES (3); END $$"
            )
        ),
        Code.FAILED_PRECONDITION,
        "SQL_ERROR",
        sqlstate="25001",
    )
    assert await rows(reader, seeded) == 1


async def test_changing_the_session_default_does_not_outlive_the_call(
    reader: sql_pb2_grpc.SqlServiceStub, seeded: str, expect_error: ExpectError
) -> None:
    for _ in range(3):  # every pooled connection gets the attempt
        await reader.Execute(
            sql_pb2.ExecuteRequest(sql="SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        )
    await expect_error(
        reader.Execute(sql_pb2.ExecuteRequest(sql=f"INSERT INTO {seeded} VALUES (4)")),
        Code.PERMISSION_DENIED,
        "READ_ONLY",
        sqlstate="25006",
    )
    assert await rows(reader, seeded) == 1
