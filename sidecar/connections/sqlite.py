"""`SqliteConnection`: one SQLite database and the one aiosqlite connection that opens it.

SQLite runs one statement at a time per connection, so the services naming the connection
take turns on it (`turn`): a caller holds the turn for the whole of its call (a QueryStream
until it ends). Each caller installs its own authorizer for its turn (`use_authorizer`), so
a read-only service and a read-write one can share the database. It has no network: the
health ping opens the file (once) and runs `select 1`.

Usage:

    connection = SqliteConnection("local", SqliteConnectOptions(path="/var/lib/app.db"))
    async with connection.turn:
        conn = await connection.connect()
        await conn.execute("select 1")
    await connection.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiosqlite

from sidecar.config import ConnectionPoolConfig, TimeoutsConfig
from sidecar.config.sqlite import SqliteEndpoint
from sidecar.connections.sqlstate import error_for_sqlstate
from sidecar.errors import FailedPrecondition, InvalidArgument, SidecarError, Unavailable

__all__ = [
    "Authorizer",
    "SqliteConnectOptions",
    "SqliteConnection",
    "map_sqlite_error",
    "open_connection",
    "sqlite_errors",
]

_CLEANUP_TIMEOUT = 5.0

Authorizer = Callable[[int, str | None, str | None, str | None, str | None], int]
"""sqlite3's authorizer callback: (action, arg1, arg2, database, source) -> OK/DENY/IGNORE."""


@dataclass(frozen=True, slots=True)
class SqliteConnectOptions:
    """One SQLite database.

    Attributes:
        path: a file path, a `file:` URI, or `:memory:`.
        acquire_timeout: seconds a call waits for its turn on the connection.
        busy_timeout: seconds SQLite waits on a file locked by another process.
    """

    path: str = ":memory:"
    acquire_timeout: float = 10.0
    busy_timeout: float = 5.0


class SqliteConnection:
    """The aiosqlite connection of one SQLite database, shared in turns."""

    type = "sqlite"
    probed = True
    """No network, but the file may be gone or unreadable: `ping` runs `select 1`."""

    def __init__(self, name: str, options: SqliteConnectOptions) -> None:
        self.name = name
        self.options = options
        self.turn = asyncio.Lock()
        """Held by the one caller using the connection (see the module docstring)."""
        self._conn: aiosqlite.Connection | None = None
        self._open_lock = asyncio.Lock()
        self._authorizer: Authorizer | None = None
        self._closed = False

    async def connect(self) -> aiosqlite.Connection:
        """The open connection (opening the database on first use).

        Raises:
            Unavailable: the connection is closed, or the database cannot be opened.
        """
        if self._conn is not None:
            return self._conn
        async with self._open_lock:
            if self._conn is None:
                if self._closed:
                    raise Unavailable(
                        f"the sqlite connection {self.name} is closed",
                        reason="UPSTREAM_UNAVAILABLE",
                    )
                path = self.options.path
                self._conn = await aiosqlite.connect(
                    path,
                    isolation_level=None,  # autocommit; transactions are explicit
                    timeout=self.options.busy_timeout,
                    uri=path.startswith("file:"),
                )
                self._authorizer = None
        return self._conn

    async def use_authorizer(self, authorizer: Authorizer) -> None:
        """Install `authorizer` for the turn holder's statements (a no-op when it is the
        one installed already: a thread round trip saved per call)."""
        conn = await self.connect()
        if self._authorizer != authorizer:
            await conn.set_authorizer(authorizer)
            self._authorizer = authorizer

    async def ping(self) -> None:
        """Open the database if needed and run `select 1`; a connection busy with a call
        counts as alive (the ping would only wait for that call).

        Raises:
            Unavailable: with `target` the connection.
        """
        with sqlite_errors(self.name):
            conn = await self.connect()
            if self.turn.locked():
                return
            async with conn.execute("select 1") as cursor:
                await cursor.fetchone()

    async def close(self) -> None:
        """Close the database connection. Idempotent."""
        async with self._open_lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error, ValueError, TimeoutError):
                await asyncio.wait_for(conn.close(), _CLEANUP_TIMEOUT)


def open_connection(
    name: str, endpoint: SqliteEndpoint, pool: ConnectionPoolConfig, timeouts: TimeoutsConfig
) -> SqliteConnection:
    """The SQLite connection of one endpoint's settings (no I/O: it opens on first use). A
    caller waits at most the pool's `acquire_timeout` for its turn."""
    return SqliteConnection(
        name, SqliteConnectOptions(path=endpoint.path, acquire_timeout=pool.acquire_timeout)
    )


# -- errors ------------------------------------------------------------------------------------

_CONSTRAINT_SQLSTATES = {
    "SQLITE_CONSTRAINT_UNIQUE": "23505",
    "SQLITE_CONSTRAINT_PRIMARYKEY": "23505",
    "SQLITE_CONSTRAINT_NOTNULL": "23502",
    "SQLITE_CONSTRAINT_FOREIGNKEY": "23503",
    "SQLITE_CONSTRAINT_CHECK": "23514",
}


@contextlib.contextmanager
def sqlite_errors(target: str | None = None) -> Iterator[None]:
    """Turn sqlite3 and aiosqlite exceptions into `sidecar.errors`, raised from the original;
    with a `target`, every error that leaves carries it (unless it names one already)."""
    try:
        yield
    except SidecarError as exc:
        if target is not None:
            exc.metadata.setdefault("target", target)
        raise
    except (sqlite3.Error, ValueError) as exc:
        mapped = map_sqlite_error(exc)
        if target is not None:
            mapped.metadata.setdefault("target", target)
        raise mapped from exc


def map_sqlite_error(exc: sqlite3.Error | ValueError) -> SidecarError:
    """The `sidecar.errors` error for a sqlite3 error (by its error name, onto the SQLSTATE
    of the same meaning) or aiosqlite's ValueError of a closed connection."""
    if isinstance(exc, ValueError):  # aiosqlite: "Connection closed" / "no active connection"
        return Unavailable("the SQLite connection is closed", reason="UPSTREAM_UNAVAILABLE")
    name = getattr(exc, "sqlite_errorname", "") or ""
    message = str(exc) or name or type(exc).__name__
    meta = {"sqlite_error": name} if name else {}
    if isinstance(exc, sqlite3.IntegrityError) or name.startswith("SQLITE_CONSTRAINT"):
        return error_for_sqlstate(_CONSTRAINT_SQLSTATES.get(name, "23000"), message, meta)
    if name in ("SQLITE_AUTH", "SQLITE_AUTH_USER") or name.startswith("SQLITE_READONLY"):
        return error_for_sqlstate("25006", message, meta)
    if name == "SQLITE_INTERRUPT":
        return error_for_sqlstate("57014", message, meta)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR")):
        return Unavailable(message, reason="UPSTREAM_UNAVAILABLE", metadata=meta)
    if name == "SQLITE_FULL":
        return error_for_sqlstate("53100", message, meta)
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError | sqlite3.DataError):
        # "Incorrect number of bindings", "Error binding parameter", or the SQL itself
        # ("You can only execute one statement at a time").
        field = "parameters" if "bind" in message.lower() else "sql"
        return InvalidArgument(message, reason="INVALID_REQUEST", metadata={"field": field})
    if name in ("SQLITE_ERROR", "SQLITE_RANGE", "SQLITE_MISMATCH", "SQLITE_TOOBIG"):
        return error_for_sqlstate("42000", message, meta)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_NOMEM")):
        return error_for_sqlstate("58000", message, meta)
    return FailedPrecondition(message, reason="SQL_ERROR", metadata=meta)
