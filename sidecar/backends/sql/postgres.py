"""PostgreSQL through an asyncpg pool: one pool per configured target.

- **Pool**: created on first use inside the running loop; `min_size`/`max_size` connections,
  idle ones closed after `idle_timeout`, a call waits at most `acquire_timeout` for one
  (then `ResourceExhausted(reason="POOL_EXHAUSTED")`). Each connection is reset before it
  goes back to the pool (`_RESET_SESSION`), so no session state leaks between calls.
- **Statement cache**: each connection keeps its last `statement_cache_size` prepared
  statements (asyncpg's own cache, which also drops plans a schema change invalidated), so
  a repeated statement costs one round trip.
- **Deadline**: the caller's time left becomes `statement_timeout`, a little shorter, so the
  database cancels the statement and its error reaches the caller in time. Without a deadline
  the session default (the request timeout) applies.
- **Read-only targets**: every session starts with `default_transaction_read_only = on` and
  every call runs in a `READ ONLY` transaction block, enforced by PostgreSQL, not by reading
  the SQL; a role that can act on the server is refused (`_check_role`).
- **Statements** are checked first (`check_statement`): no NUL, no transaction control.
- **Errors**: `_mapped()` is the one place asyncpg's exceptions become `sidecar.errors`
  (see `error_for_sqlstate`).

Usage:

    backend = PostgresBackend(PostgresOptions(dsn="postgresql://app@db/app", max_size=20))
    result = await backend.query(Statement("SELECT $1::int8", (1,)), max_rows=10, deadline=None)
    await backend.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    error_for_sqlstate,
    rows_affected,
    statement_timeout_ms,
    time_left,
    too_many_rows,
)
from sidecar.config import SqlServiceConfig
from sidecar.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)
from sidecar.resilience import Deadline

__all__ = ["SPEC", "PostgresBackend", "PostgresOptions"]

_log = logging.getLogger("sidecar.backends.sql")

# Clean-up (ROLLBACK, pool close) must finish even when the connection is slow or dead.
_CLEANUP_TIMEOUT = 5.0

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
    """How to reach one PostgreSQL database, and how to pool connections to it.

    Attributes:
        dsn: a `postgresql://` URL; when set it wins over host, port, database and user.
        host, port, database, user, password: the connection, when no dsn is given.
        read_only: every session and transaction is read-only.
        allow_privileged_role: serve a read-only target even when its role can act on the
            server (superuser, pg_execute_server_program, ...); see `_check_role`.
        min_size, max_size: pool bounds.
        acquire_timeout: seconds a call waits for a free connection.
        idle_timeout: seconds after which an idle connection is closed.
        connect_timeout: seconds to establish one connection.
        request_timeout: the statement timeout of a call that carries no deadline.
        statement_cache_size: prepared statements kept per connection (0: none).
        max_stream_connections: most connections open streams may hold at once, so that
            other calls always find one (None: `max_size - 1`, at least 1).
        application_name: shown in `pg_stat_activity`.
    """

    dsn: str | None = None
    host: str = "127.0.0.1"
    port: int = 5432
    database: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    read_only: bool = False
    allow_privileged_role: bool = False
    min_size: int = 2
    max_size: int = 10
    acquire_timeout: float = 10.0
    idle_timeout: float = 300.0
    connect_timeout: float = 10.0
    request_timeout: float = 30.0
    statement_cache_size: int = 100
    max_stream_connections: int | None = None
    application_name: str = "integration-sidecar"


_Connection = Any  # an asyncpg connection (a pool proxy); asyncpg ships no types


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A prepared statement with what binding its parameters needs."""

    statement: Any  # asyncpg PreparedStatement, valid until the connection is released
    parameter_count: int
    adapters: tuple[Callable[[SqlValue], SqlValue] | None, ...] | None


