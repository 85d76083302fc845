"""Database errors reach the caller as the status code that says what happened, with the
SQLSTATE in the ErrorInfo metadata; bad requests never reach the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc

pytestmark = pytest.mark.e2e

V = common_pb2.Value
Code = grpc.StatusCode
ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]


async def execute(sql: sql_pb2_grpc.SqlServiceStub, text: str, *params: Any) -> None:
    await sql.Execute(sql_pb2.ExecuteRequest(sql=text, parameters=list(params)))


async def test_unique_violation_is_already_exists_with_the_sqlstate(
    sql: sql_pb2_grpc.SqlServiceStub, table: str, expect_error: ExpectError
) -> None:
    await execute(sql, f"CREATE TABLE {table} (email text PRIMARY KEY)")
    await execute(sql, f"INSERT INTO {table} VALUES ($1)", V(string_value="ada@example.com"))
    error = await expect_error(
        sql.Execute(
            sql_pb2.ExecuteRequest(
                sql=f"INSERT INTO {table} VALUES ($1)",
                parameters=[V(string_value="ada@example.com")],
            )
        ),
        Code.ALREADY_EXISTS,
        "SQL_ERROR",
        sqlstate="23505",
        constraint=f"{table}_pkey",
    )
    assert "ada@example.com" not in (error.details() or "")  # DETAIL quotes the row: not sent


async def test_not_null_violation_is_failed_precondition(
    sql: sql_pb2_grpc.SqlServiceStub, table: str, expect_error: ExpectError
) -> None:
    await execute(sql, f"CREATE TABLE {table} (name text NOT NULL)")
    await expect_error(
        sql.Execute(sql_pb2.ExecuteRequest(sql=f"INSERT INTO {table} VALUES (NULL)")),
        Code.FAILED_PRECONDITION,
        "SQL_ERROR",
        sqlstate="23502",
    )


async def test_syntax_error_is_invalid_argument(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Query(sql_pb2.QueryRequest(sql="SELEC 1")),
        Code.INVALID_ARGUMENT,
        "SQL_ERROR",
        sqlstate="42601",
    )


async def test_unknown_table_is_invalid_argument(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Query(sql_pb2.QueryRequest(sql="SELECT * FROM no_such_table")),
        Code.INVALID_ARGUMENT,
        "SQL_ERROR",
        sqlstate="42P01",
    )


async def test_division_by_zero_is_invalid_argument(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Query(sql_pb2.QueryRequest(sql="SELECT 1 / $1::int", parameters=[V(int_value=0)])),
        Code.INVALID_ARGUMENT,
        "SQL_ERROR",
        sqlstate="22012",
    )


async def test_serialization_failure_is_aborted(
    sql: sql_pb2_grpc.SqlServiceStub, table: str, expect_error: ExpectError
) -> None:
    await execute(sql, f"CREATE TABLE {table} (id int PRIMARY KEY, n int)")
    await execute(sql, f"INSERT INTO {table} VALUES (1, 0)")
    serializable = sql_pb2.ISOLATION_LEVEL_SERIALIZABLE
    slow = sql.Transaction(
        sql_pb2.TransactionRequest(
            isolation_level=serializable,
            statements=[
                sql_pb2.Statement(sql=f"SELECT n FROM {table} WHERE id = 1"),
                sql_pb2.Statement(sql="SELECT pg_sleep(0.5)"),
                sql_pb2.Statement(sql=f"UPDATE {table} SET n = n + 1 WHERE id = 1"),
            ],
        )
    )
    task = asyncio.ensure_future(slow)
    await asyncio.sleep(0.2)  # the slow transaction has its snapshot
    await execute(sql, f"UPDATE {table} SET n = 10 WHERE id = 1")
    await expect_error(task, Code.ABORTED, "SQL_ERROR", sqlstate="40001", statement_index="2")


async def test_deadline_becomes_statement_timeout_and_answers_deadline_exceeded(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    started = time.monotonic()
    await expect_error(
        sql.Query(sql_pb2.QueryRequest(sql="SELECT pg_sleep(5)"), timeout=1.0),
        Code.DEADLINE_EXCEEDED,
        "SQL_ERROR",
        sqlstate="57014",
    )
    assert time.monotonic() - started < 1.0  # the database gave up before the caller did


async def test_the_session_statement_timeout_follows_the_deadline(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    with_deadline = await sql.Query(sql_pb2.QueryRequest(sql="SHOW statement_timeout"), timeout=3)
    without = await sql.Query(sql_pb2.QueryRequest(sql="SHOW statement_timeout"))
    shown = with_deadline.rows[0].values[0].string_value
    # Less than the 3 s deadline (by the margin and the time the call took to get there).
    assert shown.endswith("ms") and 1_500 <= int(shown[:-2]) < 3_000
    assert without.rows[0].values[0].string_value == "29900ms"  # the request timeout, 30s


async def test_more_rows_than_the_limit_is_resource_exhausted(
    make_config: Callable[..., str], expect_error: ExpectError
) -> None:
    from sidecar.testing import serve_for_test

    async with (
        serve_for_test(make_config(max_rows_per_query=10)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        sql = sql_pb2_grpc.SqlServiceStub(channel)
        ok = await sql.Query(sql_pb2.QueryRequest(sql="SELECT generate_series(1, 10)"))
        started = time.monotonic()
        await expect_error(
            sql.Query(sql_pb2.QueryRequest(sql="SELECT generate_series(1, 50000000)")),
            Code.RESOURCE_EXHAUSTED,
            "TOO_MANY_ROWS",
            max_rows="10",
        )
    assert len(ok.rows) == 10
    assert time.monotonic() - started < 5  # the database stopped after 11 rows


async def test_wrong_number_of_parameters_is_invalid_argument(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Query(
            sql_pb2.QueryRequest(sql="SELECT $1::int + $2::int", parameters=[V(int_value=1)])
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field="parameters",
    )


async def test_malformed_typed_value_names_the_parameter(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Query(
            sql_pb2.QueryRequest(
                sql="SELECT $1::uuid, $2::uuid",
                parameters=[
                    V(uuid_value="0f8fad5b-d9cb-469f-a165-70867728950e"),
                    V(uuid_value="x"),
                ],
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field="parameters[1]",
    )


async def test_empty_sql_is_invalid_argument(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Execute(sql_pb2.ExecuteRequest(sql="  ")),
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field="sql",
    )


async def test_unknown_target_is_not_found(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Query(sql_pb2.QueryRequest(target="nowhere", sql="SELECT 1")),
        Code.NOT_FOUND,
        "TARGET_NOT_FOUND",
        target="nowhere",
    )


async def test_empty_transaction_is_invalid_argument(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Transaction(sql_pb2.TransactionRequest()),
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field="statements",
    )
