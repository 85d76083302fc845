"""PostgreSQL-only behaviour of the backend: the asyncpg internals it relies on, the
prepared-statement cache, session state that must not leak, and pool errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sql_backends import postgres_backend

from sidecar.backends.sql import Statement
from sidecar.backends.sql import postgres as pg_module
from sidecar.backends.sql.postgres import PostgresBackend
from sidecar.errors import Unavailable


@pytest.fixture
async def backend(pg_dsn: str) -> AsyncIterator[PostgresBackend]:
    running = postgres_backend(dsn=pg_dsn, min_size=1, max_size=1)
    yield running
    await running.close()


def test_the_asyncpg_internals_the_backend_uses_are_still_there() -> None:
    # If an asyncpg upgrade renames them, the backend falls back to slower public calls;
    # this test makes that visible.
    assert pg_module._PREPARE_CACHED is not None
    assert pg_module._BIND_EXECUTE is not None


async def test_a_repeated_statement_is_prepared_once_per_connection(
    backend: PostgresBackend,
) -> None:
    statement = Statement("SELECT $1::int8 + 1", (1,))
    for _ in range(5):
        await backend.query(statement, max_rows=1, deadline=None)
    result = await backend.query(
        Statement(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1", (statement.sql,)
        ),
        max_rows=1,
        deadline=None,
    )
    assert result.rows[0][0] == 1


async def test_a_statement_whose_result_type_changed_is_prepared_again(
    backend: PostgresBackend, table: str
) -> None:
    await backend.execute(Statement(f"CREATE TABLE {table} (a int)"), deadline=None)
    select = Statement(f"SELECT * FROM {table}")
    await backend.query(select, max_rows=1, deadline=None)
    await backend.execute(Statement(f"ALTER TABLE {table} ADD COLUMN b text"), deadline=None)
    result = await backend.query(select, max_rows=1, deadline=None)
    assert [c.name for c in result.columns] == ["a", "b"]


async def test_session_settings_do_not_leak_into_the_next_call(backend: PostgresBackend) -> None:
    await backend.execute(Statement("SET search_path TO nowhere"), deadline=None)
    result = await backend.query(Statement("SHOW search_path"), max_rows=1, deadline=None)
    assert result.rows[0][0] == '"$user", public'


async def test_an_unreachable_database_is_unavailable_on_every_call() -> None:
    port = port_with_nothing_listening()
    backend = postgres_backend(host="127.0.0.1", port=port, user="postgres", connect_timeout=1)
    with pytest.raises(Unavailable):
        await backend.query(Statement("SELECT 1"), max_rows=1, deadline=None)
    with pytest.raises(Unavailable):
        await backend.ping()
    await backend.close()


async def test_the_pool_survives_a_terminated_backend(
    backend: PostgresBackend, pg_dsn: str
) -> None:
    result = await backend.query(Statement("SELECT pg_backend_pid()"), max_rows=1, deadline=None)
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", result.rows[0][0])
    finally:
        await admin.close()
    await asyncio.sleep(0.1)
    after = await backend.query(Statement("SELECT 1"), max_rows=1, deadline=None)
    assert after.rows[0][0] == 1


def port_with_nothing_listening() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_read_only_call_rolls_back_and_resets_its_session_in_one_message(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    execute = asyncpg.Connection.execute

    async def recording(self: asyncpg.Connection, query: str, *args: object) -> str:
        sent.append(query)
        return await execute(self, query, *args)

    monkeypatch.setattr(asyncpg.Connection, "execute", recording)
    backend = postgres_backend(
        dsn=pg_dsn, min_size=1, max_size=1, read_only=True, allow_privileged_role=True
    )
    try:
        for _ in range(3):
            await backend.query(Statement("SELECT 1"), max_rows=1, deadline=None)
    finally:
        await backend.close()  # waits for the releases in the background
    calls = [query for query in sent if query.startswith("BEGIN")]
    sent = sent[sent.index(calls[0]) :]  # what opening the pool sent left out
    # Per call: the BEGIN READ ONLY message, then one message with ROLLBACK and the reset.
    assert [query.split(";")[0] for query in sent] == ["BEGIN READ ONLY", "ROLLBACK"] * 3
    assert all("RESET ALL" in query for query in sent[1::2])
