"""Transaction: statements apply atomically, any error rolls back all of them, and the
isolation level and read-only option reach the database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc

pytestmark = pytest.mark.e2e

V = common_pb2.Value
ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]


def stmt(sql: str, *params: common_pb2.Value) -> sql_pb2.Statement:
    return sql_pb2.Statement(sql=sql, parameters=list(params))


async def count(sql: sql_pb2_grpc.SqlServiceStub, table: str) -> int:
    reply = await sql.Query(sql_pb2.QueryRequest(sql=f"SELECT count(*) FROM {table}"))
    return reply.rows[0].values[0].int_value


async def test_a_failing_statement_leaves_no_row_of_the_others(
    sql: sql_pb2_grpc.SqlServiceStub, table: str, expect_error: ExpectError
) -> None:
    await sql.Execute(sql_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id int PRIMARY KEY)"))
    await expect_error(
        sql.Transaction(
            sql_pb2.TransactionRequest(
                statements=[
                    stmt(f"INSERT INTO {table} VALUES ($1)", V(int_value=1)),
                    stmt(f"INSERT INTO {table} VALUES ($1)", V(int_value=2)),
                    stmt(f"INSERT INTO {table} VALUES ($1)", V(int_value=1)),  # duplicate
                ]
            )
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "SQL_ERROR",
        sqlstate="23505",
        statement_index="2",
    )
    assert await count(sql, table) == 0


async def test_statements_commit_together_and_answer_in_order(
    sql: sql_pb2_grpc.SqlServiceStub, table: str
) -> None:
    reply = await sql.Transaction(
        sql_pb2.TransactionRequest(
            statements=[
                stmt(f"CREATE TABLE {table} (id serial PRIMARY KEY, name text)"),
                stmt(
                    f"INSERT INTO {table} (name) VALUES ($1), ($2) RETURNING id",
                    V(string_value="a"),
                    V(string_value="b"),
                ),
                stmt(f"UPDATE {table} SET name = upper(name)"),
            ]
        )
    )
    tags = [(r.command_tag, r.rows_affected) for r in reply.results]
    assert tags == [("CREATE TABLE", 0), ("INSERT 0 2", 2), ("UPDATE 2", 2)]
    assert [row.values[0].int_value for row in reply.results[1].rows] == [1, 2]
    assert [c.name for c in reply.results[1].columns] == ["id"]
    assert await count(sql, table) == 2


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        (sql_pb2.ISOLATION_LEVEL_UNSPECIFIED, "read committed"),
        (sql_pb2.ISOLATION_LEVEL_READ_COMMITTED, "read committed"),
        (sql_pb2.ISOLATION_LEVEL_REPEATABLE_READ, "repeatable read"),
        (sql_pb2.ISOLATION_LEVEL_SERIALIZABLE, "serializable"),
    ],
)
async def test_the_isolation_level_reaches_the_database(
    sql: sql_pb2_grpc.SqlServiceStub, level: int, shown: str
) -> None:
    reply = await sql.Transaction(
        sql_pb2.TransactionRequest(
            isolation_level=level,  # type: ignore[arg-type]
            statements=[stmt("SHOW transaction_isolation")],
        )
    )
    assert reply.results[0].rows[0].values[0].string_value == shown


async def test_a_read_only_transaction_refuses_an_insert(
    sql: sql_pb2_grpc.SqlServiceStub, table: str, expect_error: ExpectError
) -> None:
    await sql.Execute(sql_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id int)"))
    await expect_error(
        sql.Transaction(
            sql_pb2.TransactionRequest(
                read_only=True, statements=[stmt(f"INSERT INTO {table} VALUES (1)")]
            )
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "READ_ONLY",
        sqlstate="25006",
    )


async def test_a_read_only_transaction_cannot_be_switched_to_read_write(
    sql: sql_pb2_grpc.SqlServiceStub, table: str, expect_error: ExpectError
) -> None:
    await sql.Execute(sql_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id int)"))
    await expect_error(
        sql.Transaction(
            sql_pb2.TransactionRequest(
                read_only=True,
                statements=[
                    stmt("SET TRANSACTION READ WRITE"),
                    stmt(f"INSERT INTO {table} VALUES (1)"),
                ],
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SQL_ERROR",
        sqlstate="25001",  # "transaction read-write mode must be set before any query"
        statement_index="0",
    )
    assert await count(sql, table) == 0


async def test_a_statement_that_ends_the_transaction_is_refused(
    sql: sql_pb2_grpc.SqlServiceStub, table: str, expect_error: ExpectError
) -> None:
    await sql.Execute(sql_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id int)"))
    await expect_error(
        sql.Transaction(
            sql_pb2.TransactionRequest(
                statements=[
                    stmt("COMMIT"),
                    stmt(f"INSERT INTO {table} VALUES (1)"),
                ]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "STATEMENT_NOT_ALLOWED",
        statement_index="0",
    )
    assert await count(sql, table) == 0


async def test_a_failed_transaction_leaves_the_connection_usable(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await sql.Transaction(sql_pb2.TransactionRequest(statements=[stmt("SELECT 1/0")]))
    reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"))
    assert reply.rows[0].values[0].int_value == 1
