"""The hot path the SDK-based providers share: one streaming POST on the SDK's own client.

Both SDKs sit on `httpx2`. Each provider builds its SDK client around an `httpx2` client it
also keeps, and sends streamed completions on that client directly, with the headers the
SDK computes (auth, API version, user agent; `default_headers` and `auth_headers` are
public) and the SDK's base URL. The SDK's own request path (`client.post`) costs about a
millisecond per call (options copied twice through pydantic, header merging, an
auth-retry wrapper): a whole time-to-first-token budget. Everything else (embeddings,
model listing) still goes through the SDK; a non-2xx answer maps by status exactly as the
SDK's typed errors would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2

from sidecar.backends.ai.base import UpstreamTimeouts
from sidecar.backends.ai.errors import (
    connection_error,
    parse_retry_after,
    status_error,
    upstream_timeout,
)

__all__ = ["LIMITS", "error_message", "open_sse", "sdk_headers", "timeout_of"]

# Concurrency is bounded by each service's bulkhead; the pool only has to never be the limit.
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=60)


def timeout_of(timeouts: UpstreamTimeouts) -> httpx2.Timeout:
    """The httpx2 timeout of one request (writes and pool waits get the connect timeout)."""
    return httpx2.Timeout(
        connect=timeouts.connect, read=timeouts.read, write=timeouts.connect, pool=timeouts.connect
    )


def sdk_headers(client: Any) -> dict[str, str]:
    """The headers the SDK sends on every request, for a streamed answer.

    Call it inside the running loop: the SDK names the async library in one of them.
    """
    headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
    headers.update({k: v for k, v in client.auth_headers.items() if isinstance(v, str)})
    headers["Accept"] = "text/event-stream"
    return headers


def error_message(data: bytes) -> str:
    """The human part of an error body: OpenAI's `{"error": {"message"}}`, Anthropic's
    `{"type": "error", "error": {"message"}}`, TGI's `{"error": "..."}`, or the raw text."""
    try:
        body: Any = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")
    while isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if isinstance(body, Mapping):
        return str(body.get("message") or body.get("error") or "")
    return str(body)


async def open_sse(
    http: httpx2.AsyncClient,
    url: str,
    *,
    body: dict[str, Any],
    headers: Mapping[str, str],
    params: Mapping[str, str],
    timeouts: UpstreamTimeouts,
    provider: str,
) -> httpx2.Response:
    """POST `body` and return the open response once the upstream answered 2xx.

    Raises:
        SidecarError: A non-2xx status (mapped by `errors.status_error`, Retry-After kept),
            a connect failure (UNAVAILABLE) or a timeout (DEADLINE_EXCEEDED).
    """
    content = json.dumps(body, separators=(",", ":")).encode()
    request = http.build_request(
        "POST", url, content=content, headers=headers, params=params, timeout=timeout_of(timeouts)
    )
    try:
        response = await http.send(request, stream=True)
        if response.status_code < 400:
            return response
        try:
            data = await response.aread()
        finally:
            await response.aclose()
    except httpx2.TimeoutException as exc:
        raise upstream_timeout(provider, type(exc).__name__) from exc
    except httpx2.TransportError as exc:
        raise connection_error(provider, str(exc)[:200] or type(exc).__name__) from exc
    raise status_error(
        provider, response.status_code, error_message(data), parse_retry_after(response.headers)
    )
