"""`PostgresConnection`: one PostgreSQL database and the asyncpg pool that talks to it.

Every SQL service naming the connection shares the one pool; what a service may do with a
pooled session (read-only transactions, statement checks, result bounds) stays in its
backend (`sidecar.backends.sql.postgres`).

- **Pool**: created on first use inside the running loop; `min_size`/`max_size` connections,
  idle ones closed after `idle_timeout`, a caller waits at most `acquire_timeout` for one
  (then `ResourceExhausted(reason="POOL_EXHAUSTED")`).
- **Sessions**: every connection starts with `application_name` and a default
  `statement_timeout` (the connection's `timeouts.request`; a service with another one sets
  its own per call), read-only by default when every service on it is (`add_user`), runs
  the setup hooks the backends registered (codecs), and is reset (`_RESET_SESSION`) and
  rolled back before it goes back to the pool, so nothing one call (of one service) leaves
  in its session reaches the next.
- **Statement cache**: each connection keeps its last `statement_cache_size` prepared
  statements (asyncpg's own cache).
- **TLS**: `tls:` becomes the `ssl.SSLContext` asyncpg speaks TLS with
  (`client_ssl_context`); `server_name` is the name the certificate is checked against and
  sent as SNI, instead of the host (asyncpg has no option for it: the context substitutes
  it, see `_ServerNameContext`).
- **Errors**: `postgres_errors()` is the one place asyncpg's exceptions become
  `sidecar.errors` (a SQLSTATE through `error_for_sqlstate`; a refused, reset or silent
  connection: Unavailable or DeadlineExceeded).

Usage:

    connection = PostgresConnection("main-db", PostgresConnectOptions(dsn="postgresql://db/app"))
    await connection.ping()                  # opens the pool, one SELECT 1
    conn = await connection.acquire()
    try:
        await conn.execute("SELECT 1")
    finally:
        connection.release_soon(conn)
    await connection.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from asyncpg import exceptions as pg_errors

from sidecar.config import ConnectionPoolConfig, TimeoutsConfig
from sidecar.config.postgres import PostgresEndpoint
from sidecar.config.tls import TlsConfig
from sidecar.connections._tls import client_ssl_context
from sidecar.connections.sql_timeouts import statement_timeout_ms
from sidecar.connections.sqlstate import error_for_sqlstate
from sidecar.errors import (
    Aborted,
    DeadlineExceeded,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)

__all__ = [
    "PostgresConnectOptions",
    "PostgresConnection",
    "in_open_transaction",
    "map_postgres_error",
    "open_connection",
    "postgres_errors",
    "rollback",
]

_log = logging.getLogger("sidecar.connections.postgres")

# Clean-up (ROLLBACK, release, pool close) must finish even when the connection is slow or dead.
CLEANUP_TIMEOUT = 5.0

PgConnection = Any  # an asyncpg connection (a pool proxy); asyncpg ships no types
SessionSetup = Callable[[PgConnection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PostgresConnectOptions:
    """How to reach one PostgreSQL database, and how to pool connections to it.

    Attributes:
        dsn: a `postgresql://` URL; when set it wins over host, port, database and user.
        host, port, database, user, password: the connection, when no dsn is given.
        tls: TLS settings (off by default: asyncpg then follows the dsn's `sslmode`).
        min_size, max_size: pool bounds.
        acquire_timeout: seconds a caller waits for a free connection.
        idle_timeout: seconds after which an idle connection is closed.
        connect_timeout: seconds to establish one connection.
        read_timeout: seconds the health ping waits for its answer.
        statement_timeout: the sessions' default statement timeout, in seconds.
        statement_cache_size: prepared statements kept per connection (0: none).
        application_name: shown in `pg_stat_activity`.
    """

    dsn: str | None = None
    host: str = "127.0.0.1"
    port: int = 5432
    database: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsConfig = field(default_factory=TlsConfig)
    min_size: int = 2
    max_size: int = 10
    acquire_timeout: float = 10.0
    idle_timeout: float = 300.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    statement_timeout: float = 30.0
    statement_cache_size: int = 100
    application_name: str = "integration-sidecar"


class PostgresConnection:
    """The asyncpg pool of one PostgreSQL endpoint, shared by the services naming it."""

    type = "postgres"
    probed = True

    def __init__(self, name: str, options: PostgresConnectOptions) -> None:
        self.name = name
        self.options = options
        self._pool: Any = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._setup: list[SessionSetup] = []
        self._users_read_only: list[bool] = []
        self._releasing: set[asyncio.Task[None]] = set()
        self.statement_timeout_ms = statement_timeout_ms(max(options.statement_timeout, 0.001))
        """The default `statement_timeout` of every session, in milliseconds."""

    @property
    def max_size(self) -> int:
        return self.options.max_size

    def pool_usage(self) -> tuple[int, int] | None:
        """(connections in use, idle ones) of the pool, or None before it opens (metrics)."""
        pool = self._pool
        if pool is None:
            return None
        idle: int = pool.get_idle_size()
        return pool.get_size() - idle, idle

    def on_session_start(self, setup: SessionSetup) -> None:
        """Run `setup` on every new connection of the pool (say, to register codecs); each
        hook once, whichever services add it. Only before the pool opens."""
        if self._pool is not None:
            raise RuntimeError("session setup hooks are added before the pool opens")
        if setup not in self._setup:
            self._setup.append(setup)

    def add_user(self, *, read_only: bool) -> None:
        """Note a service on the connection: when every one is read-only, sessions also start
        with `default_transaction_read_only = on` (the services' READ ONLY transactions are
        the enforcement; this is a second line). Only before the pool opens."""
        if self._pool is not None:
            raise RuntimeError("users are added before the pool opens")
        self._users_read_only.append(read_only)

    # -- the pool --------------------------------------------------------------------------

    async def pool(self) -> Any:
        """The asyncpg pool, opened on first use.

        Raises:
            Unavailable: the connection is closed, or the database cannot be reached.
        """
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                if self._closed:
                    raise Unavailable(
                        f"the postgres connection {self.name} is closed",
                        reason="UPSTREAM_UNAVAILABLE",
                    )
                try:
                    self._pool = await self._create_pool()
                except TimeoutError:
                    raise Unavailable(
                        "connecting to the database timed out", reason="UPSTREAM_UNAVAILABLE"
                    ) from None
        return self._pool

    async def acquire(self) -> PgConnection:
        """A pooled connection, within `acquire_timeout`; give it back with `release` or
        `release_soon`.

        Raises:
            ResourceExhausted: every connection stayed busy (reason POOL_EXHAUSTED).
            Unavailable: a new connection could not be opened in time.
        """
        pool = await self.pool()
        # With a connection idle, none of asyncpg's timeout wrapper: it costs a task per call.
        timeout = None if pool.get_idle_size() else self.options.acquire_timeout
        try:
            conn: PgConnection = await pool.acquire(timeout=timeout)
        except TimeoutError:
            if pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0:
                raise ResourceExhausted(
                    f"no database connection became free within "
                    f"{self.options.acquire_timeout:g}s (pool of {pool.get_max_size()})",
                    reason="POOL_EXHAUSTED",
                    metadata={"max_connections": str(pool.get_max_size())},
                ) from None
            raise Unavailable(
                "connecting to the database timed out", reason="UPSTREAM_UNAVAILABLE"
            ) from None
        return conn

    async def release(self, conn: PgConnection) -> None:
        """Give `conn` back: roll back what it left open, reset its session (the pool's
        reset), and let the next caller have it. Never raises for a lost connection: the
        pool replaces it."""
        pool = self._pool
        reset_sent = None
        try:
            if in_open_transaction(conn):  # a read-only call's READ ONLY transaction, say
                # The ROLLBACK and the session reset in one round trip, not two.
                await rollback(conn, then=_RESET_SESSION)
                reset_sent = _RESET_SENT.set(True)
            if pool is not None:
                await pool.release(conn, timeout=CLEANUP_TIMEOUT)
        except (
            OSError,
            pg_errors.PostgresError,
            pg_errors.InterfaceError,
            pg_errors.InternalClientError,  # a lost connection's holder went back on its own
        ) as exc:
            # asyncpg has already dropped a connection it could not reset.
            _log.debug("releasing a connection failed", extra={"error": repr(exc)})
        finally:
            if reset_sent is not None:
                _RESET_SENT.reset(reset_sent)

    def release_soon(self, conn: PgConnection) -> None:
        """`release` in the background: the session reset is a round trip the caller need
        not wait for. The connection rejoins the pool only once it is done."""
        task = asyncio.get_running_loop().create_task(self.release(conn))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    # -- health and close -----------------------------------------------------------------

    async def ping(self) -> None:
        """One `SELECT 1` on a pooled connection (opening the pool first if needed), within
        `read_timeout`; a pool with every connection busy is alive.

        Raises:
            Unavailable, DeadlineExceeded: with `target` the connection.
        """
        with postgres_errors(self.name):
            pool = await self.pool()
            if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
                return
            conn = await self.acquire()
            try:
                await conn.execute("SELECT 1", timeout=self.options.read_timeout)
            except BaseException:
                # A connection that did not answer is dropped, not reset and reused.
                with contextlib.suppress(pg_errors.InterfaceError):
                    conn.terminate()
                raise
            finally:
                self.release_soon(conn)

    async def close(self) -> None:
        """Close the pool, terminating connections that do not close in time. Idempotent."""
        async with self._lock:
            self._closed = True
        if self._releasing:
            await asyncio.wait(list(self._releasing), timeout=CLEANUP_TIMEOUT)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLEANUP_TIMEOUT)
        except (TimeoutError, OSError, pg_errors.PostgresError, pg_errors.InterfaceError):
            pool.terminate()

    # -- internals --------------------------------------------------------------------------

    async def _create_pool(self) -> Any:
        options = self.options
        settings = {
            "application_name": options.application_name,
            "statement_timeout": str(self.statement_timeout_ms),
        }
        if self._users_read_only and all(self._users_read_only):
            settings["default_transaction_read_only"] = "on"
        tls: dict[str, Any] = {}
        context = _ssl_context(options.tls)
        if context is not None:
            tls["ssl"] = context
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
            init=self._start_session if self._setup else None,
            reset=_reset_session,
            **tls,
        )
        try:
            await pool
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _start_session(self, conn: PgConnection) -> None:
        for setup in self._setup:
            await setup(conn)


def open_connection(
    name: str, endpoint: PostgresEndpoint, pool: ConnectionPoolConfig, timeouts: TimeoutsConfig
) -> PostgresConnection:
    """The PostgreSQL connection of one endpoint's settings (no I/O: the pool opens on first
    use). The pool is sized by the connection's `connection_pool`; `timeouts.connect` bounds
    opening a connection, `timeouts.read` the health ping and `timeouts.request` is the
    sessions' default statement timeout."""
    return PostgresConnection(
        name,
        PostgresConnectOptions(
            dsn=endpoint.dsn.get_secret_value() if endpoint.dsn else None,
            host=endpoint.host,
            port=endpoint.port,
            database=endpoint.database,
            user=endpoint.username,
            password=endpoint.password.get_secret_value() if endpoint.password else None,
            tls=endpoint.tls,
            min_size=pool.min_connections,
            max_size=pool.max_connections,
            acquire_timeout=pool.acquire_timeout,
            idle_timeout=pool.idle_timeout,
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.read,
            statement_timeout=timeouts.request,
            statement_cache_size=endpoint.statement_cache_size,
        ),
    )