class PostgresBackend:
    """A `SqlBackend` over one asyncpg pool (see the module docstring)."""

    def __init__(self, options: PostgresOptions) -> None:
        self._options = options
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._refused_role: tuple[str, str] | None = None  # (role, privileges) if refused
        self._releasing: set[asyncio.Task[None]] = set()
        streams = options.max_stream_connections or options.max_size - 1
        self._max_streams = max(1, min(streams, options.max_size))
        self._stream_slots = asyncio.Semaphore(self._max_streams)
        self._default_timeout_ms = statement_timeout_ms(max(options.request_timeout, 0.001))

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
                pool = await self._get_pool()
                conn = await self._acquire(pool)
            except BaseException:
                self._stream_slots.release()
                raise
            stream = _PostgresStream(pool, conn, batch_size, self._stream_slots.release)
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
                    if _in_open_transaction(conn):
                        await asyncio.shield(_rollback(conn))
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
        """Run `SELECT 1` on a pooled connection (a pool with every connection busy is alive)."""
        with _mapped():
            pool = await self._get_pool()
            if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
                return
            async with self._connection() as conn:
                await conn.execute("SELECT 1")

    async def close(self) -> None:
        """Close the pool, terminating connections that do not close in time."""
        self._closed = True
        if self._releasing:
            await asyncio.wait(list(self._releasing), timeout=_CLEANUP_TIMEOUT)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), _CLEANUP_TIMEOUT)
        except (TimeoutError, OSError, pg_errors.PostgresError, pg_errors.InterfaceError):
            pool.terminate()

    # -- connections -------------------------------------------------------------------------

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise Unavailable("the SQL backend is closed", reason="UPSTREAM_UNAVAILABLE")
        if self._refused_role is not None:
            raise _privileged_role_refused(*self._refused_role)
        async with self._pool_lock:
            if self._pool is None:
                try:
                    self._pool = await self._create_pool()
                except TimeoutError:
                    raise Unavailable(
                        "connecting to the database timed out", reason="UPSTREAM_UNAVAILABLE"
                    ) from None
        return self._pool

    async def _create_pool(self) -> Any:
        options = self._options
        settings = {
            "application_name": options.application_name,
            "statement_timeout": str(self._default_timeout_ms),
        }
        if options.read_only:
            settings["default_transaction_read_only"] = "on"
        pool = asyncpg.create_pool(
            dsn=options.dsn,
            host=None if options.dsn else options.host,
            port=None if options.dsn else options.port,
            database=None if options.dsn else options.database,
            user=None if options.dsn else options.user,
            password=options.password,
            min_size=options.min_size,
            max_size=options.max_size,
            max_inactive_connection_lifetime=options.idle_timeout,
            timeout=options.connect_timeout,
            statement_cache_size=options.statement_cache_size,
            server_settings=settings,
            init=_init_connection,
            reset=_reset_session,
        )
        try:
            await pool
            await self._check_role(pool)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _check_role(self, pool: Any) -> None:
        """Warn when the database role can act on the server (run programs, read or write its
        files, signal other sessions): READ ONLY transactions do not stop that, only the
        role does. A read-only target refuses such a role unless `allow_privileged_role`."""
        async with pool.acquire() as conn:
            role, superuser, members = await conn.fetchrow(_ROLE_POWERS, list(_SERVER_ROLES))
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
            self._options.acquire_timeout,
            f"{self._max_streams} open QueryStreams hold every connection streams may use, "
            "and none ended",
            {"max_stream_connections": str(self._max_streams)},
        )

    async def _acquire(self, pool: Any) -> _Connection:
        # With a connection idle, none of asyncpg's timeout wrapper: it costs a task per call.
        timeout = None if pool.get_idle_size() else self._options.acquire_timeout
        try:
            conn: _Connection = await pool.acquire(timeout=timeout)
        except TimeoutError:
            if pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0:
                raise ResourceExhausted(
                    f"no database connection became free within "
                    f"{self._options.acquire_timeout:g}s (pool of {pool.get_max_size()})",
                    reason="POOL_EXHAUSTED",
                    metadata={"max_connections": str(pool.get_max_size())},
                ) from None
            raise Unavailable(
                "connecting to the database timed out", reason="UPSTREAM_UNAVAILABLE"
            ) from None
        return conn

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        pool = await self._get_pool()
        conn = await self._acquire(pool)
        try:
            yield conn
        finally:
            self._release_soon(pool, conn)

    def _release_soon(self, pool: Any, conn: _Connection) -> None:
        """Give the connection back in the background: the release resets the session
        (RESET ALL, CLOSE ALL, ...), a round trip the caller need not wait for. The
        connection rejoins the pool only once that is done."""
        task = asyncio.get_running_loop().create_task(_release(pool, conn))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

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
        """The statement timeout for the time left, or None when the session default fits."""
        if deadline is None or deadline.at is None:
            return None
        ms = statement_timeout_ms(time_left(deadline, self._options.request_timeout))
        return ms if ms < self._default_timeout_ms else None

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
        self, pool: Any, conn: _Connection, batch_size: int, free_slot: Callable[[], None]
    ) -> None:
        self._pool = pool
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
            await _release(self._pool, conn)
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


async def _release(pool: Any, conn: _Connection) -> None:
    try:
        if _in_open_transaction(conn):
            await _rollback(conn)  # a read-only target's call leaves its READ ONLY transaction
        await pool.release(conn, timeout=_CLEANUP_TIMEOUT)
    except (
        OSError,
        pg_errors.PostgresError,
        pg_errors.InterfaceError,
        pg_errors.InternalClientError,  # a lost connection's holder went back on its own
    ) as exc:
        # asyncpg has already dropped a connection it could not reset; the pool replaces it.
        _log.debug("releasing a connection failed", extra={"error": repr(exc)})


def _in_open_transaction(conn: _Connection) -> bool:
    """Whether `conn` is alive and inside a transaction. A pooled connection that died has
    already gone back to the pool, and its proxy then refuses every call."""
    try:
        return bool(not conn.is_closed() and conn.is_in_transaction())
    except pg_errors.InterfaceError:
        return False


