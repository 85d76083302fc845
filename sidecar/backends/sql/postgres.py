"""PostgreSQL through the asyncpg pool of a `PostgresConnection`: what one SQL service may do
with the pooled sessions it shares with the other services on the connection.

- **Pool**: the connection's (`sidecar.connections.postgres`): sized by its
  `connection_pool`, opened on first use, every session reset before it is reused, so no
  session state leaks between calls, nor between services. A call waits at most
  `acquire_timeout` for a connection (then `ResourceExhausted(reason="POOL_EXHAUSTED")`).
- **Statement cache**: each pooled connection keeps its last `statement_cache_size` prepared
  statements (asyncpg's own cache, which also drops plans a schema change invalidated), so
  a repeated statement costs one round trip.
- **Deadline**: the caller's time left, capped by the service's request timeout, becomes
  `statement_timeout`, a little shorter, so the database cancels the statement and its error
  reaches the caller in time; when that is the session default (the connection's request
  timeout), nothing is sent.
- **Read-only targets**: every call runs in a `READ ONLY` transaction block with its snapshot
  taken, enforced by PostgreSQL, not by reading the SQL, and rolled back when the
  connection goes back to the pool; so a read-only and a read-write service can share one
  pool. A role that can act on the server is refused (`_check_role`).
- **Statements** are checked first (`check_statement`): no NUL, no transaction control.
- **Errors**: the connection's `postgres_errors()` is the one place asyncpg's exceptions
  become `sidecar.errors` (see `error_for_sqlstate`).

Usage:

    connection = PostgresConnection("db", PostgresConnectOptions(dsn="postgresql://app@db/app"))
    backend = PostgresBackend(connection, PostgresOptions(read_only=True))
    result = await backend.query(Statement("SELECT $1::int8", (1,)), max_rows=10, deadline=None)
    await backend.close()
    await connection.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg import exceptions as pg_errors
from asyncpg.prepared_stmt import PreparedStatement

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
from sidecar.connections.postgres import (
    PgConnection,
    PostgresConnection,
    in_open_transaction,
    map_postgres_error,
    postgres_errors,
    rollback,
)
from sidecar.errors import (
    FailedPrecondition,
    InvalidArgument,
    SidecarError,
    Unavailable,
)
from sidecar.resilience import Deadline

__all__ = ["SPEC", "PostgresBackend", "PostgresOptions"]

_log = logging.getLogger("sidecar.backends.sql")

# Two private asyncpg entry points, each with a public fallback; both are pinned by
# tests/sql/test_postgres_backend.py, so an asyncpg upgrade that moves them fails loudly.
# - Connection._prepare(use_cache=True) returns the statement from asyncpg's per-connection
#   cache (public prepare() always sends a new Parse: one more round trip per call).
# - PreparedStatement.__bind_execute takes a row limit (fetch() has none): with it, a Query
#   holds at most max_rows + 1 rows however long the result is, as the database suspends
#   the portal there.
_PREPARE_CACHED: Callable[..., Any] | None = getattr(asyncpg.Connection, "_prepare", None)
_BIND_EXECUTE: Callable[..., Any] | None = getattr(
    PreparedStatement, "_PreparedStatement__bind_execute", None
)


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """What one service may do on its PostgreSQL connection.

    Attributes:
        read_only: every call runs in a READ ONLY transaction.
        allow_privileged_role: serve a read-only target even when its role can act on the
            server (superuser, pg_execute_server_program, ...); see `_check_role`.
        request_timeout: the statement timeout of a call that carries no deadline.
        max_stream_connections: most pooled connections this service's open streams may
            hold at once, so that other calls always find one (None: the pool's
            `max_size - 1`, at least 1).
    """

    read_only: bool = False
    allow_privileged_role: bool = False
    request_timeout: float = 30.0
    max_stream_connections: int | None = None


_Connection = PgConnection


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A prepared statement with what binding its parameters needs."""

    statement: Any  # asyncpg PreparedStatement, valid until the connection is released
    parameter_count: int
    adapters: tuple[Callable[[SqlValue], SqlValue] | None, ...] | None


