"""Open a streamed HTTP answer on a connection's client: the hot path of every streaming
user (AI completions today).

It imports `httpx2`: only users of an http connection import it.

One request, built and sent on the `httpx2` client directly (no SDK request pipeline), and
the open response returned once the upstream answered 2xx; a non-2xx answer is read, closed
and mapped to a `sidecar.errors` error (Retry-After kept), a connect failure is UNAVAILABLE
and a timeout DEADLINE_EXCEEDED.

    response = await open_stream(
        connection.client, "POST", url, content=body, headers=headers,
        timeouts=request_timeout(connect=5, read=30), upstream="openai",
    )
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import httpx2

from sidecar.connections.http.errors import (
    StatusMapper,
    connection_error,
    error_message,
    parse_retry_after,
    status_error,
    upstream_timeout,
)

__all__ = ["StatusMapper", "open_stream", "request_timeout"]


def request_timeout(connect: float | None, read: float | None) -> httpx2.Timeout:
    """The timeout of one request: `read` bounds the gap between two reads; writes and the
    wait for a pooled connection get the connect timeout."""
    return httpx2.Timeout(connect=connect, read=read, write=connect, pool=connect)


async def open_stream(
    client: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeouts: httpx2.Timeout,
    upstream: str,
    metadata: Mapping[str, str] | None = None,
    on_status: StatusMapper | None = None,
) -> httpx2.Response:
    """Send one request and return the open response once the upstream answered 2xx.

    Args:
        upstream, metadata: Who answers and what errors carry (see `errors`).
        on_status: Builds the error of a non-2xx answer; default `errors.status_error`.

    Raises:
        SidecarError: A non-2xx status, a connect failure (UNAVAILABLE) or a timeout
            (DEADLINE_EXCEEDED).
    """
    request = client.build_request(
        method, url, content=content, headers=headers, params=params, timeout=timeouts
    )
    try:
        response = await client.send(request, stream=True)
        if response.status_code < 400:
            return response
        try:
            data = await response.aread()
        finally:
            await response.aclose()
    except httpx2.TimeoutException as exc:
        raise upstream_timeout(upstream, type(exc).__name__, metadata=metadata) from exc
    except (httpx2.TransportError, ssl.SSLError) as exc:  # (see errors.mapped_http_errors)
        detail = str(exc)[:200] or type(exc).__name__
        raise connection_error(upstream, detail, metadata=metadata) from exc
    if on_status is not None:
        raise on_status(response.status_code, data, response.headers)
    raise status_error(
        upstream,
        response.status_code,
        error_message(data),
        parse_retry_after(response.headers),
        metadata=metadata,
    )
