"""SQL services on a named connection (`connections:` with `type: postgres` / `type: sqlite`):
services naming one connection share its one pool, and what is per service (read_only,
the request timeout) still holds per service on the shared sessions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import grpc
import pytest
from pg_roles import login_role, with_user

from generated.integration.v1 import sql_pb2, sql_pb2_grpc
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]
Code = grpc.StatusCode
Stub = sql_pb2_grpc.SqlServiceStub


@asynccontextmanager
async def sidecar(config: str) -> AsyncIterator[tuple[RunningServer, Stub]]:
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield running, sql_pb2_grpc.SqlServiceStub(channel)


def shared_config(dsn: str, *, pool: str, reports: str = "") -> str:
    """Two services, `orders` (read-write) and `reports`, on the postgres connection `pg`."""
    return (
        "server: {access_log: false}\n"
        "connections:\n"
        f"  pg: {{type: postgres, dsn: '{dsn}', connection_pool: {pool}}}\n"
        "services:\n"
        "  orders: {type: sql, connection: pg, retry_policy: {max_retries: 0}}\n"
        f"  reports: {{type: sql, connection: pg, retry_policy: {{max_retries: 0}}{reports}}}\n"
    )


async def value(sql: Stub, target: str, text: str) -> object:
    reply = await sql.Query(sql_pb2.QueryRequest(target=target, sql=text))
    cell = reply.rows[0].values[0]
    return getattr(cell, cell.WhichOneof("kind") or "null_value")


async def sessions(dsn: str) -> int:
    """The sidecar's sessions open on this database now."""
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'integration-sidecar'"
        )
    finally:
        await conn.close()
    return count


async def test_two_services_naming_one_connection_share_one_pool(pg_dsn: str) -> None:
    config = shared_config(pg_dsn, pool="{min_connections: 1, max_connections: 2}")
    async with sidecar(config) as (running, sql):
        orders = running.integrations.resolve("sql", "orders").backend
        reports = running.integrations.resolve("sql", "reports").backend
        assert orders.connection is reports.connection is running.integrations.connections.get("pg")
        slow = "SELECT pg_sleep(0.3)::text"
        calls = [
            sql.Query(sql_pb2.QueryRequest(target=target, sql=slow))
            for target in ("orders", "reports") * 3
        ]
        running_calls = asyncio.gather(*calls)
        await asyncio.sleep(0.15)
        during = await sessions(pg_dsn)
        await running_calls
        # One pool of 2 for both services: each service with a pool of its own would open 4.
        assert during == 2
        assert await orders.connection.pool() is await reports.connection.pool()


async def test_read_only_holds_per_service_on_one_shared_session(
    pg_dsn: str, table: str, expect_error: ExpectError
) -> None:
    async with login_role(pg_dsn) as role:  # a read-only target refuses a superuser
        dsn = with_user(pg_dsn, role)
        config = shared_config(
            dsn, pool="{min_connections: 1, max_connections: 1}", reports=", read_only: true"
        )
        async with sidecar(config) as (_, sql):
            # One pooled session serves both services, in turns.
            pid = await value(sql, "orders", "SELECT pg_backend_pid()")
            assert await value(sql, "reports", "SELECT pg_backend_pid()") == pid

            await sql.Execute(
                sql_pb2.ExecuteRequest(target="orders", sql=f"CREATE TABLE {table} (id int)")
            )
            insert = f"INSERT INTO {table} VALUES (1)"
            await expect_error(
                sql.Execute(sql_pb2.ExecuteRequest(target="reports", sql=insert)),
                Code.PERMISSION_DENIED,
                "READ_ONLY",
                sqlstate="25006",
            )
            # The read-only call left nothing behind: the read-write service still writes.
            await sql.Execute(sql_pb2.ExecuteRequest(target="orders", sql=insert))
            assert await value(sql, "orders", "SHOW transaction_read_only") == "off"

            # Whatever the read-write service sets in the session, the next read-only call
            # is still read-only.
            for setting in (
                "SET default_transaction_read_only = off",
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            ):
                await sql.Execute(sql_pb2.ExecuteRequest(target="orders", sql=setting))
                await expect_error(
                    sql.Execute(sql_pb2.ExecuteRequest(target="reports", sql=insert)),
                    Code.PERMISSION_DENIED,
                    "READ_ONLY",
                )
            await expect_error(
                sql.Transaction(
                    sql_pb2.TransactionRequest(
                        target="reports", statements=[sql_pb2.Statement(sql=insert)]
                    )
                ),
                Code.PERMISSION_DENIED,
                "READ_ONLY",
                statement_index="0",
            )
            stream = sql.QueryStream(
                sql_pb2.QueryStreamRequest(
                    target="reports", sql=f"WITH w AS ({insert} RETURNING id) SELECT * FROM w"
                )
            )
            await expect_error(_drain(stream), Code.PERMISSION_DENIED, "READ_ONLY")
            assert await value(sql, "reports", f"SELECT count(*) FROM {table}") == 1
            assert await value(sql, "reports", "SELECT pg_backend_pid()") == pid


