"""Answers larger than the server may send (issue #10, item 10): a Transaction rolls back
before COMMIT and says RESULT_TOO_LARGE, so a retry cannot write the rows twice; a Query says
the same; QueryStream messages stay under the limit. Through the real PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

import grpc
import pytest
from support import error_info

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc
from sidecar.backends.sql import Column, Interval, Json, ResultSet
from sidecar.backends.sql.base import result_size
from sidecar.servicers._sql_values import columns_to_proto, rows_to_proto
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]
KiB = 1024
MiB = 1024 * KiB
DEFAULT_LIMIT = 4 * MiB


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends in these tests: a row source and a text maker."""

    service: str
    # `rows(n)` is a FROM clause yielding column g = 1..n; `text(n)` an n-byte string.
    rows: Callable[[int], str]
    text: Callable[[int], str]


def postgres(dsn: str) -> Dialect:
    return Dialect(
        f"  db:\n    type: sql\n    backend: postgres\n    dsn: {dsn}\n",
        lambda n: f"generate_series(1, {n}) g",
        lambda n: f"repeat('y', {n})",
    )


SQLITE = Dialect(
    "  db:\n    type: sql\n    backend: sqlite\n",
    lambda n: (
        f"(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) "
        "SELECT g FROM s)"
    ),
    lambda n: f"replace(hex(zeroblob({n // 2})), '0', 'y')",
)


@asynccontextmanager
async def sidecar(dialect: Dialect, server: str = "") -> AsyncIterator[sql_pb2_grpc.SqlServiceStub]:
    config = f"server: {{access_log: false{server}}}\nservices:\n{dialect.service}"
    # The client accepts any size, so only the sidecar's own limit is under test.
    unlimited = [("grpc.max_receive_message_length", -1)]
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address, options=unlimited) as channel,
    ):
        yield sql_pb2_grpc.SqlServiceStub(channel)


@pytest.fixture(params=["postgres", "sqlite"])
def dialect(request: pytest.FixtureRequest) -> Dialect:
    if request.param == "postgres":
        return postgres(request.getfixturevalue("pg_dsn"))
    return SQLITE


async def count(sql: sql_pb2_grpc.SqlServiceStub, table: str) -> int:
    reply = await sql.Query(sql_pb2.QueryRequest(sql=f"SELECT count(*) FROM {table}"))
    return reply.rows[0].values[0].int_value


async def test_a_transaction_whose_answer_is_too_large_rolls_back(
    dialect: Dialect, table: str, expect_error: ExpectError
) -> None:
    # The case: 1,000 INSERT ... RETURNING of 5,000 bytes each, a 5 MB answer.
    insert = f"INSERT INTO {table} VALUES ($1, {dialect.text(5000)}) RETURNING id, body"
    statements = [
        sql_pb2.Statement(sql=insert, parameters=[common_pb2.Value(int_value=i)])
        for i in range(1000)
    ]
    async with sidecar(dialect) as sql:
        await sql.Execute(sql_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id int, body text)"))
        error = await expect_error(
            sql.Transaction(sql_pb2.TransactionRequest(statements=statements)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RESULT_TOO_LARGE",
        )
        limit = int(error_metadata(error)["max_bytes"])
        assert DEFAULT_LIMIT - 64 * KiB <= limit < DEFAULT_LIMIT
        assert await count(sql, table) == 0  # rolled back: a retry writes nothing twice


async def test_a_transaction_just_under_the_limit_commits(dialect: Dialect, table: str) -> None:
    insert = (
        f"INSERT INTO {table} SELECT g, {dialect.text(5000)} FROM {dialect.rows(700)} "
        "RETURNING id, body"
    )
    async with sidecar(dialect) as sql:
        await sql.Execute(sql_pb2.ExecuteRequest(sql=f"CREATE TABLE {table} (id int, body text)"))
        reply = await sql.Transaction(
            sql_pb2.TransactionRequest(statements=[sql_pb2.Statement(sql=insert)])
        )
        assert len(reply.results[0].rows) == 700  # 3.5 MB: fits
        assert await count(sql, table) == 700


async def test_a_query_whose_answer_is_too_large_says_so(
    dialect: Dialect, expect_error: ExpectError
) -> None:
    async with sidecar(dialect) as sql:
        await expect_error(
            sql.Query(
                sql_pb2.QueryRequest(
                    sql=f"SELECT g, {dialect.text(5000)} FROM {dialect.rows(1000)}"
                )
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RESULT_TOO_LARGE",
        )


async def test_the_limit_follows_the_servers_max_send_message_size(
    dialect: Dialect, expect_error: ExpectError
) -> None:
    small = f"SELECT g, {dialect.text(1000)} FROM {dialect.rows(200)}"  # 200 KB
    async with sidecar(dialect, ", max_send_message_size: 128KiB") as sql:
        error = await expect_error(
            sql.Query(sql_pb2.QueryRequest(sql=small)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RESULT_TOO_LARGE",
        )
        assert int(error_metadata(error)["max_bytes"]) < 128 * KiB
        # A stream of the same rows arrives whole, each message under the limit.
        messages = [
            m async for m in sql.QueryStream(sql_pb2.QueryStreamRequest(sql=small, batch_size=500))
        ]
        assert sum(len(m.rows) for m in messages) == 200
        assert all(m.ByteSize() <= 128 * KiB for m in messages)


async def test_a_stream_row_larger_than_a_message_says_so(
    dialect: Dialect, expect_error: ExpectError
) -> None:
    async with sidecar(dialect, ", max_send_message_size: 128KiB") as sql:
        call = sql.QueryStream(
            sql_pb2.QueryStreamRequest(
                sql=f"SELECT g, {dialect.text(200_000)} FROM {dialect.rows(3)}"
            )
        )
        await expect_error(_drain(call), grpc.StatusCode.RESOURCE_EXHAUSTED, "RESULT_TOO_LARGE")


async def _drain(call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
    async for _ in call:
        pass


def error_metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return dict(error_info(error).metadata)


SAMPLE_VALUES = [
    None,
    True,
    -1,
    2**63 - 1,
    1.5,
    Decimal("-1E+30"),
    "",
    "é" * 300,
    "x" * 20_000,
    b"\x00" * 200,
    dt.datetime(1, 1, 1),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
    dt.date(2024, 2, 29),
    dt.timedelta(days=-99_999_999, microseconds=1),
    uuid.uuid4(),
    Json('{"a": "é"}'),
    Interval(-(2**31), -(2**31), -(2**63)),
    [1, [None, "x"], []],
    ("composite", 1),
    dt.time(12, 0),  # a type with no kind of its own travels as text
]


@pytest.mark.parametrize("value", SAMPLE_VALUES, ids=lambda v: type(v).__name__)
def test_the_size_estimate_never_falls_short_of_the_encoded_answer(value: object) -> None:
    result = ResultSet((Column("c", "text"),), [[value], [value]], "SELECT 2", 2)
    sent = sql_pb2.TransactionResponse(
        results=[
            sql_pb2.StatementResult(
                command_tag=result.command_tag,
                rows_affected=result.rows_affected,
                columns=columns_to_proto(result.columns),
                rows=rows_to_proto(result.rows),
            )
        ]
    )
    assert sent.ByteSize() <= result_size(result) <= sent.ByteSize() + 64
