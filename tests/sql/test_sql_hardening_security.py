"""SQL hardening (issue #10): read-only holds for every statement sequence (item 1), no
session state outlives a call (item 4), a read-only target refuses a role that could act
on the server (item 5), and a caller's bad SQL never counts against the upstream (item 9).

Everything runs through the real sidecar and the real PostgreSQL (SQLite where it applies).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from pg_roles import login_role, with_user
from sql_backends import sqlite_backend

from generated.integration.v1 import common_pb2, sql_pb2, sql_pb2_grpc
from sidecar.backends.sql import IsolationLevel, Statement
from sidecar.backends.sql.base import check_statement
from sidecar.errors import InvalidArgument
from sidecar.resilience import CircuitState
from sidecar.server import RunningServer
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

Code = grpc.StatusCode
ExpectError = Callable[..., Awaitable[grpc.aio.AioRpcError]]
Stub = sql_pb2_grpc.SqlServiceStub
ONE_CONNECTION = "{min_connections: 1, max_connections: 1}"


@contextlib.asynccontextmanager
async def sidecar(config: str) -> AsyncIterator[tuple[RunningServer, Stub]]:
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield running, sql_pb2_grpc.SqlServiceStub(channel)


@pytest.fixture
async def app_role(pg_dsn: str) -> AsyncIterator[str]:
    """A plain login role (no superuser, no server-side powers)."""
    async with login_role(pg_dsn) as name:
        yield name


@pytest.fixture
async def seeded(pg_dsn: str, table: str, app_role: str) -> str:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {table} (id int, name text); INSERT INTO {table} VALUES (1, 'a')"
        )
    finally:
        await conn.close()
    return table


async def count(pg_dsn: str, table: str) -> int:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


def stmt(sql: str, *params: common_pb2.Value) -> sql_pb2.Statement:
    return sql_pb2.Statement(sql=sql, parameters=list(params))


# -- item 1: read-only holds for any statement sequence -----------------------------------------

CHAINS = [
    ["commit and chain", "set transaction read write", "insert into {t} values (2, 'x')"],
    ["ROLLBACK AND CHAIN", "SET TRANSACTION READ WRITE", "INSERT INTO {t} VALUES (2, 'x')"],
    ["/* a */ ; -- b\n Commit /* c */ and chain", "insert into {t} values (2, 'x')"],
    ["end and chain", "set transaction read write", "insert into {t} values (2, 'x')"],
]


@pytest.mark.parametrize("chain", CHAINS, ids=["commit", "rollback", "comments", "end"])
async def test_a_chained_transaction_on_a_read_only_target_writes_nothing(
    chain: list[str],
    seeded: str,
    app_role: str,
    pg_dsn: str,
    config_for: Callable[..., str],
    expect_error: ExpectError,
) -> None:
    config = config_for(with_user(pg_dsn, app_role), read_only="true")
    async with sidecar(config) as (_, sql):
        await expect_error(
            sql.Transaction(
                sql_pb2.TransactionRequest(statements=[stmt(s.format(t=seeded)) for s in chain])
            ),
            Code.INVALID_ARGUMENT,
            "STATEMENT_NOT_ALLOWED",
            statement_index="0",
        )
    assert await count(pg_dsn, seeded) == 1


@pytest.mark.parametrize("chain", CHAINS[:2], ids=["commit", "rollback"])
async def test_a_chained_read_only_transaction_on_a_read_write_target_writes_nothing(
    chain: list[str],
    seeded: str,
    app_role: str,
    pg_dsn: str,
    config_for: Callable[..., str],
    expect_error: ExpectError,
) -> None:
    async with sidecar(config_for(with_user(pg_dsn, app_role))) as (_, sql):
        await expect_error(
            sql.Transaction(
                sql_pb2.TransactionRequest(
                    read_only=True, statements=[stmt(s.format(t=seeded)) for s in chain]
                )
            ),
            Code.INVALID_ARGUMENT,
            "STATEMENT_NOT_ALLOWED",
        )
    assert await count(pg_dsn, seeded) == 1


DO_BYPASSES = [
    "DO $$ BEGIN COMMIT; SET TRANSACTION READ WRITE; INSERT INTO {t} VALUES (3, 'x'); END $$",
    "DO $$ BEGIN SET default_transaction_read_only = off; COMMIT; "
    "INSERT INTO {t} VALUES (3, 'x'); END $$",
]


@pytest.mark.parametrize("rpc", ["Execute", "Query"])
@pytest.mark.parametrize("body", DO_BYPASSES, ids=["set-transaction", "session-default"])
async def test_a_block_that_commits_cannot_write_on_a_read_only_target(
    rpc: str,
    body: str,
    seeded: str,
    app_role: str,
    pg_dsn: str,
    config_for: Callable[..., str],
    expect_error: ExpectError,
) -> None:
    config = config_for(with_user(pg_dsn, app_role), read_only="true")
    sql_text = body.format(t=seeded)
    async with sidecar(config) as (_, sql):
        call = (
            sql.Execute(sql_pb2.ExecuteRequest(sql=sql_text))
            if rpc == "Execute"
            else sql.Query(sql_pb2.QueryRequest(sql=sql_text))
        )
        # PostgreSQL refuses the COMMIT: the call runs inside a READ ONLY transaction block.
        await expect_error(call, Code.FAILED_PRECONDITION, "SQL_ERROR", sqlstate="2D000")
    assert await count(pg_dsn, seeded) == 1


async def test_no_rpc_gets_a_write_through_a_read_only_target_after_changing_the_session(
    seeded: str,
    app_role: str,
    pg_dsn: str,
    config_for: Callable[..., str],
    expect_error: ExpectError,
) -> None:
    config = config_for(
        with_user(pg_dsn, app_role), read_only="true", connection_pool=ONE_CONNECTION
    )
    insert = f"INSERT INTO {seeded} VALUES (4, 'x')"
    async with sidecar(config) as (_, sql):
        for change in (
            "SET default_transaction_read_only = off",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        ):
            await sql.Execute(sql_pb2.ExecuteRequest(sql=change))
            await expect_error(
                sql.Execute(sql_pb2.ExecuteRequest(sql=insert)), Code.PERMISSION_DENIED, "READ_ONLY"
            )
            await expect_error(
                sql.Query(sql_pb2.QueryRequest(sql=f"{insert} RETURNING id")),
                Code.PERMISSION_DENIED,
                "READ_ONLY",
            )
            stream = sql.QueryStream(sql_pb2.QueryStreamRequest(sql=f"{insert} RETURNING id"))
            await expect_error(_drain(stream), Code.PERMISSION_DENIED, "READ_ONLY")
    assert await count(pg_dsn, seeded) == 1


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize("text", ["BEGIN", "start transaction", "COMMIT", "rollback", "abort"])
async def test_transaction_control_is_refused_in_a_plain_execute(
    text: str, sql: Stub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Execute(sql_pb2.ExecuteRequest(sql=text)),
        Code.INVALID_ARGUMENT,
        "STATEMENT_NOT_ALLOWED",
        field="sql",
    )


@pytest.mark.parametrize(
    ("text", "nested"),
    [
        ("COMMIT", True),
        ("  commit work", True),
        ("END", True),
        ("end transaction", True),
        (";;BEGIN", True),
        ("/* x /* nested */ y */ COMMIT AND CHAIN", True),
        ("-- c\nROLLBACK AND CHAIN", True),
        ("ROLLBACK PREPARED 'x'", True),
        ("COMMIT PREPARED 'x'", True),
        ("PREPARE TRANSACTION 'x'", True),
        ("start transaction read write", True),
        ("/* x /* not nested in SQLite */ COMMIT", False),
        ("DISCARD ALL", True),
        ("deallocate all", True),
    ],
)
def test_the_statement_check_refuses_transaction_and_session_control(
    text: str, nested: bool
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_statement(Statement(text), nested_comments=nested)
    assert caught.value.reason == "STATEMENT_NOT_ALLOWED"


@pytest.mark.parametrize(
    "text",
    [
        "SELECT 'commit'",
        "ROLLBACK TO SAVEPOINT s",
        "rollback work to s",
        "SAVEPOINT s",
        "RELEASE SAVEPOINT s",
        'SELECT 1 AS "commit"',
        "/* COMMIT */ SELECT 1",
        "-- BEGIN\nSELECT 1",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "committed_at",  # a word that starts with a keyword is not the keyword
    ],
)
def test_the_statement_check_lets_other_statements_through(text: str) -> None:
    check_statement(Statement(text), nested_comments=True)


# -- item 4: no session state outlives a call ---------------------------------------------------

SESSION_STATE = [
    # (what a call leaves behind, what the next call sees on a clean session, clean answer)
    ("CREATE TEMP TABLE leak_t AS SELECT 1 AS x", "SELECT to_regclass('pg_temp.leak_t')::text", ""),
    (
        "PREPARE leak_p AS SELECT 1",
        "SELECT count(*)::text FROM pg_prepared_statements WHERE from_sql",
        "0",
    ),
    (
        "DO $$ BEGIN EXECUTE 'PREPARE leak_q AS SELECT 1'; END $$",
        "SELECT count(*)::text FROM pg_prepared_statements WHERE from_sql",
        "0",
    ),
    ("SET ROLE {role}", "SELECT current_user::text", "postgres"),
    (
        "SET SESSION AUTHORIZATION {role}",
        "SELECT session_user::text || ',' || current_user::text",
        "postgres,postgres",
    ),
    (
        "SELECT set_config('app.tenant', 'ada', false)",
        "SELECT coalesce(current_setting('app.tenant', true), '')",
        "",
    ),
    (
        "SELECT pg_advisory_lock(4242)",
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' "
        "AND pid = pg_backend_pid()",
        "0",
    ),
    ("LISTEN leak_channel", "SELECT count(*)::text FROM pg_listening_channels()", "0"),
    ("SELECT nextval('{seq}')::text", "SELECT leak_probe_lastval()", ""),
]
STATE_IDS = [
    "temp-table",
    "prepare",
    "prepare-in-do",
    "set-role",
    "session-authorization",
    "set-config",
    "advisory-lock",
    "listen",
    "sequence-lastval",
]


# On a read-only target every call runs in a READ ONLY transaction, which its release rolls
# back in the same message as the session reset. What such a transaction can leave behind
# (from "prepare" to "advisory-lock"; it cannot create tables or advance sequences, and a
# LISTEN rolled back never listened):
READ_ONLY_STATE_IDS = STATE_IDS[STATE_IDS.index("prepare") : STATE_IDS.index("listen")]
SESSION_CASES = [
    pytest.param(read_only, via, *state, id=f"{name}-{via}{'-read-only' if read_only else ''}")
    for name, state in zip(STATE_IDS, SESSION_STATE, strict=True)
    for read_only, vias in ((False, ("Execute", "Transaction")), (True, ("Execute", "Query")))
    if name in READ_ONLY_STATE_IDS or not read_only
    for via in vias
]


@pytest.mark.parametrize(("read_only", "via", "dirty", "probe", "clean"), SESSION_CASES)
async def test_session_state_does_not_reach_the_next_call(
    read_only: bool,
    via: str,
    dirty: str,
    probe: str,
    clean: str,
    app_role: str,
    pg_dsn: str,
    table: str,
    config_for: Callable[..., str],
) -> None:
    seq = f"{table}_seq"
    await _create_sequence_and_lastval_probe(pg_dsn, seq)
    dirty = dirty.format(role=app_role, seq=seq)
    settings = {"read_only": "true", "allow_privileged_role": "true"} if read_only else {}
    config = config_for(pg_dsn, connection_pool=ONE_CONNECTION, **settings)
    async with sidecar(config) as (_, sql):
        if via == "Execute":
            await sql.Execute(sql_pb2.ExecuteRequest(sql=dirty))
        elif via == "Query":
            await sql.Query(sql_pb2.QueryRequest(sql=dirty))
        else:
            await sql.Transaction(sql_pb2.TransactionRequest(statements=[stmt(dirty)]))
        reply = await sql.Query(sql_pb2.QueryRequest(sql=probe))
    value = reply.rows[0].values[0]
    assert ("" if value.HasField("null_value") else value.string_value) == clean


async def _create_sequence_and_lastval_probe(pg_dsn: str, seq: str) -> None:
    """A sequence, and `leak_probe_lastval()`: lastval() as text, '' when the session has none."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE SEQUENCE {seq}")
        await conn.execute(
            "CREATE OR REPLACE FUNCTION leak_probe_lastval() RETURNS text LANGUAGE plpgsql AS $$"
            " BEGIN RETURN lastval()::text; EXCEPTION WHEN object_not_in_prerequisite_state"
            " THEN RETURN ''; END $$"
        )
    finally:
        await conn.close()


