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
from contextlib import nullcontext
from typing import Any

import httpx2

from sidecar.connections.http.errors import (
    StatusMapper,
    connection_error,
    error_message,
    parse_retry_after,
    status_error,
    upstream_timeout,
)
from sidecar.observability.call_context import current_call
from sidecar.observability.tracing import (
    TRACEPARENT_HEADER,
    client_span,
    recorded_traceparent,
    recording_span,
)

__all__ = ["REQUEST_ID_HEADER", "StatusMapper", "open_stream", "request_timeout"]

REQUEST_ID_HEADER = "x-request-id"


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
    files: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeouts: httpx2.Timeout,
    upstream: str,
    metadata: Mapping[str, str] | None = None,
    on_status: StatusMapper | None = None,
    span_name: str | None = None,
    span_attributes: Mapping[str, Any] | None = None,
    own_span: bool = True,
) -> httpx2.Response:
    """Send one request and return the open response once the upstream answered 2xx.

    When the call is traced, the request is a client span (`span_name`, default the
    method, with `span_attributes` and the http.* ones) from sending to the answer's
    headers, and carries that span's `traceparent`. Inside an RPC the request carries its
    `x-request-id` (the caller's, or the one the sidecar made up) unless `headers` set one,
    so the upstream's logs name the same request on every attempt.

    Args:
        content: The body; or `files` and `data`, a multipart form (httpx2's arguments).
        upstream, metadata: Who answers and what errors carry (see `errors`).
        on_status: Builds the error of a non-2xx answer; default `errors.status_error`.
        own_span: False when the caller made the attempt's client span already (an AI
            embedding's GenAI span): the request's http.* attributes go on that one.

    Raises:
        SidecarError: A non-2xx status, a connect failure (UNAVAILABLE) or a timeout
            (DEADLINE_EXCEEDED).
    """
    request = client.build_request(
        method,
        url,
        content=content,
        files=files,
        data=data,
        headers=headers,
        params=params,
        timeout=timeouts,
    )
    call = current_call()
    if call is not None and REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = call.request_id
    spans = (
        client_span(span_name or method, span_attributes or {})
        if own_span
        else nullcontext(recording_span())
    )
    with spans as span:
        if span is not None:  # traced: built only then
            sent = request.url
            span.set_attributes(
                {
                    "http.request.method": method,
                    "server.address": sent.host,
                    "server.port": sent.port or (443 if sent.scheme == "https" else 80),
                    # No query or userinfo: either may hold a credential.
                    "url.full": str(sent.copy_with(query=None, userinfo=b"")),
                }
            )
            request.headers[TRACEPARENT_HEADER] = recorded_traceparent() or ""
        response = await _send(client, request, upstream, metadata, on_status)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
        return response


async def _send(
    client: httpx2.AsyncClient,
    request: httpx2.Request,
    upstream: str,
    metadata: Mapping[str, str] | None,
    on_status: StatusMapper | None,
) -> httpx2.Response:
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