class PostgresBackend:
    """A `SqlBackend` on a `PostgresConnection`'s pool (see the module docstring); closing
    it leaves the connection open (its owner closes it)."""

    def __init__(
        self, connection: PostgresConnection, options: PostgresOptions | None = None
    ) -> None:
        self.connection = connection
        self._options = options = options or PostgresOptions()
        self._closed = False
        self._role_checked = False
        self._role_lock = asyncio.Lock()
        self._refused_role: tuple[str, str] | None = None  # (role, privileges) if refused
        max_size = connection.max_size
        streams = options.max_stream_connections or max_size - 1
        self._max_streams = max(1, min(streams, max_size))
        self._stream_slots = asyncio.Semaphore(self._max_streams)
        self._default_timeout_ms = statement_timeout_ms(max(options.request_timeout, 0.001))
        self._session_timeout_ms = connection.statement_timeout_ms
        connection.on_session_start(_init_connection)
        connection.add_user(read_only=options.read_only)

    @property
    def read_only(self) -> bool:
        """Whether the target refuses writes."""
        return self._options.read_only

    # -- the four operations ---------------------------------------------------------------

    async def query(
        self,
        statement: Statement,
        *,
        max_rows: int,
        deadline: Deadline | None,
        max_bytes: int | None = None,
    ) -> ResultSet:
        """Run one statement; at most `max_rows` rows and `max_bytes` (see `SqlBackend.query`)."""
        check_statement(statement, nested_comments=True)
        with _mapped():
            async with self._connection() as conn:
                await self._open_call(conn, deadline)
                columns, rows, tag = await self._run(conn, statement, max_rows + 1)
        if len(rows) > max_rows:
            raise too_many_rows(max_rows)
        result = ResultSet(columns, rows, tag, rows_affected(tag))
        ResultBudget(max_bytes).charge(result)
        return result

    async def execute(self, statement: Statement, *, deadline: Deadline | None) -> ResultSet:
        """Run one statement for its effect."""
        check_statement(statement, nested_comments=True)
        with _mapped():
            async with self._connection() as conn:
                await self._open_call(conn, deadline)
                _, _, tag = await self._run(conn, statement, 0)
        return ResultSet((), (), tag, rows_affected(tag))

    async def stream(
        self, statement: Statement, *, batch_size: int, deadline: Deadline | None
    ) -> _PostgresStream:
        """Open a cursor inside its own transaction; the stream owns the connection, and one
        of the `max_stream_connections` slots, until it ends or is closed."""
        check_statement(statement, nested_comments=True)
        with _mapped():
            await self._take_stream_slot()
            try:
                await self._ready()
                conn = await self.connection.acquire()
            except BaseException:
                self._stream_slots.release()
                raise
            stream = _PostgresStream(self.connection, conn, batch_size, self._stream_slots.release)
            try:
                await conn.execute(self._begin(IsolationLevel.DEFAULT, False, deadline))
                prepared = await self._prepare(conn, statement.sql)
                cursor = await prepared.statement.cursor(*_bind_args(prepared, statement))
                stream.open(_columns(prepared.statement), cursor)
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
        """Run `statements` atomically (see `SqlBackend.transaction`)."""
        check_statements(statements, nested_comments=True)
        results: list[ResultSet] = []
        budget = ResultBudget(max_bytes)
        with _mapped():
            async with self._connection() as conn:
                try:
                    await conn.execute(self._begin(isolation, read_only, deadline))
                    for index, statement in enumerate(statements):
                        with _statement_index(index):
                            results.append(await self._step(conn, statement, max_rows))
                            budget.charge(results[-1])
                    await _commit(conn)
                finally:
                    if in_open_transaction(conn):
                        await asyncio.shield(rollback(conn))
        return results

    async def _step(self, conn: _Connection, statement: Statement, max_rows: int) -> ResultSet:
        """One statement of a transaction."""
        columns, rows, tag = await self._run(conn, statement, max_rows + 1)
        if len(rows) > max_rows:
            raise too_many_rows(max_rows)
        if not conn.is_in_transaction():
            raise FailedPrecondition(
                "the statement ended the transaction; Transaction runs BEGIN and COMMIT itself",
                reason="SQL_ERROR",
            )
        return ResultSet(columns, rows, tag, rows_affected(tag))

    async def ping(self) -> None:
        """The connection's ping (`SELECT 1` on a pooled connection), after this service's
        own checks (a refused role fails it)."""
        with _mapped():
            await self._ready()
        await self.connection.ping()

    async def close(self) -> None:
        """Refuse further calls; the pool stays open for the connection's other services
        (its owner closes it, after every service on it)."""
        self._closed = True

    # -- connections -------------------------------------------------------------------------

    async def _ready(self) -> None:
        """Open the pool (on first use) and check the role once: a refused one fails every
        call without reaching the database."""
        if self._closed:
            raise Unavailable("the SQL backend is closed", reason="UPSTREAM_UNAVAILABLE")
        if self._refused_role is not None:
            raise _privileged_role_refused(*self._refused_role)
        if self._role_checked:
            return
        async with self._role_lock:
            if not self._role_checked:
                await self._check_role()
                self._role_checked = True

    async def _check_role(self) -> None:
        """Warn when the database role can act on the server (run programs, read or write its
        files, signal other sessions): READ ONLY transactions do not stop that, only the
        role does. A read-only target refuses such a role unless `allow_privileged_role`."""
        conn = await self.connection.acquire()
        try:
            role, superuser, members = await conn.fetchrow(_ROLE_POWERS, list(_SERVER_ROLES))
        finally:
            self.connection.release_soon(conn)
        privileges = "superuser" if superuser else ",".join(members)
        if not privileges:
            return
        details = {"role": role, "privileges": privileges, "read_only": self.read_only}
        if self.read_only and not self._options.allow_privileged_role:
            self._refused_role = (role, privileges)
            _log.error(
                f"refusing a read_only SQL target: its role {role} can act on the server "
                f"({privileges}); use a plain role, or set allow_privileged_role: true",
                extra=details,
            )
            raise _privileged_role_refused(role, privileges)
        _log.warning(
            f"the SQL target's role {role} can act on the server ({privileges}), whatever "
            "read_only says: the database role is the real boundary",
            extra=details,
        )

    async def _take_stream_slot(self) -> None:
        """Wait up to `acquire_timeout` for a stream slot: a stream holds its connection for
        as long as its reader takes, so streams get at most `max_stream_connections`."""
        await acquire_within(
            self._stream_slots,
            self.connection.options.acquire_timeout,
            f"{self._max_streams} open QueryStreams hold every connection streams may use, "
            "and none ended",
            {"max_stream_connections": str(self._max_streams)},
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        await self._ready()
        conn = await self.connection.acquire()
        try:
            yield conn
        finally:
            # The release (ROLLBACK, session reset) runs in the background.
            self.connection.release_soon(conn)

    async def _open_call(self, conn: _Connection, deadline: Deadline | None) -> None:
        """Before a Query or Execute: lower statement_timeout to the caller's deadline (reset
        on release). On a read-only target, open a READ ONLY transaction with its snapshot
        taken instead (rolled back on release): inside a transaction block no statement, not
        even a DO block or procedure, can COMMIT and go on in a read-write transaction."""
        if self._options.read_only:
            await conn.execute(self._begin(IsolationLevel.DEFAULT, True, deadline))
            return
        ms = self._timeout_ms(deadline)
        if ms is not None:
            await conn.execute(f"SET statement_timeout = {ms:d}")

    def _timeout_ms(self, deadline: Deadline | None) -> int | None:
        """The statement timeout for the time left (at most the service's request timeout),
        or None when it is the session's default already."""
        if deadline is None or deadline.at is None:
            ms = self._default_timeout_ms
        else:
            ms = statement_timeout_ms(time_left(deadline, self._options.request_timeout))
        return None if ms == self._session_timeout_ms else ms

    def _begin(self, isolation: IsolationLevel, read_only: bool, deadline: Deadline | None) -> str:
        """One message that opens a transaction: BEGIN, its timeout, and (read-only) a snapshot.

        Taking the snapshot at once makes `SET TRANSACTION READ WRITE` fail for every later
        statement, so a read-only transaction stays read-only whatever its statements say.
        """
        read_only = read_only or self._options.read_only
        mode = "READ ONLY" if read_only else "READ WRITE"
        level = "" if isolation is IsolationLevel.DEFAULT else f"ISOLATION LEVEL {isolation.value} "
        parts = [f"BEGIN {level}{mode}"]
        ms = self._timeout_ms(deadline)
        if ms is not None:
            parts.append(f"SET LOCAL statement_timeout = {ms:d}")
        if read_only:
            parts.append("SELECT 1")
        return "; ".join(parts)

    # -- statements --------------------------------------------------------------------------

    async def _prepare(self, conn: _Connection, sql: str) -> _Prepared:
        if _PREPARE_CACHED is not None:
            statement = await conn._prepare(sql, use_cache=True)
        else:  # pragma: no cover - only if asyncpg renames its internals
            statement = await conn.prepare(sql)
        return _describe(statement)

    async def _run(
        self, conn: _Connection, statement: Statement, limit: int
    ) -> tuple[tuple[Column, ...], Sequence[Row], str]:
        """Prepare (cached), bind and execute: the columns, the rows (at most `limit`; 0 means
        all) and the command tag. A plan a schema change invalidated is prepared again once.
        """
        prepared = await self._prepare(conn, statement.sql)
        try:
            return await _execute(prepared, _bind_args(prepared, statement), limit)
        except pg_errors.InvalidCachedStatementError:
            # Drop the cached statements; outside a transaction, simply prepare again.
            await conn.reload_schema_state()
            if conn.is_in_transaction():
                raise
        prepared = await self._prepare(conn, statement.sql)
        return await _execute(prepared, _bind_args(prepared, statement), limit)


class _PostgresStream:
    """An open cursor and the connection (and transaction) it lives in."""

    def __init__(
        self,
        connection: PostgresConnection,
        conn: _Connection,
        batch_size: int,
        free_slot: Callable[[], None],
    ) -> None:
        self._connection = connection
        self._conn: _Connection | None = conn
        self._free_slot = free_slot
        self._batch_size = batch_size
        self._cursor: Any = None
        self._columns: tuple[Column, ...] = ()

    def open(self, columns: tuple[Column, ...], cursor: Any) -> None:
        self._columns = columns
        self._cursor = cursor

    @property
    def columns(self) -> tuple[Column, ...]:
        return self._columns

    async def fetch(self) -> Sequence[Row]:
        conn = self._conn
        if conn is None:
            return []
        with _mapped():
            rows: Sequence[Row] = await self._cursor.fetch(self._batch_size)
            if len(rows) < self._batch_size:
                # The last batch: commit now and free the connection before it is sent.
                self._conn = None
                try:
                    await _commit(conn)
                finally:
                    await asyncio.shield(self._release(conn))
        return rows

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._release(conn)

    async def _release(self, conn: _Connection) -> None:
        self._cursor = None
        try:
            await self._connection.release(conn)
        finally:
            self._free_slot()


# -- helpers -----------------------------------------------------------------------------------


async def _init_connection(conn: _Connection) -> None:
    """Codecs that keep values exact: intervals by parts, JSON as `Json` text."""
    await conn.set_type_codec(
        "interval",
        schema="pg_catalog",
        encoder=_encode_interval,
        decoder=_decode_interval,
        format="tuple",
    )
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=_encode_json, decoder=Json, format="text"
        )


