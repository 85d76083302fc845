"""One conformance suite for every `SqlBackend`: PostgreSQL (real server) and SQLite run the
same behaviours through the domain API, with only the placeholder syntax told apart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from pg_roles import login_role, with_user
from sql_backends import postgres_backend, sqlite_backend

from sidecar.backends.sql import IsolationLevel, SqlBackend, Statement
from sidecar.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)
from sidecar.resilience import SYSTEM_CLOCK, Deadline

BACKENDS = ["postgres", "sqlite"]
# A statement that keeps the database busy for seconds, per backend.
SLOW = {
    "postgres": "SELECT pg_sleep(5)",
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "SELECT count(*) FROM c",
}


class Db:
    """The backend under test and its dialect."""

    def __init__(self, kind: str, backend: SqlBackend) -> None:
        self.kind = kind
        self.backend = backend

    def p(self, n: int) -> str:
        """The n-th placeholder (1-based)."""
        return f"${n}" if self.kind == "postgres" else f"?{n}"

    async def run(self, sql: str, *params: Any) -> Any:
        return await self.backend.execute(Statement(sql, params), deadline=None)

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        result = await self.backend.query(Statement(sql, params), max_rows=1000, deadline=None)
        return [tuple(row) for row in result.rows]


def _factory(kind: str, pg_dsn: str, **options: Any) -> SqlBackend:
    if kind == "postgres":
        options.setdefault("dsn", pg_dsn)
        return postgres_backend(min_size=1, max_size=2, **options)
    return sqlite_backend(path=":memory:", **options)


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, pg_dsn: str, table: str) -> AsyncIterator[Db]:
    backend = _factory(request.param, pg_dsn)
    yield Db(request.param, backend)
    await backend.close()


@pytest.fixture
def make_backend(pg_dsn: str) -> Callable[..., SqlBackend]:
    return lambda kind, **options: _factory(kind, pg_dsn, **options)


async def test_query_returns_columns_rows_and_a_select_tag(db: Db, table: str) -> None:
    await db.run(f"CREATE TABLE {table} (id integer PRIMARY KEY, name text)")
    await db.run(f"INSERT INTO {table} VALUES ({db.p(1)}, {db.p(2)})", 1, "ada")
    result = await db.backend.query(
        Statement(f"SELECT id, name FROM {table}"), max_rows=10, deadline=None
    )
    assert [c.name for c in result.columns] == ["id", "name"]
    assert [tuple(r) for r in result.rows] == [(1, "ada")]
    assert (result.command_tag, result.rows_affected) == ("SELECT 1", 1)


async def test_execute_reports_the_command_tag_and_rows_affected(db: Db, table: str) -> None:
    await db.run(f"CREATE TABLE {table} (id integer)")
    inserted = await db.run(f"INSERT INTO {table} VALUES (1), (2), (3)")
    updated = await db.run(f"UPDATE {table} SET id = id + 10 WHERE id > {db.p(1)}", 1)
    deleted = await db.run(f"DELETE FROM {table}")
    assert (inserted.command_tag, inserted.rows_affected) == ("INSERT 0 3", 3)
    assert (updated.command_tag, updated.rows_affected) == ("UPDATE 2", 2)
    assert (deleted.command_tag, deleted.rows_affected) == ("DELETE 3", 3)


async def test_parameters_are_bound_never_spliced(db: Db, table: str) -> None:
    await db.run(f"CREATE TABLE {table} (name text)")
    hostile = "x'); DROP TABLE " + table + "; --"
    await db.run(f"INSERT INTO {table} VALUES ({db.p(1)})", hostile)
    assert await db.rows(f"SELECT name FROM {table}") == [(hostile,)]


async def test_exact_decimals_keep_every_digit(db: Db, table: str) -> None:
    # SQLite's NUMERIC affinity would turn the exact text into a float: store it as TEXT.
    column = "numeric" if db.kind == "postgres" else "text"
    await db.run(f"CREATE TABLE {table} (amount {column})")
    await db.run(f"INSERT INTO {table} VALUES ({db.p(1)})", Decimal("12345678901234567.89"))
    [(amount,)] = await db.rows(f"SELECT CAST(amount AS text) FROM {table}")
    assert amount == "12345678901234567.89"


async def test_unique_violation_is_already_exists_with_sqlstate_23505(db: Db, table: str) -> None:
    await db.run(f"CREATE TABLE {table} (id integer PRIMARY KEY)")
    await db.run(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(AlreadyExists) as caught:
        await db.run(f"INSERT INTO {table} VALUES (1)")
    assert caught.value.metadata["sqlstate"] == "23505"


async def test_not_null_violation_is_failed_precondition(db: Db, table: str) -> None:
    await db.run(f"CREATE TABLE {table} (id integer NOT NULL)")
    with pytest.raises(FailedPrecondition) as caught:
        await db.run(f"INSERT INTO {table} VALUES (NULL)")
    assert caught.value.metadata["sqlstate"] == "23502"


async def test_a_syntax_error_is_invalid_argument(db: Db) -> None:
    with pytest.raises(InvalidArgument):
        await db.rows("SELEC 1")


async def test_a_failing_statement_rolls_back_the_whole_transaction(db: Db, table: str) -> None:
    await db.run(f"CREATE TABLE {table} (id integer PRIMARY KEY)")
    statements = [
        Statement(f"INSERT INTO {table} VALUES (1)"),
        Statement(f"INSERT INTO {table} VALUES (2)"),
        Statement(f"INSERT INTO {table} VALUES (1)"),
    ]
    with pytest.raises(AlreadyExists) as caught:
        await db.backend.transaction(
            statements,
            isolation=IsolationLevel.DEFAULT,
            read_only=False,
            max_rows=10,
            deadline=None,
        )
    assert caught.value.metadata["statement_index"] == "2"
    assert await db.rows(f"SELECT count(*) FROM {table}") == [(0,)]


async def test_a_transaction_commits_and_returns_each_result(db: Db, table: str) -> None:
    results = await db.backend.transaction(
        [
            Statement(f"CREATE TABLE {table} (id integer)"),
            Statement(f"INSERT INTO {table} VALUES ({db.p(1)}), ({db.p(2)})", (1, 2)),
            Statement(f"SELECT id FROM {table} ORDER BY id"),
        ],
        isolation=IsolationLevel.SERIALIZABLE,
        read_only=False,
        max_rows=10,
        deadline=None,
    )
    assert [r.command_tag for r in results] == ["CREATE TABLE", "INSERT 0 2", "SELECT 2"]
    assert [tuple(r) for r in results[2].rows] == [(1,), (2,)]


async def test_a_statement_ending_the_transaction_is_refused(db: Db, table: str) -> None:
    await db.run(f"CREATE TABLE {table} (id integer)")
    with pytest.raises(InvalidArgument, match="not allowed"):
        await db.backend.transaction(
            [Statement("COMMIT"), Statement(f"INSERT INTO {table} VALUES (1)")],
            isolation=IsolationLevel.DEFAULT,
            read_only=False,
            max_rows=10,
            deadline=None,
        )
    assert await db.rows(f"SELECT count(*) FROM {table}") == [(0,)]


async def test_a_read_only_transaction_refuses_writes(db: Db, table: str) -> None:
    await db.run(f"CREATE TABLE {table} (id integer)")
    with pytest.raises(PermissionDenied) as caught:
        await db.backend.transaction(
            [Statement(f"INSERT INTO {table} VALUES (1)")],
            isolation=IsolationLevel.DEFAULT,
            read_only=True,
            max_rows=10,
            deadline=None,
        )
    assert caught.value.reason == "READ_ONLY"
    await db.run(f"INSERT INTO {table} VALUES (1)")  # the target itself still writes


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_read_only_target_refuses_every_write(
    kind: str, make_backend: Callable[..., SqlBackend], table: str, pg_dsn: str
) -> None:
    if kind == "postgres":
        writer = make_backend(kind)
        await writer.execute(Statement(f"CREATE TABLE {table} (id integer)"), deadline=None)
        await writer.close()
    async with contextlib.AsyncExitStack() as stack:
        options: dict[str, Any] = {"read_only": True}
        if kind == "postgres":  # a read-only target refuses a superuser: a plain role
            role = await stack.enter_async_context(login_role(pg_dsn))
            options["dsn"] = with_user(pg_dsn, role)
        reader = make_backend(kind, **options)
        stack.push_async_callback(reader.close)
        with pytest.raises(PermissionDenied) as caught:
            await reader.execute(Statement(f"CREATE TABLE {table}_2 (id integer)"), deadline=None)
        assert (caught.value.reason, caught.value.metadata["sqlstate"]) == ("READ_ONLY", "25006")
        assert reader.read_only


async def test_more_rows_than_max_rows_is_resource_exhausted(db: Db) -> None:
    numbers = (
        "SELECT generate_series(1, 100)"
        if db.kind == "postgres"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) "
        "SELECT x FROM c"
    )
    with pytest.raises(ResourceExhausted) as caught:
        await db.backend.query(Statement(numbers), max_rows=99, deadline=None)
    assert caught.value.reason == "TOO_MANY_ROWS"


async def test_the_deadline_stops_a_long_statement(db: Db) -> None:
    deadline = Deadline.after(0.5, SYSTEM_CLOCK)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(DeadlineExceeded) as caught:
        await db.backend.query(Statement(SLOW[db.kind]), max_rows=10, deadline=deadline)
    assert loop.time() - started < 0.5
    assert caught.value.metadata["sqlstate"] == "57014"
    assert await db.rows("SELECT 1") == [(1,)]  # the connection is usable again


async def test_a_stream_reads_every_row_in_batches_and_frees_the_connection(db: Db) -> None:
    numbers = (
        "SELECT generate_series(1, 25) AS n"
        if db.kind == "postgres"
        else "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 25) "
        "SELECT n FROM c"
    )
    stream = await db.backend.stream(Statement(numbers), batch_size=10, deadline=None)
    batches = []
    try:
        while batch := await stream.fetch():
            batches.append([row[0] for row in batch])
    finally:
        await stream.close()
    assert [c.name for c in stream.columns] == ["n"]
    assert [len(b) for b in batches] == [10, 10, 5]
    assert await db.rows("SELECT 1") == [(1,)]


async def test_closing_a_stream_early_frees_the_connection(db: Db) -> None:
    numbers = (
        "SELECT generate_series(1, 1000)"
        if db.kind == "postgres"
        else "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) "
        "SELECT n FROM c"
    )
    for _ in range(3):
        stream = await db.backend.stream(Statement(numbers), batch_size=10, deadline=None)
        await stream.fetch()
        await stream.close()
        await stream.close()  # idempotent
    assert await db.rows("SELECT 1") == [(1,)]


async def test_a_wrong_parameter_count_is_invalid_argument(db: Db) -> None:
    with pytest.raises(InvalidArgument):
        await db.rows(f"SELECT {db.p(1)}, {db.p(2)}", 1)


async def test_ping_answers_when_the_database_does(db: Db) -> None:
    await db.backend.ping()


async def test_two_statements_in_one_call_are_invalid_argument(db: Db, table: str) -> None:
    with pytest.raises(InvalidArgument):
        await db.run(f"CREATE TABLE {table} (id integer); DROP TABLE {table}")
