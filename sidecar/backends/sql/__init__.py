"""The SQL capability: domain values and results, and the `SqlBackend` protocol.

The backends, `postgres.PostgresBackend` (asyncpg) and `sqlite.SqliteBackend` (aiosqlite), are
imported by the registry only when configured, so their client libraries load only then.
"""

from sidecar.backends.sql.base import (
    Column,
    Interval,
    IsolationLevel,
    Json,
    ResultSet,
    Row,
    RowStream,
    SqlBackend,
    SqlValue,
    Statement,
    error_for_sqlstate,
    rows_affected,
    statement_timeout_ms,
    time_left,
    too_many_rows,
)

__all__ = [
    "Column",
    "Interval",
    "IsolationLevel",
    "Json",
    "ResultSet",
    "Row",
    "RowStream",
    "SqlBackend",
    "SqlValue",
    "Statement",
    "error_for_sqlstate",
    "rows_affected",
    "statement_timeout_ms",
    "time_left",
    "too_many_rows",
]
