"""SQLite through aiosqlite: the embedded default, behind the same `SqlBackend` protocol.

- **One connection**, the `SqliteConnection`'s (`sidecar.connections.sqlite`: the path, a
  file, a `file:` URI, or `:memory:`, opened on first use), shared by every service naming
  it. SQLite runs one statement at a time, so calls (of every service on it) take turns: a
  call waits at most `acquire_timeout` for the connection, then gets
  `ResourceExhausted(reason="POOL_EXHAUSTED")`, exactly as with an exhausted pool. A
  QueryStream holds the connection until it ends or is cancelled. TEMP tables, views and
  triggers a call creates are dropped when it ends, as they would outlive it otherwise.
- **Deadline**: SQLite has no statement timeout, so the statement is interrupted
  (`sqlite3_interrupt`) when the caller's time is up.
- **Read-only**: an authorizer, installed on the connection for each call of a read-only
  service (`use_authorizer`), denies every write (INSERT, UPDATE, DELETE, DDL, writing
  PRAGMAs). SQLite consults it when it compiles a statement, so
  it holds whatever the SQL text says. ATTACH and DETACH are always denied: a client must not
  reach other files through the sidecar.
- **Values**: SQLite stores integer, real, text, blob and null. Parameters of other types are
  stored as text (Decimal as exact digits, datetimes and dates in ISO 8601, UUIDs and JSON as
  text); intervals and arrays have no SQLite form and are refused. Column types are the
  storage class of each column's first non-null value.
- **Transactions**: `BEGIN IMMEDIATE` (read-write) or `BEGIN DEFERRED` (read-only); every
  isolation level is served as SQLite's serializable, which is at least as strong.

Usage:

    backend = SqliteBackend(SqliteConnection("db", SqliteConnectOptions(path=":memory:")))
    await backend.execute(Statement("CREATE TABLE t (id INTEGER PRIMARY KEY)"), deadline=None)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast
from uuid import UUID

import aiosqlite

from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.backends.sql.base import (
    Column,
    Interval,
    IsolationLevel,
    Json,
    ResultBudget,
    ResultSet,
    Row,
    SqlValue,
    Statement,
    acquire_within,
    check_statement,
    check_statements,
    rows_affected,
    statement_timeout_ms,
    time_left,
    too_many_rows,
)
from sidecar.config import SqlServiceConfig
from sidecar.connections.sqlite import (
    SqliteConnection,
    map_sqlite_error,
    sqlite_errors,
)
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    SidecarError,
    Unavailable,
)
from sidecar.resilience import Deadline

__all__ = ["SPEC", "SqliteBackend", "SqliteOptions"]

T = TypeVar("T")
_CLEANUP_TIMEOUT = 5.0
_INSERT_TAG_OID = "0"  # PostgreSQL's INSERT tag carries an OID, always 0 nowadays


@dataclass(frozen=True, slots=True)
class SqliteOptions:
    """What one service may do on its SQLite connection.

    Attributes:
        read_only: refuse every write.
        request_timeout: how long a statement may run when the call has no deadline.
    """

    read_only: bool = False
    request_timeout: float = 30.0


class SqliteBackend:
    """A `SqlBackend` on a `SqliteConnection` (see the module docstring); closing it leaves
    the connection open (its owner closes it)."""

    def __init__(self, connection: SqliteConnection, options: SqliteOptions | None = None) -> None:
        self.connection = connection
        self._options = options or SqliteOptions()
        self._closed = False
        self._temp_created = False  # by the call holding the turn; see `_authorize`
        self._authorizer = _read_only_authorizer if self._options.read_only else self._authorize

    @property
    def read_only(self) -> bool:
        """Whether the target refuses writes."""
        return self._options.read_only

    async def query(
        self,
        statement: Statement,
        *,
        max_rows: int,
        deadline: Deadline | None,
        max_bytes: int | None = None,
    ) -> ResultSet:
        """Run one statement; at most `max_rows` rows and `max_bytes`."""
        check_statement(statement, nested_comments=False)
        with _mapped():
            async with self._session() as conn:
                result = await self._run(conn, statement, max_rows + 1, deadline)
        if len(result.rows) > max_rows:
            raise too_many_rows(max_rows)
        ResultBudget(max_bytes).charge(result)
        return result

    async def execute(self, statement: Statement, *, deadline: Deadline | None) -> ResultSet:
        """Run one statement for its effect."""
        check_statement(statement, nested_comments=False)
        with _mapped():
            async with self._session() as conn:
                result = await self._run(conn, statement, 0, deadline)
        return ResultSet((), (), result.command_tag, result.rows_affected)

    async def stream(
        self, statement: Statement, *, batch_size: int, deadline: Deadline | None
    ) -> _SqliteStream:
        """Open a cursor; the stream holds the connection until it is closed."""
        check_statement(statement, nested_comments=False)
        with _mapped():
            await self._take_turn()
            stream = _SqliteStream(self, batch_size, deadline)
            try:
                conn = await self._connection()
                params = _parameters(statement.parameters)
                cursor = await self._bounded(
                    conn, deadline, lambda: conn.execute(statement.sql, params)
                )
                stream.open(conn, cursor)
                await stream.prefetch()  # SQLite column types come from the first values
            except BaseException:
                await asyncio.shield(stream.close())
                raise
            return stream

    async def transaction(
        self,
        statements: Sequence[Statement],
        *,
        isolation: IsolationLevel,
        read_only: bool,
        max_rows: int,
        deadline: Deadline | None,
        max_bytes: int | None = None,
    ) -> list[ResultSet]:
        """Run `statements` atomically; every isolation level is serializable here."""
        del isolation  # SQLite transactions are always serializable
        check_statements(statements, nested_comments=False)
        guard = read_only and not self._options.read_only
        results: list[ResultSet] = []
        budget = ResultBudget(max_bytes)
        with _mapped():
            async with self._session() as conn:
                if guard:
                    await self.connection.use_authorizer(_read_only_authorizer)
                try:
                    begin = "BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE"
                    await self._bounded(conn, deadline, lambda: conn.execute(begin))
                    for index, statement in enumerate(statements):
                        with _statement_index(index):
                            result = await self._run(conn, statement, max_rows + 1, deadline)
                            if len(result.rows) > max_rows:
                                raise too_many_rows(max_rows)
                            if not conn.in_transaction:
                                raise FailedPrecondition(
                                    "the statement ended the transaction; Transaction runs "
                                    "BEGIN and COMMIT itself",
                                    reason="SQL_ERROR",
                                )
                            results.append(result)
                            budget.charge(result)
                    await self._bounded(conn, deadline, lambda: conn.execute("COMMIT"))
                finally:
                    await asyncio.shield(self._finish(conn, guard))
        return results

    async def ping(self) -> None:
        """The connection's ping: open the database if needed, `select 1` unless a call
        holds it (a busy connection counts as alive)."""
        if self._closed:
            raise Unavailable("the SQL backend is closed", reason="UPSTREAM_UNAVAILABLE")
        await self.connection.ping()

    async def close(self) -> None:
        """Refuse further calls; the connection stays open for its other services (its
        owner closes it)."""
        self._closed = True

    # -- internals ---------------------------------------------------------------------------

    async def _connection(self) -> aiosqlite.Connection:
        """The connection, with this service's authorizer installed (the caller holds the
        turn)."""
        if self._closed:
            raise Unavailable("the SQL backend is closed", reason="UPSTREAM_UNAVAILABLE")
        await self.connection.use_authorizer(self._authorizer)
        return await self.connection.connect()

    async def _take_turn(self) -> None:
        await acquire_within(
            self.connection.turn,
            self.connection.options.acquire_timeout,
            "the SQLite connection did not become free",
            {"max_connections": "1"},
        )

    async def _give_turn(self) -> None:
        """Drop the TEMP objects the call made (every call shares the one connection, so
        they would outlive it), then let the next call in."""
        try:
            if self._temp_created:
                self._temp_created = False
                with contextlib.suppress(Unavailable):
                    await _drop_temp_objects(await self.connection.connect())
        finally:
            self.connection.turn.release()

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, src: str | None
    ) -> int:
        """The read-write authorizer: ATTACH and DETACH denied; a TEMP object noted, so
        that the end of the call drops it."""
        if action in _NEVER:
            return sqlite3.SQLITE_DENY
        if action in _CREATES_TEMP:
            self._temp_created = True
        return sqlite3.SQLITE_OK

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[aiosqlite.Connection]:
        await self._take_turn()
        try:
            yield await self._connection()
        finally:
            await self._give_turn()

    async def _bounded(
        self,
        conn: aiosqlite.Connection,
        deadline: Deadline | None,
        operation: Callable[[], Awaitable[T]],
    ) -> T:
        """Run one database step; interrupt the statement when the time is up or on cancel."""
        seconds = statement_timeout_ms(time_left(deadline, self._options.request_timeout)) / 1000
        try:
            async with asyncio.timeout(seconds):
                return await operation()
        except TimeoutError:
            await conn.interrupt()
            raise DeadlineExceeded(
                "the statement did not finish in time",
                reason="SQL_ERROR",
                metadata={"sqlstate": "57014"},
            ) from None
        except asyncio.CancelledError:
            await conn.interrupt()  # the worker thread would otherwise run it to the end
            raise

    async def _run(
        self,
        conn: aiosqlite.Connection,
        statement: Statement,
        limit: int,
        deadline: Deadline | None,
    ) -> ResultSet:
        params = _parameters(statement.parameters)
        cursor = await self._bounded(conn, deadline, lambda: conn.execute(statement.sql, params))
        try:
            description = cursor.description
            rows: Sequence[Row] = []
            if description:
                if limit > 0:
                    rows = cast(
                        Sequence[Row],
                        await self._bounded(conn, deadline, lambda: cursor.fetchmany(limit)),
                    )
                else:
                    rows = cast(Sequence[Row], await self._bounded(conn, deadline, cursor.fetchall))
            tag = _command_tag(statement.sql, cursor.rowcount, len(rows), bool(description))
            return ResultSet(_columns(description, rows), rows, tag, rows_affected(tag))
        finally:
            await cursor.close()

    async def _finish(self, conn: aiosqlite.Connection, guard: bool) -> None:
        """After a transaction: roll back what is still open, drop a per-call authorizer."""
        try:
            # A failed rollback is not raised here: the next BEGIN fails loudly instead.
            with contextlib.suppress(sqlite3.Error, TimeoutError):
                if conn.in_transaction:
                    await asyncio.wait_for(conn.execute("ROLLBACK"), _CLEANUP_TIMEOUT)
        finally:
            if guard:
                await self.connection.use_authorizer(self._authorizer)


class _SqliteStream:
    """A cursor over one statement; holds the backend's connection until closed."""

    def __init__(self, backend: SqliteBackend, batch_size: int, deadline: Deadline | None) -> None:
        self._backend = backend
        self._batch_size = batch_size
        self._deadline = deadline
        self._conn: aiosqlite.Connection | None = None
        self._cursor: aiosqlite.Cursor | None = None
        self._columns: tuple[Column, ...] = ()
        self._first: Sequence[Row] | None = None
        self._holding = True

    def open(self, conn: aiosqlite.Connection, cursor: aiosqlite.Cursor) -> None:
        self._conn, self._cursor = conn, cursor

    @property
    def columns(self) -> tuple[Column, ...]:
        return self._columns

    async def prefetch(self) -> None:
        """Read the first batch now: SQLite column types come from the values."""
        self._first = await self._next()
        self._columns = _columns(self._cursor.description if self._cursor else None, self._first)

    async def fetch(self) -> Sequence[Row]:
        if self._first is not None:
            rows, self._first = self._first, None
        else:
            rows = await self._next()
        if len(rows) < self._batch_size:
            await self.close()  # the last batch: free the connection before it is sent
        return rows

    async def _next(self) -> Sequence[Row]:
        cursor, conn = self._cursor, self._conn
        if cursor is None or conn is None:
            return []
        with _mapped():
            rows = await self._backend._bounded(
                conn, self._deadline, lambda: cursor.fetchmany(self._batch_size)
            )
        return cast(Sequence[Row], rows)

    async def close(self) -> None:
        cursor, self._cursor = self._cursor, None
        try:
            if cursor is not None:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await cursor.close()
        finally:
            if self._holding:
                self._holding = False
                await self._backend._give_turn()