async def test_many_callers_never_see_each_others_temp_tables(
    pg_dsn: str, config_for: Callable[..., str]
) -> None:
    async with sidecar(config_for(pg_dsn)) as (_, sql):
        for n in range(20):
            seen = await sql.Query(
                sql_pb2.QueryRequest(
                    sql="SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()"
                )
            )
            assert seen.rows[0].values[0].int_value == 0, n
            await sql.Execute(sql_pb2.ExecuteRequest(sql=f"CREATE TEMP TABLE mine_{n} (x int)"))


async def test_sqlite_temp_objects_do_not_outlive_the_call() -> None:
    backend = sqlite_backend(path=":memory:")
    try:
        await backend.execute(Statement("CREATE TABLE base (x int)"), deadline=None)
        await backend.execute(Statement("CREATE TEMP TABLE leak (x int)"), deadline=None)
        await backend.execute(Statement("CREATE TEMP VIEW leak_v AS SELECT 1"), deadline=None)
        await backend.transaction(
            [
                Statement("CREATE TEMP TABLE inside (x int)"),
                Statement("INSERT INTO inside VALUES (1)"),  # usable within its own call
                Statement("CREATE TEMP TRIGGER leak_tr AFTER INSERT ON base BEGIN SELECT 1; END"),
            ],
            isolation=IsolationLevel.DEFAULT,
            read_only=False,
            max_rows=10,
            deadline=None,
        )
        left = await backend.query(
            Statement("SELECT name FROM temp.sqlite_master"), max_rows=10, deadline=None
        )
        assert list(left.rows) == []
    finally:
        await backend.close()


