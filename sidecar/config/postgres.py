"""`PostgresEndpoint`: where a PostgreSQL database is and how to sign in: a `type: postgres`
connection, or the inline settings of a `type: sql, backend: postgres` service (which make
an implicit connection of its own).

    connections:
      orders-db:
        type: postgres
        host: db.internal
        port: 5432
        database: orders
        username: ${DB_USERNAME}
        password: ${DB_PASSWORD}
        tls: {ca_file: /etc/ssl/internal-ca.pem}
        connection_pool: {max_connections: 20}

or `dsn: ${DATABASE_URL}` instead of host, port, database and username.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_core import PydanticCustomError

from ._common import AtLeastZero, ConfigModel
from .tls import TlsConfig

__all__ = ["POSTGRES_ENDPOINT_FIELDS", "PostgresEndpoint", "check_postgres_endpoint"]


class PostgresEndpoint(ConfigModel):
    """How to reach one PostgreSQL database; the pool's size is the connection's
    `connection_pool` (one pool, shared by every service on the connection)."""

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
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS to PostgreSQL (backend: postgres): true, or a section with ca_file, "
        "cert_file and key_file (mutual TLS, for pg_hba.conf `cert`), verify and server_name. "
        "When on, the connection fails rather than fall back to plain text. Default false: "
        "the dsn's sslmode applies.",
    )
    statement_cache_size: AtLeastZero = Field(
        default=100,
        description="Prepared statements kept per connection (backend: postgres), so a "
        "repeated statement costs one round trip; 0 prepares every time. Default 100.",
    )


POSTGRES_ENDPOINT_FIELDS = frozenset(PostgresEndpoint.model_fields)


def check_postgres_endpoint(endpoint: PostgresEndpoint) -> None:
    """A dsn excludes host, port, database and username, and is a postgresql:// URL.

    Raises:
        PydanticCustomError: at the endpoint's path.
    """
    if endpoint.dsn is None:
        return
    clashing = sorted(
        name
        for name in ("host", "port", "database", "username")
        if name in endpoint.model_fields_set
    )
    if clashing:
        raise PydanticCustomError(
            "dsn_and_fields", "set either dsn or {names}, not both", {"names": ", ".join(clashing)}
        )
    if not endpoint.dsn.get_secret_value().startswith(("postgresql://", "postgres://")):
        raise PydanticCustomError("invalid_dsn", "dsn must be a postgresql:// or postgres:// URL")