# -- values ------------------------------------------------------------------------------------


def _parameters(values: Sequence[SqlValue]) -> list[Any]:
    return [_to_sqlite(value, index) for index, value in enumerate(values)]


def _to_sqlite(value: SqlValue, index: int) -> Any:
    if value is None or isinstance(value, int | float | str | bytes):
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Json):
        return value.text
    kind = "intervals" if isinstance(value, timedelta | Interval) else "arrays"
    field = f"parameters[{index}]"
    raise InvalidArgument(
        f"{field}: SQLite has no type for {kind}",
        reason="INVALID_REQUEST",
        metadata={"field": field},
    )


_STORAGE_CLASSES = {int: "integer", float: "real", str: "text", bytes: "blob"}


def _columns(description: Any, rows: Sequence[Row]) -> tuple[Column, ...]:
    if not description:
        return ()
    columns = []
    for index, entry in enumerate(description):
        kind = ""
        for row in rows:
            value = row[index]
            if value is not None:
                kind = _STORAGE_CLASSES.get(type(value), "")
                break
        columns.append(Column(entry[0], kind))
    return tuple(columns)


def _command_tag(sql: str, rowcount: int, returned: int, has_rows: bool) -> str:
    """A PostgreSQL-style tag (`INSERT 0 2`, `UPDATE 1`, `SELECT 3`, `CREATE TABLE`)."""
    words = _leading_words(sql)
    verb = words[0] if words else ""
    count = rowcount if rowcount >= 0 else returned
    if verb == "INSERT":
        return f"INSERT {_INSERT_TAG_OID} {count}"
    if verb in ("UPDATE", "DELETE"):
        return f"{verb} {count}"
    if has_rows:
        return f"SELECT {returned}"
    if verb in ("CREATE", "DROP", "ALTER") and len(words) > 1:
        return f"{verb} {words[1]}"
    return verb


