"""The http connection beyond the conformance suite: what its client carries (base URL,
headers, pool, HTTP/2), its health ping's mapping, and a connection with no health path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from http_server import HttpServer
from redis_server import free_port

from sidecar.config import parse_config
from sidecar.connections import Connections, build_connections
from sidecar.connections.http.connection import HttpConnection
from sidecar.errors import NotFound, ResourceExhausted, Unavailable


@pytest.fixture(scope="module")
def server() -> Iterator[HttpServer]:
    running = HttpServer().start()
    yield running
    running.stop()


@pytest.fixture
async def open_http() -> AsyncIterator[Callable[[str], HttpConnection]]:
    """`open_http(section)`: the http connection `up` of a `connections:` flow mapping."""
    made: list[Connections] = []

    def open_http(section: str) -> HttpConnection:
        connections = build_connections(parse_config(f"connections:\n  up: {section}\n"))
        made.append(connections)
        connection = connections.get("up")
        assert isinstance(connection, HttpConnection)
        return connection

    yield open_http
    for connections in made:
        await connections.close()


async def test_health_path_is_under_the_base_url_path(
    server: HttpServer, open_http: Callable[[str], HttpConnection]
) -> None:
    base = f"http://127.0.0.1:{server.port}/api/v2"
    connection = open_http(f"{{type: http, base_url: '{base}', health_path: /health}}")
    assert connection.probed
    await connection.ping()
    assert server.paths[-1] == "/api/v2/health"


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [(503, Unavailable, 7.0), (429, ResourceExhausted, 7.0), (404, NotFound, None)],
)
async def test_an_unhealthy_answer_maps_by_status_with_retry_after(
    server: HttpServer,
    open_http: Callable[[str], HttpConnection],
    status: int,
    error: type[Exception],
    retry_after: float | None,
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    connection = open_http(f"{{type: http, base_url: '{base}', health_path: /status/{status}}}")
    with pytest.raises(error) as raised:
        await connection.ping()
    assert raised.value.metadata == {"target": "up", "upstream_status": str(status)}  # type: ignore[attr-defined]
    assert raised.value.retry_after == retry_after  # type: ignore[attr-defined]


async def test_without_a_health_path_it_is_not_probed_and_ping_does_no_io(
    open_http: Callable[[str], HttpConnection],
) -> None:
    connection = open_http(f"{{type: http, base_url: 'http://127.0.0.1:{free_port()}'}}")
    assert not connection.probed
    await connection.ping()  # nothing listens there: no request was made
    await connection.close()
    with pytest.raises(Unavailable):
        await connection.ping()


async def test_the_client_sends_the_connection_headers_under_its_base_url(
    server: HttpServer, open_http: Callable[[str], HttpConnection]
) -> None:
    connection = open_http(
        f"{{type: http, base_url: 'http://127.0.0.1:{server.port}', "
        "headers: {x-team: search, user-agent: sidecar-test}}"
    )
    response = await connection.client.get("/headers")
    sent = json.loads(response.content)
    assert (sent["x-team"], sent["user-agent"]) == ("search", "sidecar-test")


def test_the_pool_defaults_to_the_ai_paths_limits_and_takes_the_connections_override() -> None:
    connections = build_connections(
        parse_config(
            "connections:\n"
            "  wide: {type: http, base_url: 'http://a.internal'}\n"
            "  narrow: {type: http, base_url: 'http://b.internal', "
            "connection_pool: {max_connections: 5, idle_timeout: 30s}, "
            "timeouts: {connect: 2s, read: 9s}}\n"
        )
    )
    wide, narrow = connections.get("wide"), connections.get("narrow")
    assert isinstance(wide, HttpConnection) and isinstance(narrow, HttpConnection)
    limits = wide.client._transport.limits  # type: ignore[attr-defined]
    assert (limits.max_connections, limits.keepalive_expiry) == (1000, 300)
    limits = narrow.client._transport.limits  # type: ignore[attr-defined]
    assert (limits.max_connections, limits.keepalive_expiry) == (5, 30)
    assert (narrow.client.timeout.connect, narrow.client.timeout.read) == (2, 9)


def test_an_integration_wide_pool_size_applies_to_http_connections_too() -> None:
    config = parse_config(
        "integration: {connection_pools: {default: {max_connections: 50}}}\n"
        "connections:\n  api: {type: http, base_url: 'http://a.internal'}\n"
    )
    assert config.connection_policies("api")[0].max_connections == 50


async def test_http2_is_an_option_and_falls_back_to_http11_where_not_offered(
    server: HttpServer, open_http: Callable[[str], HttpConnection]
) -> None:
    connection = open_http(
        f"{{type: http, base_url: 'http://127.0.0.1:{server.port}', http2: true, "
        "health_path: /health}"
    )
    await connection.ping()
    response = await connection.client.get("/health")
    assert response.http_version == "HTTP/1.1"  # plain http: HTTP/2 only by ALPN over TLS


async def test_a_proxy_from_the_environment_carries_the_requests(
    server: HttpServer, open_http: Callable[[str], HttpConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured as httpx2 honours it (the test server stands in for the proxy:
    it is sent the absolute URL), and NO_PROXY hosts are reached directly."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("NO_PROXY", "direct.internal")
    proxied = open_http("{type: http, base_url: 'http://upstream.internal', health_path: /health}")
    await proxied.ping()
    assert server.paths[-1] == "http://upstream.internal/health"

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = open_http(
        f"{{type: http, base_url: 'http://127.0.0.1:{server.port}', health_path: /health}}"
    )
    await direct.ping()
    assert server.paths[-1] == "/health"
