"""`SqliteEndpoint`: which SQLite database a `type: sqlite` connection (or a `type: sql`
service on the default `backend: sqlite`, inline) opens.

    connections:
      local-db: {type: sqlite, path: /var/lib/app/app.db}
"""

from __future__ import annotations

from pydantic import Field

from ._common import ConfigModel

__all__ = ["SQLITE_ENDPOINT_FIELDS", "SqliteEndpoint"]


class SqliteEndpoint(ConfigModel):
    """One SQLite database file, opened once and shared by the services naming it."""

    path: str = Field(
        default=":memory:",
        description="SQLite database (backend: sqlite): a file path, a file: URI, or :memory: "
        "(private to the process, gone when it exits). Default :memory:.",
    )


SQLITE_ENDPOINT_FIELDS = frozenset(SqliteEndpoint.model_fields)