def _leading_words(sql: str) -> list[str]:
    """The first two words of the SQL, after leading comments (only to name the command)."""
    text = sql.lstrip()
    while text.startswith(("--", "/*")):
        end = text.find("\n") if text.startswith("--") else text.find("*/")
        if end < 0:
            return []
        text = text[end + (1 if text.startswith("--") else 2) :].lstrip()
    return [word.upper() for word in text.split(None, 2)[:2]]


# -- read-only ---------------------------------------------------------------------------------

_WRITES = frozenset(
    {
        sqlite3.SQLITE_INSERT,
        sqlite3.SQLITE_UPDATE,
        sqlite3.SQLITE_DELETE,
        sqlite3.SQLITE_ALTER_TABLE,
        sqlite3.SQLITE_REINDEX,
        sqlite3.SQLITE_ANALYZE,
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_CREATE_VIEW,
        sqlite3.SQLITE_CREATE_VTABLE,
        sqlite3.SQLITE_DROP_INDEX,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_DROP_TEMP_INDEX,
        sqlite3.SQLITE_DROP_TEMP_TABLE,
        sqlite3.SQLITE_DROP_TEMP_TRIGGER,
        sqlite3.SQLITE_DROP_TEMP_VIEW,
        sqlite3.SQLITE_DROP_TRIGGER,
        sqlite3.SQLITE_DROP_VIEW,
        sqlite3.SQLITE_DROP_VTABLE,
    }
)
_NEVER = frozenset({sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH})
# PRAGMAs that take an argument yet only read.
_READING_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_info",
        "index_xinfo",
        "index_list",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)


