"""`SqlServiceConfig`: a SQL database (`type: sql`), served by SqlService.

PostgreSQL, in the shape of the specification's `postgresql` example:

    services:
      orders-db:
        type: sql
        backend: postgres
        host: db.internal
        port: 5432
        database: orders
        username: ${DB_USERNAME}
        password: ${DB_PASSWORD}
        connection_pool: {max_connections: 20, idle_timeout: 30s}

or with `dsn: ${DATABASE_URL}` instead of host, port, database and username. SQLite, the
embedded default, needs only a `path` (a file, or `:memory:`). These inline settings make a
connection of the service's own, named like it; its pool is sized by the service's
`connection_pool` (min_connections, max_connections, acquire_timeout, idle_timeout) merged
over `integration.connection_pools.default`, and `timeouts.connect` and `timeouts.request`
bound connecting and each statement.

Or the service names a `type: postgres` / `type: sqlite` connection, and shares its pool
with every other service naming it; what is per service stays here (read_only, row and
stream limits, its policies):

    connections:
      orders-pg: {type: postgres, dsn: '${DATABASE_URL}', connection_pool: {max_connections: 20}}
    services:
      orders: {type: sql, connection: orders-pg}
      reports: {type: sql, connection: orders-pg, read_only: true}

(`backend:` follows the connection's type when not given.)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastOne, ServiceName
from .._units import DurationSeconds
from ..postgres import POSTGRES_ENDPOINT_FIELDS, PostgresEndpoint, check_postgres_endpoint
from ..sqlite import SQLITE_ENDPOINT_FIELDS, SqliteEndpoint
from .base import ServiceBase

__all__ = ["SqlServiceConfig"]

_POSTGRES_ONLY = (
    "dsn",
    "host",
    "port",
    "database",
    "username",
    "password",
    "tls",
    "allow_privileged_role",
    "max_stream_connections",
)
_SQLITE_ONLY = ("path",)


class SqlServiceConfig(PostgresEndpoint, SqliteEndpoint, ServiceBase):
    """A SQL database (SqlService): PostgreSQL through asyncpg, or embedded SQLite; the
    endpoint is a named connection (`connection:`) or the inline fields of the backend's
    endpoint (`PostgresEndpoint`, `SqliteEndpoint`), which make a connection of its own."""

    type: Literal["sql"] = Field(default="sql", description="Service type.")
    backend: str = Field(
        default="sqlite",
        description="postgres: a PostgreSQL server through an asyncpg pool; sqlite: an "
        "embedded SQLite database (one connection, calls take turns). Default sqlite.",
    )
    connection: ServiceName | None = Field(
        default=None,
        description="The name of a postgres or sqlite connection (under connections:) to "
        "use; services naming one connection share its pool (postgres) or its database "
        "connection (sqlite). Without it, the inline dsn/host/.../path settings make a "
        "connection of this service's own. Default null.",
    )
    read_only: bool = Field(
        default=False,
        description="Refuse every write, enforced by the database (PostgreSQL: every call "
        "runs in a READ ONLY transaction; SQLite: an authorizer), not by reading the SQL. "
        "PostgreSQL: a role that can act on the server (superuser, pg_execute_server_program, "
        "pg_read_server_files, pg_write_server_files, pg_signal_backend) is refused, see "
        "allow_privileged_role. Default false.",
    )
    allow_privileged_role: bool = Field(
        default=False,
        description="Serve a read_only target (backend: postgres) even though its role can "
        "act on the server, which READ ONLY transactions do not stop (a warning is logged). "
        "Default false.",
    )
    max_rows_per_query: AtLeastOne = Field(
        default=10_000,
        description="Most rows a Query (or one statement of a Transaction) may return; more "
        "fail with RESOURCE_EXHAUSTED (TOO_MANY_ROWS): use QueryStream. Default 10000.",
    )
    stream_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Rows per QueryStream message when the request does not say (1-10000). "
        "Default 500.",
    )
    stream_idle_timeout: DurationSeconds = Field(
        default=30.0,
        description="A QueryStream whose reader takes no message for this long ends with "
        "ABORTED (STREAM_IDLE_TIMEOUT), rolling back its transaction and freeing its "
        "connection. Default 30s.",
    )
    max_stream_connections: AtLeastOne | None = Field(
        default=None,
        description="Most pooled connections open QueryStreams may hold at once (backend: "
        "postgres); more wait up to acquire_timeout, then fail with RESOURCE_EXHAUSTED "
        "(POOL_EXHAUSTED), so streams never take the whole pool. Default null: "
        "max_connections - 1 (at least 1).",
    )

    @model_validator(mode="after")
    def _settings_match_backend(self) -> SqlServiceConfig:
        foreign = _SQLITE_ONLY if self.backend == "postgres" else _POSTGRES_ONLY
        misplaced = sorted(name for name in foreign if name in self.model_fields_set)
        if misplaced:
            other = "sqlite" if self.backend == "postgres" else "postgres"
            raise PydanticCustomError(
                "setting_of_other_backend",
                "{names} {verb} only for backend: {other}",
                {
                    "names": ", ".join(misplaced),
                    "verb": "is" if len(misplaced) == 1 else "are",
                    "other": other,
                },
            )
        own = POSTGRES_ENDPOINT_FIELDS if self.backend == "postgres" else SQLITE_ENDPOINT_FIELDS
        inline = sorted(own & self.model_fields_set)
        if self.connection is not None and inline:
            raise PydanticCustomError(
                "inline_sql_with_connection",
                "{names} {verb} set by connection {connection}; remove {them} here",
                {
                    "names": ", ".join(inline),
                    "verb": "is" if len(inline) == 1 else "are",
                    "connection": repr(self.connection),
                    "them": "it" if len(inline) == 1 else "them",
                },
            )
        if self.backend == "postgres":
            check_postgres_endpoint(self)
        return self
