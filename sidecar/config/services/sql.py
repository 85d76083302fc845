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
embedded default, needs only a `path` (a file, or `:memory:`). The pool is sized by the
service's `connection_pool` (min_connections, max_connections, acquire_timeout,
idle_timeout) merged over `integration.connection_pools.default`, and `timeouts.connect`
and `timeouts.request` bound connecting and each statement.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastOne, AtLeastZero
from .._units import DurationSeconds
from .base import ServiceBase

__all__ = ["SqlServiceConfig"]

_POSTGRES_ONLY = (
    "dsn",
    "host",
    "port",
    "database",
    "username",
    "password",
    "allow_privileged_role",
    "max_stream_connections",
)
_SQLITE_ONLY = ("path",)


class SqlServiceConfig(ServiceBase):
    """A SQL database (SqlService): PostgreSQL through asyncpg, or embedded SQLite."""

    type: Literal["sql"] = Field(default="sql", description="Service type.")
    backend: str = Field(
        default="sqlite",
        description="postgres: a PostgreSQL server through an asyncpg pool; sqlite: an "
        "embedded SQLite database (one connection, calls take turns). Default sqlite.",
    )
    dsn: SecretStr | None = Field(
        default=None,
        description="postgresql:// connection URL (backend: postgres), instead of host, port, "
        "database and username; write it as a ${ENV} reference if it holds a password. "
        "Default null.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="PostgreSQL host name, IP address or Unix socket directory (backend: "
        "postgres). Default 127.0.0.1.",
    )
    port: int = Field(
        default=5432,
        ge=1,
        le=65535,
        description="PostgreSQL TCP port (backend: postgres). Default 5432.",
    )
    database: str | None = Field(
        default=None,
        description="Database name (backend: postgres); null means the user's name, as libpq "
        "does. Default null.",
    )
    username: str | None = Field(
        default=None,
        description="Database user (backend: postgres); null means the OS user, as libpq "
        "does. Default null.",
    )
    password: SecretStr | None = Field(
        default=None,
        description="Database password (backend: postgres); write it as a ${ENV} reference, "
        "never in the file. It never appears in repr, logs or dumps. Default null.",
    )
    path: str = Field(
        default=":memory:",
        description="SQLite database (backend: sqlite): a file path, a file: URI, or :memory: "
        "(private to the process, gone when it exits). Default :memory:.",
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
    statement_cache_size: AtLeastZero = Field(
        default=100,
        description="Prepared statements kept per connection (backend: postgres), so a "
        "repeated statement costs one round trip; 0 prepares every time. Default 100.",
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
        if self.dsn is not None:
            clashing = sorted(
                name
                for name in ("host", "port", "database", "username")
                if name in self.model_fields_set
            )
            if clashing:
                raise PydanticCustomError(
                    "dsn_and_fields",
                    "set either dsn or {names}, not both",
                    {"names": ", ".join(clashing)},
                )
            if not self.dsn.get_secret_value().startswith(("postgresql://", "postgres://")):
                raise PydanticCustomError(
                    "invalid_dsn", "dsn must be a postgresql:// or postgres:// URL"
                )
        return self