# -- TLS ---------------------------------------------------------------------------------------


class _ServerNameContext(ssl.SSLContext):
    """An `SSLContext` that checks the server's certificate against (and sends as SNI)
    `server_name` whatever host the client passes: asyncpg always passes the host it
    connects to, and has no option of its own for another name."""

    server_name: str

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def _ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    context = client_ssl_context(tls)
    if context is None or tls.server_name is None:
        return context
    # Same settings, one method different: the context is re-typed, not rebuilt.
    context.__class__ = _ServerNameContext
    assert isinstance(context, _ServerNameContext)
    context.server_name = tls.server_name
    return context


# -- sessions ----------------------------------------------------------------------------------


async def _reset_session(conn: PgConnection) -> None:
    """The pool's reset, run before a connection is reused (one round trip), unless
    `release` sent it already, with its ROLLBACK."""
    if not _RESET_SENT.get():
        await conn.execute(_RESET_SESSION)


# True while `release` waits for asyncpg's release of a connection it has reset itself:
# asyncpg calls the pool's reset hook in the same task, and the hook then sends nothing.
_RESET_SENT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "postgres_reset_sent", default=False
)


def in_open_transaction(conn: PgConnection) -> bool:
    """Whether `conn` is alive and inside a transaction. A pooled connection that died has
    already gone back to the pool, and its proxy then refuses every call."""
    try:
        return bool(not conn.is_closed() and conn.is_in_transaction())
    except pg_errors.InterfaceError:
        return False