# -- item 5: a read-only target refuses a role that can act on the server ------------------------


async def test_a_read_only_target_on_a_superuser_role_is_refused(
    pg_dsn: str, config_for: Callable[..., str], expect_error: ExpectError
) -> None:
    async with sidecar(config_for(pg_dsn, read_only="true")) as (_, sql):
        for text in ("SELECT pg_reload_conf()", "SELECT 1"):
            await expect_error(
                sql.Query(sql_pb2.QueryRequest(sql=text)),
                Code.FAILED_PRECONDITION,
                "READ_ONLY",
                privileges="superuser",
            )


async def test_a_read_only_target_on_a_role_that_reads_server_files_is_refused(
    pg_dsn: str, config_for: Callable[..., str], expect_error: ExpectError
) -> None:
    async with login_role(pg_dsn, grants=("pg_read_server_files", "pg_signal_backend")) as role:
        config = config_for(with_user(pg_dsn, role), read_only="true")
        async with sidecar(config) as (_, sql):
            await expect_error(
                sql.Query(sql_pb2.QueryRequest(sql="SELECT 1")),
                Code.FAILED_PRECONDITION,
                "READ_ONLY",
                privileges="pg_read_server_files,pg_signal_backend",
            )


@pytest.mark.parametrize(
    ("plain_role", "options", "warns"),
    [
        (False, {"read_only": "true", "allow_privileged_role": "true"}, True),
        (False, {}, True),
        (True, {"read_only": "true"}, False),
    ],
    ids=[
        "allow_privileged_role serves a read-only superuser target, warning",
        "a read-write superuser target is served, warning",
        "a read-only plain role is served without a warning",
    ],
)
async def test_a_served_target_warns_exactly_when_its_role_is_privileged(
    pg_dsn: str,
    app_role: str,
    config_for: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    plain_role: bool,
    options: dict[str, str],
    warns: bool,
) -> None:
    config = config_for(with_user(pg_dsn, app_role) if plain_role else pg_dsn, **options)
    with caplog.at_level(logging.WARNING, logger="sidecar.backends.sql"):
        async with sidecar(config) as (_, sql):
            reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"))
    assert reply.rows[0].values[0].int_value == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "sidecar.backends.sql"]
    assert any("superuser" in message for message in warnings) == warns
    assert bool(warnings) == warns