def _encode_interval(value: Interval | dt.timedelta) -> tuple[int, int, int]:
    if isinstance(value, dt.timedelta):
        return (0, value.days, value.seconds * 1_000_000 + value.microseconds)
    return (value.months, value.days, value.microseconds)


def _decode_interval(parts: tuple[int, int, int]) -> Interval:
    return Interval(parts[0], parts[1], parts[2])


def _encode_json(value: Json | str) -> str:
    return value.text if isinstance(value, Json) else value


def _naive_utc(value: SqlValue) -> SqlValue:
    """An aware datetime as the UTC wall-clock time a `timestamp` column stores."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, list):
        return [_naive_utc(item) for item in value]
    return value


def _columns(statement: Any) -> tuple[Column, ...]:
    """The result columns; read after executing, as the database may have re-described them
    (a cached `SELECT *` after `ALTER TABLE ... ADD COLUMN`)."""
    return tuple(
        Column(attribute.name, attribute.type.name) for attribute in statement.get_attributes()
    )


def _describe(statement: Any) -> _Prepared:
    parameters = statement.get_parameters()
    adapters = tuple(
        _naive_utc if parameter.name in ("timestamp", "timestamp[]") else None
        for parameter in parameters
    )
    return _Prepared(statement, len(parameters), adapters if any(adapters) else None)


def _bind_args(prepared: _Prepared, statement: Statement) -> Sequence[SqlValue]:
    args = statement.parameters
    if len(args) != prepared.parameter_count:
        raise InvalidArgument(
            f"the statement has {prepared.parameter_count} placeholders but "
            f"{len(args)} parameters were given",
            reason="INVALID_REQUEST",
            metadata={"field": "parameters"},
        )
    adapters = prepared.adapters
    if adapters is None:
        return args
    return [
        value if adapt is None else adapt(value)
        for value, adapt in zip(args, adapters, strict=True)
    ]


async def _execute(
    prepared: _Prepared, args: Sequence[SqlValue], limit: int
) -> tuple[tuple[Column, ...], Sequence[Row], str]:
    """Columns, rows (at most `limit`; 0 means all) and command tag of one execution."""
    statement = prepared.statement
    if _BIND_EXECUTE is not None:
        rows = await _BIND_EXECUTE(statement, args, limit, None)
    else:  # pragma: no cover - only if asyncpg renames its internals
        rows = await statement.fetch(*args)
    return _columns(statement), rows, statement.get_statusmsg() or ""


async def _commit(conn: _Connection) -> None:
    """COMMIT. A connection lost on the way leaves the outcome unknown (the database may
    have committed before its answer was lost): that is its own error, never retried here,
    as a retry could apply the transaction twice. An answer from the database (a
    serialization failure, a deferred constraint) means it did not commit, and says so."""
    try:
        with _mapped():
            await conn.execute("COMMIT")
    except (Unavailable, pg_errors.InterfaceError) as exc:
        error = Unavailable(
            "the database connection was lost during COMMIT: the transaction may or may not "
            "have committed; check before running it again",
            reason="COMMIT_OUTCOME_UNKNOWN",
        )
        error.transient = False  # so the pipeline never retries it
        raise error from exc


@contextlib.contextmanager
def _statement_index(index: int) -> Iterator[None]:
    """Name the failing statement of a transaction in its error."""
    try:
        yield
    except SidecarError as exc:
        exc.metadata.setdefault("statement_index", str(index))
        raise
    except pg_errors.PostgresError as exc:
        error = map_postgres_error(exc)
        assert error is not None
        error.metadata["statement_index"] = str(index)
        raise error from exc


_mapped = postgres_errors
"""asyncpg's exceptions as `sidecar.errors` (the connection's mapping)."""


# Predefined roles that act on the server itself, beyond the database's data.
_SERVER_ROLES = (
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_signal_backend",
    "pg_write_server_files",
)
_ROLE_POWERS = """
SELECT r.rolname::text, r.rolsuper, ARRAY(
    SELECT p.rolname::text FROM pg_catalog.pg_roles p
    WHERE p.rolname = ANY($1::text[]) AND pg_catalog.pg_has_role(r.oid, p.oid, 'MEMBER')
    ORDER BY 1)
FROM pg_catalog.pg_roles r WHERE r.rolname = session_user
"""


def _privileged_role_refused(role: str, privileges: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"this read_only target is refused: its database role {role} can act on the server "
        f"({privileges}), which READ ONLY transactions do not stop",
        reason="READ_ONLY",
        metadata={"role": role, "privileges": privileges},
    )


def _build(context: BuildContext[SqlServiceConfig]) -> PostgresBackend:
    connection = context.connection
    assert isinstance(connection, PostgresConnection)
    settings = context.settings
    return PostgresBackend(
        connection,
        PostgresOptions(
            read_only=settings.read_only,
            allow_privileged_role=settings.allow_privileged_role,
            request_timeout=context.policies.timeouts.request,
            max_stream_connections=settings.max_stream_connections,
        ),
    )


SPEC = BackendSpec(
    type="sql",
    backend="postgres",
    settings=SqlServiceConfig,
    build=_build,
    connection_type="postgres",
    features=frozenset({"transactions", "query_stream", "read_only"}),
)
