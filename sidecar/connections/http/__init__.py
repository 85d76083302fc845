"""HTTP connections: one configured HTTP(S) API and its one pooled `httpx2` client
(`connection`), the mapping of HTTP failures to `sidecar.errors` (`errors`), opening a
streamed answer (`stream`), and Server-Sent Events (`sse`: the decoder, `sse_stream`: the
batched read loop).

Users: the AI providers today (their SDKs run on the connection's client), the REST,
GraphQL and webhook backends to come. This package's `__init__` and `errors` import no HTTP
library: the error types serve callers that never open a connection (the echo provider);
`connection` and `stream` import `httpx2`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar.config import ConnectionPoolConfig, HttpEndpoint, ServiceBase, TimeoutsConfig

if TYPE_CHECKING:
    from sidecar.connections.http.connection import HttpConnection

__all__ = ["open_connection"]


def open_connection(
    name: str,
    settings: HttpEndpoint | ServiceBase,
    pool: ConnectionPoolConfig,
    timeouts: TimeoutsConfig,
) -> HttpConnection:
    """The http connection of a `connections:` entry, or of a service with no named one
    (its own: a plain client whose requests name absolute URLs, unless the service's
    settings are themselves an `HttpEndpoint`). No I/O."""
    from sidecar.connections.http.connection import HttpConnection

    endpoint = settings if isinstance(settings, HttpEndpoint) else HttpEndpoint()
    return HttpConnection(name, endpoint, pool, timeouts)