_CREATES_TEMP = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
    }
)
# Triggers and views first: they may depend on the tables.
_TEMP_OBJECTS = (
    "SELECT type, name FROM temp.sqlite_master WHERE type IN ('trigger', 'view', 'table') "
    "ORDER BY CASE type WHEN 'trigger' THEN 0 WHEN 'view' THEN 1 ELSE 2 END"
)


async def _drop_temp_objects(conn: aiosqlite.Connection) -> None:
    """Drop every TEMP table, view and trigger (indexes go with their tables)."""
    with contextlib.suppress(sqlite3.Error, ValueError):
        for kind, name in await conn.execute_fetchall(_TEMP_OBJECTS):
            quoted = '"' + str(name).replace('"', '""') + '"'
            await conn.execute(f"DROP {str(kind).upper()} IF EXISTS temp.{quoted}")


def _read_only_authorizer(
    action: int, arg1: str | None, arg2: str | None, db: str | None, src: str | None
) -> int:
    if action in _WRITES or action in _NEVER:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None and arg1 not in _READING_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


# -- errors ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _statement_index(index: int) -> Iterator[None]:
    try:
        yield
    except SidecarError as exc:
        exc.metadata.setdefault("statement_index", str(index))
        raise
    except sqlite3.Error as exc:
        error = map_sqlite_error(exc)
        error.metadata["statement_index"] = str(index)
        raise error from exc


_mapped = sqlite_errors
"""sqlite3's and aiosqlite's exceptions as `sidecar.errors` (the connection's mapping)."""


def _build(context: BuildContext[SqlServiceConfig]) -> SqliteBackend:
    connection = context.connection
    assert isinstance(connection, SqliteConnection)
    return SqliteBackend(
        connection,
        SqliteOptions(
            read_only=context.settings.read_only,
            request_timeout=context.policies.timeouts.request,
        ),
    )


SPEC = BackendSpec(
    type="sql",
    backend="sqlite",
    settings=SqlServiceConfig,
    build=_build,
    connection_type="sqlite",
    features=frozenset({"transactions", "query_stream", "read_only"}),
)
