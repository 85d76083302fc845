"""The `connections:` section: what loads, and every wrong reference refused at its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import CONNECTION_TYPES, ConfigError, parse_config
from sidecar.connections import build_connections


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    return str(raised.value)


SHARED = """
connections:
  main-redis:
    type: redis
    host: redis.internal
    port: 6380
    connection_pool: {max_connections: 20}
    timeouts: {connect: 2s}
services:
  cache: {type: cache, backend: redis, connection: main-redis, key_prefix: "a:"}
  events: {type: pubsub, backend: redis, connection: main-redis}
"""


def test_services_naming_one_connection_load_with_its_pool_and_timeouts() -> None:
    config = parse_config(SHARED)
    assert config.connection_of("cache") == config.connection_of("events") == "main-redis"
    pool, timeouts = config.connection_policies("main-redis")
    assert (pool.max_connections, timeouts.connect) == (20, 2.0)
    assert (timeouts.read, pool.acquire_timeout) == (30.0, 10.0)  # inherited


def test_inline_settings_make_an_implicit_connection_named_like_the_service() -> None:
    config = parse_config("services:\n  c: {type: cache, backend: redis, port: 6390}\n")
    assert config.connection_of("c") == "c"
    assert config.connections == {}


def test_a_memory_service_is_on_no_connection() -> None:
    assert parse_config("services:\n  c: {type: cache}\n").connection_of("c") is None


def test_an_unknown_connection_is_refused_with_the_configured_names() -> None:
    found = problems(SHARED.replace("connection: main-redis, key", "connection: nowhere, key"))
    assert "services.cache.connection: 'nowhere' is not a configured redis connection" in found
    assert "main-redis" in found


def test_inline_settings_beside_a_connection_are_refused() -> None:
    found = problems(
        SHARED.replace(
            'connection: main-redis, key_prefix: "a:"', "connection: main-redis, port: 1"
        )
    )
    assert "services.cache" in found
    assert "port is set by connection 'main-redis'; remove it here" in found


def test_a_connection_on_a_memory_service_is_refused() -> None:
    found = problems(SHARED + "  mem: {type: cache, backend: memory, connection: main-redis}\n")
    assert "services.mem" in found and "connection is only for backend: redis" in found


def test_an_implicit_connection_may_not_take_a_configured_connection_s_name() -> None:
    found = problems(SHARED + "  main-redis: {type: cache, backend: redis, port: 6390}\n")
    assert "services.main-redis" in found
    assert "name it with connection:" in found


def test_an_unknown_connection_type_is_refused() -> None:
    found = problems("connections:\n  x: {type: nosuch}\n")
    assert "connections.x.type: unknown type 'nosuch' (expected one of: redis, aws" in found
    assert all(kind in found for kind in CONNECTION_TYPES)


def test_a_connection_name_must_be_a_valid_name() -> None:
    assert "invalid service name" in problems("connections:\n  Bad_Name: {type: redis}\n")


def test_a_global_rate_limit_may_name_a_connection() -> None:
    config = parse_config(
        SHARED + "  api: {type: cache, rate_limit: {requests_per_second: 5, burst_size: 5, "
        "store: redis, connection: main-redis}}\n"
    )
    limit = config.policies_for("api").rate_limit
    assert limit is not None and (limit.connection, limit.redis_target) == ("main-redis", None)


def test_a_global_rate_limit_on_an_unknown_connection_is_refused() -> None:
    found = problems(
        SHARED + "  api: {type: cache, rate_limit: {requests_per_second: 5, burst_size: 5, "
        "store: redis, connection: elsewhere}}\n"
    )
    assert "services.api.rate_limit.connection: 'elsewhere' is not a configured redis" in found


def test_a_redis_rate_limit_needs_a_connection_or_a_target() -> None:
    found = problems(
        "services:\n  api: {type: cache, rate_limit: {requests_per_second: 5, burst_size: 5, "
        "store: redis}}\n"
    )
    assert "store: redis needs redis_target" in found and "or connection" in found


def test_tls_is_off_by_default_and_true_is_short_for_enabled() -> None:
    config = parse_config("connections:\n  a: {type: redis}\n  b: {type: redis, tls: true}\n")
    assert (config.connections["a"].tls.enabled, config.connections["b"].tls.enabled) == (
        False,
        True,
    )
    assert config.connections["b"].tls.verify is True


def test_a_tls_section_turns_tls_on_and_names_its_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked at load")
    config = parse_config(f"connections:\n  a: {{type: redis, tls: {{ca_file: {ca}}}}}\n")
    tls = config.connections["a"].tls
    assert (tls.enabled, tls.ca_file, tls.cert_file) == (True, ca, None)


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    found = problems(f"connections:\n  a: {{type: redis, tls: {{cert_file: {cert}}}}}\n")
    assert "connections.a.tls" in found and "cert_file and key_file go together" in found


def test_a_missing_tls_file_is_refused_at_load(tmp_path: Path) -> None:
    found = problems(f"connections:\n  a: {{type: redis, tls: {{ca_file: {tmp_path}/nope.pem}}}}\n")
    assert "connections.a.tls.ca_file" in found


def test_tls_must_be_a_boolean_or_a_section() -> None:
    assert "connections.a.tls: must be true or false" in problems(
        "connections:\n  a: {type: redis, tls: maybe}\n"
    )


def test_a_pool_on_a_service_that_shares_a_connection_is_refused() -> None:
    found = problems(
        SHARED.replace(
            'connection: main-redis, key_prefix: "a:"',
            "connection: main-redis, connection_pool: {max_connections: 5}",
        )
    )
    assert "services.cache.connection_pool: the pool belongs to connection 'main-redis'" in found
    assert "set connection_pool under connections.main-redis" in found


def test_a_service_may_name_the_connection_another_service_s_inline_settings_make() -> None:
    # The pubsub comes first and names the cache's implicit connection: it is opened with the
    # cache's settings all the same, and its backend follows from that connection's type.
    config = parse_config(
        "services:\n"
        "  events: {type: pubsub, connection: primary}\n"
        "  primary: {type: cache, backend: redis, port: 6390}\n"
    )
    assert config.services["events"].backend == "redis"  # type: ignore[union-attr]
    assert config.connection_of("events") == config.connection_of("primary") == "primary"
    connections = build_connections(config)
    entry = dict(connections)["primary"]
    assert entry.implicit and sorted(entry.users) == ["events", "primary"]
    assert entry.connection.type == "redis"
    assert entry.connection.client.connection_pool.connection_kwargs["port"] == 6390  # type: ignore[attr-defined]


def test_a_cloud_account_s_connection_may_be_named_by_other_services() -> None:
    config = parse_config(
        "services:\n"
        "  aws: {type: cloud, region: eu-west-1}\n"
        "  audit: {type: cloud, connection: aws}\n"
    )
    entry = dict(build_connections(config))["aws"]
    assert (entry.connection.type, sorted(entry.users)) == ("aws", ["audit", "aws"])


def test_a_service_s_implicit_connection_of_another_type_is_refused() -> None:
    found = problems(
        "services:\n"
        "  aws: {type: cloud, region: eu-west-1}\n"
        "  c: {type: cache, backend: redis, connection: aws}\n"
    )
    assert "services.c.connection: 'aws' is not a configured redis connection" in found


def test_a_connection_on_a_backend_that_uses_none_is_refused() -> None:
    found = problems(
        "services:\n  aws: {type: cloud, region: eu-west-1}\n"
        "  q: {type: sql, backend: sqlite, connection: aws}\n"
    )
    assert "services.q.connection" in found