async def test_each_service_keeps_its_own_request_timeout_on_a_shared_pool(
    pg_dsn: str, expect_error: ExpectError
) -> None:
    config = shared_config(
        pg_dsn,
        pool="{min_connections: 1, max_connections: 1}",
        reports=", timeouts: {request: 200ms}",
    )
    async with sidecar(config) as (_, sql):
        default = await value(sql, "orders", "SHOW statement_timeout")
        await expect_error(
            sql.Query(sql_pb2.QueryRequest(target="reports", sql="SELECT pg_sleep(2)::text")),
            Code.DEADLINE_EXCEEDED,
            "SQL_ERROR",
            sqlstate="57014",
        )
        # The same session, now the other service's: the session default (30s, less the
        # margin) again.
        assert await value(sql, "orders", "SELECT pg_sleep(0.4)::text") == ""
        assert await value(sql, "orders", "SHOW statement_timeout") == default == "29900ms"


async def test_services_naming_one_sqlite_connection_share_one_database(
    expect_error: ExpectError,
) -> None:
    # `:memory:` is private to one SQLite connection: both services see the table only if
    # they share it.
    config = (
        "connections:\n"
        "  lite: {type: sqlite, path: ':memory:'}\n"
        "services:\n"
        "  writer: {type: sql, connection: lite}\n"
        "  reader: {type: sql, connection: lite, read_only: true}\n"
    )
    async with sidecar(config) as (running, sql):
        assert (
            running.integrations.resolve("sql", "writer").backend.connection
            is running.integrations.resolve("sql", "reader").backend.connection
        )
        await sql.Execute(sql_pb2.ExecuteRequest(target="writer", sql="CREATE TABLE t (x int)"))
        await sql.Execute(sql_pb2.ExecuteRequest(target="writer", sql="INSERT INTO t VALUES (1)"))
        assert await value(sql, "reader", "SELECT count(*) FROM t") == 1
        await expect_error(
            sql.Execute(sql_pb2.ExecuteRequest(target="reader", sql="INSERT INTO t VALUES (2)")),
            Code.PERMISSION_DENIED,
            "READ_ONLY",
        )
        # The reader's authorizer is gone once its call ends.
        await sql.Execute(sql_pb2.ExecuteRequest(target="writer", sql="INSERT INTO t VALUES (3)"))
        assert await value(sql, "writer", "SELECT count(*) FROM t") == 2


async def _drain(stream: object) -> None:
    async for _ in stream:  # type: ignore[attr-defined]
        pass


async def test_sessions_start_read_only_only_when_every_service_on_the_pool_is(
    pg_dsn: str, config_for: Callable[..., str]
) -> None:
    show = "SHOW default_transaction_read_only"
    async with login_role(pg_dsn) as role:
        dsn = with_user(pg_dsn, role)
        async with sidecar(config_for(dsn, read_only="true")) as (_, sql):  # its own pool
            assert await value(sql, "db", show) == "on"
        mixed = shared_config(dsn, pool="{max_connections: 2}", reports=", read_only: true")
        async with sidecar(mixed) as (_, sql):
            assert await value(sql, "orders", show) == "off"
            assert await value(sql, "reports", show) == "off"  # READ ONLY per call instead