async def _reset_session(conn: _Connection) -> None:
    """The pool's reset, run before a connection is reused (one round trip)."""
    await conn.execute(_RESET_SESSION)


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


async def _rollback(conn: _Connection) -> None:
    """Roll back, or drop a connection that cannot even do that (the pool replaces it)."""
    try:
        await asyncio.wait_for(conn.execute("ROLLBACK"), _CLEANUP_TIMEOUT)
    except (TimeoutError, OSError, pg_errors.PostgresError, pg_errors.InterfaceError):
        # A connection lost meanwhile is already back in the pool: nothing left to drop.
        with contextlib.suppress(pg_errors.InterfaceError):
            conn.terminate()


@contextlib.contextmanager
def _statement_index(index: int) -> Iterator[None]:
    """Name the failing statement of a transaction in its error."""
    try:
        yield
    except SidecarError as exc:
        exc.metadata.setdefault("statement_index", str(index))
        raise
    except pg_errors.PostgresError as exc:
        error = _from_postgres(exc)
        error.metadata["statement_index"] = str(index)
        raise error from exc


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Turn asyncpg's exceptions into `sidecar.errors`, raised from the original."""
    try:
        yield
    except SidecarError:
        raise
    except (pg_errors.InvalidCachedStatementError, pg_errors.OutdatedSchemaCacheError) as exc:
        raise Aborted(
            "the schema changed while the statement was prepared; retry the call",
            reason="SQL_ERROR",
            metadata={"sqlstate": getattr(exc, "sqlstate", None) or "0A000"},
        ) from exc
    except pg_errors.PostgresError as exc:
        raise _from_postgres(exc) from exc
    except pg_errors.InterfaceError as exc:
        if "connection is closed" in str(exc) or "connection was closed" in str(exc):
            raise Unavailable(
                "lost the database connection", reason="UPSTREAM_UNAVAILABLE"
            ) from exc
        raise
    except TimeoutError as exc:
        raise DeadlineExceeded(
            "the database did not answer in time", reason="DEADLINE_EXCEEDED"
        ) from exc
    except OSError as exc:
        raise Unavailable(
            f"cannot reach the database: {exc.strerror or type(exc).__name__}",
            reason="UPSTREAM_UNAVAILABLE",
        ) from exc


# Everything a call can leave in its session, cleared before the next call: DISCARD ALL
# without its DEALLOCATE ALL, which would also drop asyncpg's cached statements (one more
# round trip per call to prepare again). Session authorization first: it also resets the
# role, and the rest runs as the login role. A session holding the caller's own PREPAREd
# statements fails the last line (division by zero), and the pool replaces the connection:
# dropping them one by one would need a DO block, which costs every call ~45 us.
_RESET_SESSION = """
SET SESSION AUTHORIZATION DEFAULT;
RESET ALL;
CLOSE ALL;
UNLISTEN *;
SELECT pg_catalog.pg_advisory_unlock_all();
DISCARD TEMP;
DISCARD SEQUENCES;
SELECT 1 / (NOT EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql))::int;
"""

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


_DETAIL_FIELDS = ("schema_name", "table_name", "column_name", "constraint_name", "data_type_name")


def _from_postgres(exc: pg_errors.PostgresError) -> SidecarError:
    if isinstance(exc.__cause__, pg_errors.PostgresError):
        # "connection was closed in the middle of operation" (08003) carries the server's
        # own reason when it ended the session (57P01): classify by that.
        exc = exc.__cause__
    sqlstate = getattr(exc, "sqlstate", None) or "XX000"
    metadata = {
        name.removesuffix("_name"): str(value)
        for name in _DETAIL_FIELDS
        if (value := getattr(exc, name, None))
    }
    # The primary message only (DETAIL may quote row values); asyncpg's own client-side
    # errors (a lost connection) have no primary message, only their text.
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return error_for_sqlstate(sqlstate, str(message), metadata)


def _build(context: BuildContext[SqlServiceConfig]) -> PostgresBackend:
    settings, pool, timeouts = (
        context.settings,
        context.policies.connection_pool,
        context.policies.timeouts,
    )
    return PostgresBackend(
        PostgresOptions(
            dsn=settings.dsn.get_secret_value() if settings.dsn else None,
            host=settings.host,
            port=settings.port,
            database=settings.database,
            user=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            read_only=settings.read_only,
            allow_privileged_role=settings.allow_privileged_role,
            min_size=pool.min_connections,
            max_size=pool.max_connections,
            acquire_timeout=pool.acquire_timeout,
            idle_timeout=pool.idle_timeout,
            connect_timeout=timeouts.connect,
            request_timeout=timeouts.request,
            statement_cache_size=settings.statement_cache_size,
            max_stream_connections=settings.max_stream_connections,
        )
    )


SPEC = BackendSpec(
    type="sql",
    backend="postgres",
    settings=SqlServiceConfig,
    build=_build,
    features=frozenset({"transactions", "query_stream", "read_only"}),
)
