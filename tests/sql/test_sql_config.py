"""`type: sql` services: defaults, the postgres settings of the specification's example,
secrets from the environment, pool sizes from `connection_pool`, and clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.backends.registry import build_backend, registered_backends
from sidecar.backends.spec import BuildContext
from sidecar.backends.sql.postgres import PostgresBackend
from sidecar.backends.sql.sqlite import SqliteBackend
from sidecar.config import Config, ConfigError, parse_config
from sidecar.config.services.sql import SqlServiceConfig
from sidecar.connections import build_connections
from sidecar.resilience import SYSTEM_CLOCK

SPEC_SHAPED = """
integration:
  connection_pools:
    default: {min_connections: 1, max_connections: 5, acquire_timeout: 2s}
  timeouts: {connect: 3s, request: 20s}
services:
  postgresql:
    type: sql
    backend: postgres
    host: db.internal
    port: 6432
    database: parallel_ai
    username: ${DB_USERNAME}
    password: ${DB_PASSWORD}
    read_only: true
    connection_pool: {max_connections: 20, idle_timeout: 30s}
"""


def test_every_default_matches_the_documented_value() -> None:
    assert SqlServiceConfig().model_dump() == {
        "type": "sql",
        "backend": "sqlite",
        "default": False,
        "connection": None,
        "dsn": None,
        "host": "127.0.0.1",
        "port": 5432,
        "database": None,
        "username": None,
        "password": None,
        "tls": {
            "enabled": False,
            "ca_file": None,
            "cert_file": None,
            "key_file": None,
            "verify": True,
            "server_name": None,
        },
        "path": ":memory:",
        "read_only": False,
        "allow_privileged_role": False,
        "statement_cache_size": 100,
        "max_rows_per_query": 10_000,
        "stream_batch_size": 500,
        "stream_idle_timeout": 30.0,
        "max_stream_connections": None,
        "retry_policy": None,
        "circuit_breaker": None,
        "rate_limit": None,
        "bulkhead": None,
        "timeouts": None,
        "connection_pool": None,
    }


def built(config: Config, name: str) -> Any:
    """The backend the registry builds for the service `name`, on the connection the
    runtime would give it (no I/O happens)."""
    connection = build_connections(config).get(config.connection_of(name) or name)
    context = BuildContext(
        name, config.services[name], config.policies_for(name), connection, SYSTEM_CLOCK
    )
    return build_backend(context).backend


def test_the_embedded_defaults_include_sql_on_sqlite_in_memory() -> None:
    service = Config().services["sql"]
    assert (service.type, service.backend, service.path) == ("sql", "sqlite", ":memory:")


def test_the_specification_shape_builds_a_postgres_pool_from_the_resolved_policies() -> None:
    config = parse_config(SPEC_SHAPED, environ={"DB_USERNAME": "app", "DB_PASSWORD": "s3cret"})
    backend = built(config, "postgresql")
    assert isinstance(backend, PostgresBackend)
    options, pool = backend._options, backend.connection.options
    assert (pool.host, pool.port, pool.database) == ("db.internal", 6432, "parallel_ai")
    assert (pool.user, pool.password, options.read_only) == ("app", "s3cret", True)
    assert (pool.min_size, pool.max_size) == (1, 20)
    assert (pool.acquire_timeout, pool.idle_timeout) == (2.0, 30.0)
    assert (pool.connect_timeout, options.request_timeout) == (3.0, 20.0)


def test_the_password_never_shows_in_repr_or_dumps() -> None:
    config = parse_config(SPEC_SHAPED, environ={"DB_USERNAME": "app", "DB_PASSWORD": "s3cret"})
    service = config.services["postgresql"]
    backend = built(config, "postgresql")
    assert "s3cret" not in repr(service)
    assert "s3cret" not in str(service.model_dump())
    assert "s3cret" not in repr(backend._options)
    assert "s3cret" not in repr(backend.connection.options)


def test_a_dsn_replaces_the_connection_fields() -> None:
    config = parse_config(
        "services:\n  db: {type: sql, backend: postgres, dsn: '${DATABASE_URL}'}\n",
        environ={"DATABASE_URL": "postgresql://app:pw@db/app"},
    )
    backend = built(config, "db")
    assert backend.connection.options.dsn == "postgresql://app:pw@db/app"


def test_sqlite_is_built_with_its_path_and_the_acquire_timeout() -> None:
    config = parse_config(
        "services:\n  db: {type: sql, path: /tmp/x.db, connection_pool: {acquire_timeout: 1s}}\n"
    )
    backend = built(config, "db")
    assert isinstance(backend, SqliteBackend)
    options = backend.connection.options
    assert (options.path, options.acquire_timeout) == ("/tmp/x.db", 1.0)


def test_both_sql_backends_are_registered() -> None:
    assert {("sql", "postgres"), ("sql", "sqlite")} <= set(registered_backends())


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        ("{type: sql, backend: postgres, path: x.db}", "path is only for backend: sqlite"),
        ("{type: sql, host: db}", "host is only for backend: postgres"),
        (
            "{type: sql, backend: postgres, dsn: 'postgresql://db/x', host: db}",
            "set either dsn or host, not both",
        ),
        ("{type: sql, backend: postgres, dsn: 'mysql://db/x'}", "postgresql:// or postgres://"),
        ("{type: sql, backend: mysql}", "mysql"),
        ("{type: sql, stream_batch_size: 0}", "stream_batch_size"),
        ("{type: sql, max_rows_per_query: 0}", "max_rows_per_query"),
    ],
)
def test_a_bad_sql_service_is_reported_by_path(service: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"services:\n  db: {service}\n", environ={})
    assert problem in str(caught.value)
    assert "services.db" in str(caught.value)


# -- named connections (type: postgres / type: sqlite) ----------------------------------------

NAMED = """
connections:
  pg:
    type: postgres
    host: db.internal
    database: orders
    username: app
    password: ${DB_PASSWORD}
    statement_cache_size: 7
    connection_pool: {min_connections: 1, max_connections: 12}
    timeouts: {connect: 2s, request: 15s}
  lite: {type: sqlite, path: /tmp/shared.db, connection_pool: {acquire_timeout: 3s}}
