"""`HttpConnection`: one configured HTTP(S) API and the one `httpx2.AsyncClient` that talks
to it, shared by every service naming the connection (the AI providers hand it to their
SDKs as `http_client`).

The client carries what the `connections:` section says: the base URL (relative request
paths go under it), default headers, TLS (the trusted CAs, a client certificate for mutual
TLS, `verify`, and `server_name`, sent as SNI and checked in the certificate through
httpx's `sni_hostname` request extension), HTTP/2 when asked for, the pool's size and idle
time, and connect/read timeouts as defaults (a request's own timeout wins). HTTP/1.1
requests to the upstream itself go out on aiohttp's pool (`transport.AiohttpTransport`: a
relayed chunk costs about a third less CPU); HTTP/2 and the environment's proxies stay on
httpx2's own transport.

Usage:

    connection = HttpConnection("gateway", endpoint, pool, timeouts)
    await connection.ping()                      # GET health_path, if one is configured
    response = await connection.client.get("/v1/models")
    await connection.close()
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx2
from httpx2._utils import get_environment_proxies

from sidecar.config import ConnectionPoolConfig, HttpEndpoint, TimeoutsConfig
from sidecar.connections._tls import client_ssl_context
from sidecar.connections.http.errors import (
    error_message,
    mapped_http_errors,
    parse_retry_after,
    status_error,
)
from sidecar.connections.http.transport import AiohttpTransport
from sidecar.errors import Unavailable

__all__ = ["MAX_KEEPALIVE", "HttpConnection", "create_client"]

MAX_KEEPALIVE = 100
"""Idle connections kept open at most (fewer when the pool is smaller)."""


def create_client(
    endpoint: HttpEndpoint, pool: ConnectionPoolConfig, timeouts: TimeoutsConfig
) -> httpx2.AsyncClient:
    """The pooled client of one endpoint's settings (no I/O)."""
    context = client_ssl_context(endpoint.tls)
    limits = httpx2.Limits(
        max_connections=pool.max_connections,
        max_keepalive_connections=min(pool.max_connections, MAX_KEEPALIVE),
        keepalive_expiry=pool.idle_timeout,
    )
    timeout = httpx2.Timeout(
        connect=timeouts.connect,
        read=timeouts.read,
        write=timeouts.read,
        pool=pool.acquire_timeout,
    )
    hooks: dict[str, list[Callable[..., Any]]] = {}
    server_name = endpoint.tls.server_name if endpoint.tls.enabled else None
    if server_name is not None:
        hooks["request"] = [_sni(server_name)]
    verify: ssl.SSLContext | bool = context if context is not None else True
    transport: httpx2.AsyncBaseTransport | None = None
    mounts: dict[str, httpx2.AsyncBaseTransport | None] = {}
    if not endpoint.http2:
        transport = AiohttpTransport(context, limits)
        # A client given its transport ignores the environment's proxies: they are mounted
        # here on httpx2's transports, as the client would do itself (NO_PROXY: None).
        mounts = {
            pattern: None
            if url is None
            else httpx2.AsyncHTTPTransport(verify=verify, limits=limits, proxy=httpx2.Proxy(url))
            for pattern, url in get_environment_proxies().items()
        }
    return httpx2.AsyncClient(
        base_url=endpoint.base_url or "",
        headers=dict(endpoint.headers),
        verify=verify,
        http2=endpoint.http2,
        limits=limits,
        timeout=timeout,
        follow_redirects=endpoint.follow_redirects,
        event_hooks=hooks,
        transport=transport,
        mounts=mounts,
    )


def _sni(server_name: str) -> Callable[[httpx2.Request], Awaitable[None]]:
    """A request hook naming `server_name` as the TLS server name (SNI and certificate
    check) of every request, whatever host the URL names."""

    async def hook(request: httpx2.Request) -> None:
        request.extensions["sni_hostname"] = server_name

    return hook


class HttpConnection:
    """The shared client of one HTTP(S) API.

    Args:
        name: The connection's name (errors carry it as `target`).
        endpoint: Its settings: a `connections:` entry, or a service's own (inline) ones.
        pool, timeouts: The resolved pool and timeouts of the connection.
    """

    type = "http"

    def __init__(
        self,
        name: str,
        endpoint: HttpEndpoint,
        pool: ConnectionPoolConfig,
        timeouts: TimeoutsConfig,
    ) -> None:
        self.name = name
        self.base_url = endpoint.base_url
        """The configured base URL (None on a service's own connection: its requests name
        absolute URLs)."""
        self.health_path = endpoint.health_path
        self.probed = endpoint.health_path is not None
        """Health checks GET `health_path`; without one the health is unknown."""
        self.timeouts = timeouts
        self.client = create_client(endpoint, pool, timeouts)
        self._metadata: Mapping[str, str] = {"target": name}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def pool_usage(self) -> tuple[int, int] | None:
        """(connections in use, idle ones) of the client's pool, for metrics; None when the
        transport is neither aiohttp's nor httpcore2's pool (a test's mock transport)."""
        transport = getattr(self.client, "_transport", None)
        if isinstance(transport, AiohttpTransport):
            return transport.pool_usage()
        pool = getattr(transport, "_pool", None)
        connections = getattr(pool, "connections", None)
        if connections is None:
            return None
        idle = sum(1 for connection in connections if connection.is_idle())
        return len(connections) - idle, idle

    async def ping(self) -> None:
        """GET `health_path` (nothing without one); any answer below 400 is healthy.

        Raises:
            Unavailable, DeadlineExceeded, ...: the mapped failure or status, with `target`
                the connection's name.
        """
        if self._closed:
            raise Unavailable(
                f"connection {self.name} is closed",
                reason="UPSTREAM_UNAVAILABLE",
                metadata=dict(self._metadata),
            )
        if self.health_path is None:
            return
        with mapped_http_errors(self.name, metadata=self._metadata):
            response = await self.client.get(self.health_path.lstrip("/"))
        if response.status_code >= 400:
            raise status_error(
                self.name,
                response.status_code,
                error_message(response.content),
                parse_retry_after(response.headers),
                metadata=self._metadata,
            )

    async def close(self) -> None:
        """Close the client and its pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.client.aclose()