# -- item 9: a caller's bad SQL never counts against the upstream --------------------------------


async def test_nul_in_the_sql_or_a_parameter_is_invalid_argument(
    sql: Stub, expect_error: ExpectError
) -> None:
    await expect_error(
        sql.Query(sql_pb2.QueryRequest(sql="SELECT 'a\x00b'")),
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field="sql",
    )
    await expect_error(
        sql.Query(
            sql_pb2.QueryRequest(
                sql="SELECT $1::text", parameters=[common_pb2.Value(string_value="a\x00b")]
            )
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        field="parameters[0]",
    )
    await expect_error(
        sql.Transaction(
            sql_pb2.TransactionRequest(statements=[stmt("SELECT 1"), stmt("SELECT '\x00'")])
        ),
        Code.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        statement_index="1",
    )


async def test_bad_sql_from_callers_never_opens_the_breaker(
    pg_dsn: str, config_for: Callable[..., str], expect_error: ExpectError
) -> None:
    config = config_for(
        pg_dsn,
        connection_pool=ONE_CONNECTION,
        circuit_breaker="{failure_threshold: 2}",
        retry_policy="{max_retries: 2, base_delay: 10ms, max_delay: 20ms}",
    )
    suicide = "SELECT pg_terminate_backend(pg_backend_pid())"
    async with sidecar(config) as (running, sql):
        for _ in range(3):
            await expect_error(
                sql.Query(sql_pb2.QueryRequest(sql="SELECT 'a\x00b'")),
                Code.INVALID_ARGUMENT,
                "INVALID_REQUEST",
            )
            await expect_error(
                sql.Query(sql_pb2.QueryRequest(sql=suicide)),
                Code.ABORTED,
                "SQL_ERROR",
                sqlstate="57P01",
            )
            await expect_error(
                sql.Transaction(sql_pb2.TransactionRequest(statements=[stmt(suicide)])),
                Code.ABORTED,
                "SQL_ERROR",
                sqlstate="57P01",
                statement_index="0",
            )
            stream = sql.QueryStream(sql_pb2.QueryStreamRequest(sql=suicide))
            await expect_error(_drain(stream), Code.ABORTED, "SQL_ERROR", sqlstate="57P01")
        breaker = running.integrations.resolve("sql", "db").pipeline.snapshot().circuit_breaker
        assert breaker is not None
        assert (breaker.state, breaker.consecutive_failures) == (CircuitState.CLOSED, 0)
        reply = await sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"))
    assert reply.rows[0].values[0].int_value == 1