services:
  orders: {type: sql, connection: pg}
  reports: {type: sql, connection: pg, read_only: true, timeouts: {request: 5s}}
  local: {type: sql, connection: lite}
"""


def test_a_service_naming_a_connection_runs_on_its_type_and_its_pool() -> None:
    config = parse_config(NAMED, environ={"DB_PASSWORD": "s3cret"})
    assert [config.services[name].backend for name in ("orders", "reports", "local")] == [
        "postgres",
        "postgres",
        "sqlite",
    ]
    connections = build_connections(config)
    orders, reports, local = (
        build_backend(
            BuildContext(
                name,
                config.services[name],
                config.policies_for(name),
                connections.get(config.connection_of(name) or name),
                SYSTEM_CLOCK,
            )
        ).backend
        for name in ("orders", "reports", "local")
    )
    assert isinstance(orders, PostgresBackend) and isinstance(reports, PostgresBackend)
    assert orders.connection is reports.connection is connections.get("pg")
    pool = orders.connection.options
    assert (pool.host, pool.database, pool.user, pool.password) == (
        "db.internal",
        "orders",
        "app",
        "s3cret",
    )
    assert (pool.min_size, pool.max_size, pool.statement_cache_size) == (1, 12, 7)
    assert (pool.connect_timeout, pool.statement_timeout) == (2.0, 15.0)
    # Per service: read_only and the request timeout.
    assert (orders._options.read_only, reports._options.read_only) == (False, True)
    assert (orders._options.request_timeout, reports._options.request_timeout) == (30.0, 5.0)
    assert isinstance(local, SqliteBackend)
    assert (local.connection.options.path, local.connection.options.acquire_timeout) == (
        "/tmp/shared.db",
        3.0,
    )
    assert len(connections) == 2  # no implicit connections for the three services


@pytest.mark.parametrize(
    ("yaml", "where", "problem"),
    [
        (
            "connections:\n  pg: {type: postgres}\n"
            "services:\n  db: {type: sql, connection: pg, host: db, password: x}\n",
            "services.db",
            "host, password are set by connection 'pg'; remove them here",
        ),
        (
            "connections:\n  lite: {type: sqlite}\n"
            "services:\n  db: {type: sql, connection: lite, path: x.db}\n",
            "services.db",
            "path is set by connection 'lite'; remove it here",
        ),
        (
            "connections:\n  pg: {type: postgres, dsn: 'postgresql://db/x', port: 5433}\n",
            "connections.pg",
            "set either dsn or port, not both",
        ),
        (
            "connections:\n  pg: {type: postgres, dsn: 'mysql://db/x'}\n",
            "connections.pg",
            "postgresql:// or postgres://",
        ),
        (
            "connections:\n  pg: {type: postgres}\n"
            "services:\n  db: {type: sql, backend: sqlite, connection: pg}\n",
            "services.db.connection",
            "'pg' is not a configured sqlite connection",
        ),
        (
            "connections:\n  pg: {type: postgres}\n"
            "services:\n  db: {type: sql, connection: pg, connection_pool: {max_connections: 3}}\n",
            "services.db.connection_pool",
            "the pool belongs to connection 'pg'",
        ),
        ("services:\n  db: {type: sql, tls: true}\n", "services.db", "tls is only for backend"),
        (
            "connections:\n  lite: {type: sqlite, host: db}\n",
            "connections.lite",
            "host",
        ),
    ],
)
def test_a_bad_sql_connection_is_reported_by_path(yaml: str, where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml, environ={})
    assert problem in str(caught.value)
    assert where in str(caught.value)


def test_an_inline_postgres_service_takes_tls_and_server_name(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    config = parse_config(
        "services:\n  db:\n    type: sql\n    backend: postgres\n    host: 10.0.0.5\n"
        f"    tls: {{ca_file: {ca}, server_name: db.internal}}\n"
    )
    backend = built(config, "db")
    tls = backend.connection.options.tls
    assert (tls.enabled, tls.server_name) == (True, "db.internal")
