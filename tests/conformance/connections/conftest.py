"""Fixtures of the connection conformance suite: the Redis server (`redis_address`), a
local HTTP server (`http_address`), moto (`aws_address`)."""

from collections.abc import Iterator

import pytest
from aws_server import aws_address, moto_server
from http_server import HttpServer
from redis_server import redis_address
from sql_connection_fixtures import (
    owned_tls_postgres,
    postgres_address,
    postgres_tls_address,
    sqlite_address,
)

__all__ = [
    "aws_address",
    "http_address",
    "moto_server",
    "owned_tls_postgres",
    "postgres_address",
    "postgres_tls_address",
    "redis_address",
    "sqlite_address",
]


@pytest.fixture(scope="module")
def http_address() -> Iterator[tuple[str, int]]:
    """A plain HTTP/1.1 server answering GET /health."""
    server = HttpServer().start()
    yield ("127.0.0.1", server.port)
    server.stop()
