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
        "dsn": None,
        "host": "127.0.0.1",
        "port": 5432,
        "database": None,
        "username": None,
        "password": None,
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
    """The backend the registry builds for the service `name` (no I/O happens)."""
    context = BuildContext(
        name, config.services[name], config.policies_for(name), None, SYSTEM_CLOCK
    )
    return build_backend(context).backend


def test_the_embedded_defaults_include_sql_on_sqlite_in_memory() -> None:
    service = Config().services["sql"]
    assert (service.type, service.backend, service.path) == ("sql", "sqlite", ":memory:")


def test_the_specification_shape_builds_a_postgres_pool_from_the_resolved_policies() -> None:
    config = parse_config(SPEC_SHAPED, environ={"DB_USERNAME": "app", "DB_PASSWORD": "s3cret"})
    backend = built(config, "postgresql")
    options = backend._options
    assert isinstance(backend, PostgresBackend)
    assert (options.host, options.port, options.database) == ("db.internal", 6432, "parallel_ai")
    assert (options.user, options.password, options.read_only) == ("app", "s3cret", True)
    assert (options.min_size, options.max_size) == (1, 20)
    assert (options.acquire_timeout, options.idle_timeout) == (2.0, 30.0)
    assert (options.connect_timeout, options.request_timeout) == (3.0, 20.0)


def test_the_password_never_shows_in_repr_or_dumps() -> None:
    config = parse_config(SPEC_SHAPED, environ={"DB_USERNAME": "app", "DB_PASSWORD": "s3cret"})
    service = config.services["postgresql"]
    backend = built(config, "postgresql")
    assert "s3cret" not in repr(service)
    assert "s3cret" not in str(service.model_dump())
    assert "s3cret" not in repr(backend._options)


def test_a_dsn_replaces_the_connection_fields() -> None:
    config = parse_config(
        "services:\n  db: {type: sql, backend: postgres, dsn: '${DATABASE_URL}'}\n",
        environ={"DATABASE_URL": "postgresql://app:pw@db/app"},
    )
    backend = built(config, "db")
    assert backend._options.dsn == "postgresql://app:pw@db/app"


def test_sqlite_is_built_with_its_path_and_the_acquire_timeout() -> None:
    config = parse_config(
        "services:\n  db: {type: sql, path: /tmp/x.db, connection_pool: {acquire_timeout: 1s}}\n"
    )
    backend = built(config, "db")
    assert isinstance(backend, SqliteBackend)
    assert (backend._options.path, backend._options.acquire_timeout) == ("/tmp/x.db", 1.0)


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