async def rollback(conn: PgConnection, *, then: str = "") -> None:
    """Roll back (and run the statements `then`, in the same message), or drop a connection
    that cannot do that (the pool replaces it)."""
    try:
        await asyncio.wait_for(conn.execute(f"ROLLBACK;{then}"), CLEANUP_TIMEOUT)
    except (TimeoutError, OSError, pg_errors.PostgresError, pg_errors.InterfaceError):
        # A connection lost meanwhile is already back in the pool: nothing left to drop.
        with contextlib.suppress(pg_errors.InterfaceError):
            conn.terminate()


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


# -- errors ------------------------------------------------------------------------------------

_DETAIL_FIELDS = ("schema_name", "table_name", "column_name", "constraint_name", "data_type_name")


@contextlib.contextmanager
def postgres_errors(target: str | None = None) -> Iterator[None]:
    """Turn asyncpg's exceptions into `sidecar.errors`, raised from the original; with a
    `target`, every error that leaves carries it (unless it names one already)."""
    try:
        yield
    except SidecarError as exc:
        if target is not None:
            exc.metadata.setdefault("target", target)
        raise
    except Exception as exc:
        mapped = map_postgres_error(exc)
        if mapped is None:
            raise
        if target is not None:
            mapped.metadata.setdefault("target", target)
        raise mapped from exc


