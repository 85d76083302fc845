"""SQLite, the embedded default, behind the same SqlService: `make run` with no config file
serves SQL on a bare machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

V = common_pb2.Value
ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]
Code = grpc.StatusCode
COUNT_FOREVER = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
)


@asynccontextmanager
async def sidecar(config: str | None = None) -> AsyncIterator[sql_pb2_grpc.SqlServiceStub]:
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield sql_pb2_grpc.SqlServiceStub(channel)


def sqlite_config(**settings: str) -> str:
    lines = ["services:", "  lite:", "    type: sql", "    backend: sqlite"]
    lines += [f"    {key}: {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
async def sql() -> AsyncIterator[sql_pb2_grpc.SqlServiceStub]:
    async with sidecar() as stub:  # the embedded defaults: `sql` is SQLite in memory
        yield stub


async def test_the_embedded_defaults_serve_sql_on_sqlite_in_memory(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT sqlite_version() AS v"))
    assert reply.columns[0].name == "v"
    assert reply.rows[0].values[0].string_value.startswith("3.")


async def test_sqlite_storage_classes_round_trip(sql: sql_pb2_grpc.SqlServiceStub) -> None:
    sent = [
        V(int_value=-(2**63)),
        V(double_value=2.5),
        V(string_value="héllo"),
        V(bytes_value=b"\x00\xff"),
        V(null_value=common_pb2.NULL_VALUE_UNSPECIFIED),
    ]
    reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT ?, ?, ?, ?, ?", parameters=sent))
    assert list(reply.rows[0].values) == sent
    assert [c.type for c in reply.columns] == ["integer", "real", "text", "blob", ""]


async def test_values_sqlite_has_no_type_for_are_stored_as_text(
    sql: sql_pb2_grpc.SqlServiceStub,
) -> None:
    reply = await sql.Query(
        sql_pb2.QueryRequest(
            sql="SELECT ?, ?, ?, ?, ?",
            parameters=[
                V(bool_value=True),
                V(decimal_value="12345678901234567.89"),
                V(date_value="2024-02-29"),
                V(uuid_value="0f8fad5b-d9cb-469f-a165-70867728950e"),
                V(json_value='{"a": 1}'),
            ],
        )
    )
    assert list(reply.rows[0].values) == [
        V(int_value=1),
        V(string_value="12345678901234567.89"),
        V(string_value="2024-02-29"),
        V(string_value="0f8fad5b-d9cb-469f-a165-70867728950e"),
        V(string_value='{"a": 1}'),
    ]


async def test_arrays_are_invalid_argument_naming_the_parameter(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    array = V(list_value=common_pb2.ListValue(values=[V(int_value=1)]))
    await expect_error(
        sql.Query(sql_pb2.QueryRequest(sql="SELECT ?, ?", parameters=[V(int_value=1), array])),
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field="parameters[1]",
    )


async def test_unique_violation_is_already_exists_with_sqlstate(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await sql.Execute(sql_pb2.ExecuteRequest(sql="CREATE TABLE users (email TEXT UNIQUE)"))
    insert = sql_pb2.ExecuteRequest(
        sql="INSERT INTO users VALUES (?)", parameters=[V(string_value="ada@example.com")]
    )
    await sql.Execute(insert)
    await expect_error(
        sql.Execute(insert),
        Code.ALREADY_EXISTS,
        "SQL_ERROR",
        sqlstate="23505",
        sqlite_error="SQLITE_CONSTRAINT_UNIQUE",
    )


async def test_a_failing_transaction_leaves_no_row(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    await sql.Execute(sql_pb2.ExecuteRequest(sql="CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    await expect_error(
        sql.Transaction(
            sql_pb2.TransactionRequest(
                statements=[
                    sql_pb2.Statement(sql="INSERT INTO t VALUES (1)"),
                    sql_pb2.Statement(sql="INSERT INTO t VALUES (1)"),
                ]
            )
        ),
        Code.ALREADY_EXISTS,
        "SQL_ERROR",
        statement_index="1",
    )
    reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT count(*) FROM t"))
    assert reply.rows[0].values[0].int_value == 0


async def test_the_deadline_interrupts_a_long_statement(
    sql: sql_pb2_grpc.SqlServiceStub, expect_error: ExpectError
) -> None:
    started = time.monotonic()
    await expect_error(
        sql.Query(sql_pb2.QueryRequest(sql=COUNT_FOREVER), timeout=0.5),
        Code.DEADLINE_EXCEEDED,
        "SQL_ERROR",
        sqlstate="57014",
    )
    # The ErrorInfo (SQLSTATE 57014) shows the sidecar answered before the caller's deadline
    # fired; the wall-clock bound only proves the statement stopped (it would run forever).
    assert time.monotonic() - started < 0.75
    assert (await sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"))).rows[0].values[0].int_value


async def test_a_read_only_file_target_refuses_writes(
    tmp_path: Path, expect_error: ExpectError
) -> None:
    path = tmp_path / "app.db"
    async with sidecar(sqlite_config(path=str(path))) as writer:
        await writer.Execute(sql_pb2.ExecuteRequest(sql="CREATE TABLE t (id INTEGER)"))
    async with sidecar(sqlite_config(path=str(path), read_only="true")) as reader:
        await expect_error(
            reader.Execute(sql_pb2.ExecuteRequest(sql="INSERT INTO t VALUES (1)")),
            Code.PERMISSION_DENIED,
            "READ_ONLY",
            sqlstate="25006",
        )
        await expect_error(
            reader.Execute(sql_pb2.ExecuteRequest(sql="PRAGMA query_only = 0")),
            Code.PERMISSION_DENIED,
            "READ_ONLY",
        )
        reply = await reader.Query(sql_pb2.QueryRequest(sql="SELECT count(*) FROM t"))
    assert reply.rows[0].values[0].int_value == 0


async def test_attach_is_refused_so_no_other_file_is_reachable(
    sql: sql_pb2_grpc.SqlServiceStub, tmp_path: Path, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Execute(
            sql_pb2.ExecuteRequest(
                sql="ATTACH DATABASE ? AS other", parameters=[V(string_value=str(tmp_path / "x"))]
            )
        ),
        Code.PERMISSION_DENIED,
        "READ_ONLY",
    )
    assert not (tmp_path / "x").exists()


async def test_an_open_stream_holds_the_connection_until_the_acquire_timeout(
    expect_error: ExpectError,
) -> None:
    config = sqlite_config() + "    connection_pool: {acquire_timeout: 200ms}\n"
    async with sidecar(config) as sql:
        # 40 MB of rows: far more than gRPC flow control lets the server send unread.
        rows = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) "
            "SELECT x, zeroblob(20000) FROM c"
        )
        stream = sql.QueryStream(sql_pb2.QueryStreamRequest(sql=rows, batch_size=10))
        await stream.read()
        await expect_error(
            sql.Query(sql_pb2.QueryRequest(sql="SELECT 1")),
            Code.RESOURCE_EXHAUSTED,
            "POOL_EXHAUSTED",
        )
        stream.cancel()
        await asyncio.sleep(0.1)
        reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"))
    assert reply.rows[0].values[0].int_value == 1


async def test_a_file_database_outlives_the_sidecar(tmp_path: Path) -> None:
    config = sqlite_config(path=str(tmp_path / "app.db"))
    async with sidecar(config) as sql:
        await sql.Execute(sql_pb2.ExecuteRequest(sql="CREATE TABLE t (v TEXT)"))
        await sql.Execute(sql_pb2.ExecuteRequest(sql="INSERT INTO t VALUES ('kept')"))
    async with sidecar(config) as sql:
        reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT v FROM t"))
    assert reply.rows[0].values[0].string_value == "kept"
