"""SQL backends built by hand for tests, each on a connection of its own that closes with it
(in the sidecar the runtime closes connections, after every service on them)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sidecar.backends.sql.postgres import PostgresBackend, PostgresOptions
from sidecar.backends.sql.sqlite import SqliteBackend, SqliteOptions
from sidecar.connections.postgres import PostgresConnection, PostgresConnectOptions
from sidecar.connections.sqlite import SqliteConnection, SqliteConnectOptions

__all__ = ["postgres_backend", "sqlite_backend"]


class _OwningPostgresBackend(PostgresBackend):
    async def close(self) -> None:
        await super().close()
        await self.connection.close()


class _OwningSqliteBackend(SqliteBackend):
    async def close(self) -> None:
        await super().close()
        await self.connection.close()


def _split(options: dict[str, Any], connect_type: type, backend_type: type) -> tuple[Any, Any]:
    connect_fields = {f.name for f in dataclasses.fields(connect_type)}
    connect = {k: v for k, v in options.items() if k in connect_fields}
    backend = {k: v for k, v in options.items() if k not in connect_fields}
    return connect_type(**connect), backend_type(**backend)


def postgres_backend(name: str = "db", **options: Any) -> PostgresBackend:
    """A PostgresBackend on its own PostgresConnection: `options` are fields of either
    `PostgresConnectOptions` (dsn, min_size, ...) or `PostgresOptions` (read_only, ...)."""
    connect, backend = _split(options, PostgresConnectOptions, PostgresOptions)
    return _OwningPostgresBackend(PostgresConnection(name, connect), backend)


def sqlite_backend(name: str = "db", **options: Any) -> SqliteBackend:
    """A SqliteBackend on its own SqliteConnection (fields of `SqliteConnectOptions` or
    `SqliteOptions`)."""
    connect, backend = _split(options, SqliteConnectOptions, SqliteOptions)
    return _OwningSqliteBackend(SqliteConnection(name, connect), backend)