def map_postgres_error(exc: BaseException) -> SidecarError | None:
    """The `sidecar.errors` error for an asyncpg (or socket) exception; None for one that is
    not the database's or the network's (a bug: let it through).

    | exception                            | error                                  |
    |--------------------------------------|----------------------------------------|
    | a cached plan the schema invalidated | Aborted (retry the call)               |
    | PostgresError (has a SQLSTATE)       | `error_for_sqlstate`                   |
    | InterfaceError "connection closed"   | Unavailable UPSTREAM_UNAVAILABLE       |
    | TimeoutError                         | DeadlineExceeded                       |
    | OSError (refused, reset, TLS)        | Unavailable UPSTREAM_UNAVAILABLE       |
    """
    if isinstance(exc, pg_errors.InvalidCachedStatementError | pg_errors.OutdatedSchemaCacheError):
        return Aborted(
            "the schema changed while the statement was prepared; retry the call",
            reason="SQL_ERROR",
            metadata={"sqlstate": getattr(exc, "sqlstate", None) or "0A000"},
        )
    if isinstance(exc, pg_errors.PostgresError):
        return _from_postgres(exc)
    if isinstance(exc, pg_errors.InterfaceError):
        if "connection is closed" in str(exc) or "connection was closed" in str(exc):
            return Unavailable("lost the database connection", reason="UPSTREAM_UNAVAILABLE")
        return None
    if isinstance(exc, TimeoutError):
        return DeadlineExceeded("the database did not answer in time", reason="DEADLINE_EXCEEDED")
    if isinstance(exc, OSError):  # ssl.SSLError is one too
        return Unavailable(
            f"cannot reach the database: {exc.strerror or type(exc).__name__}",
            reason="UPSTREAM_UNAVAILABLE",
        )
    return None


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
