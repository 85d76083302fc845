"""The hot path the SDK-based providers share: one streamed POST on the connection's client.

Both SDKs sit on `httpx2`. Each provider builds its SDK client on its http connection's
`httpx2` client (`http_client=`), and sends streamed completions on that client directly
(`sidecar.connections.http.stream.open_stream`), with the headers the SDK computes (auth,
API version, user agent; `default_headers` and `auth_headers` are public) and the SDK's
base URL. The SDK's own request path (`client.post`) costs about a millisecond per call
(options copied twice through pydantic, header merging, an auth-retry wrapper): a whole
time-to-first-token budget. Everything else (embeddings, model listing) still goes
through the SDK; a non-2xx answer maps by status exactly as the SDK's typed errors would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2

from sidecar.backends.ai.base import UpstreamTimeouts
from sidecar.connections.http.errors import StatusMapper
from sidecar.connections.http.stream import REQUEST_ID_HEADER, open_stream, request_timeout
from sidecar.observability.call_context import current_call

__all__ = ["call_headers", "open_sse", "sdk_headers", "timeout_of"]


def timeout_of(timeouts: UpstreamTimeouts) -> httpx2.Timeout:
    """The httpx2 timeout of one request (writes and pool waits get the connect timeout)."""
    return request_timeout(timeouts.connect, timeouts.read)


def call_headers() -> dict[str, str]:
    """Headers naming the RPC for a request sent through the SDK (streams get them in
    `open_stream`): its `x-request-id`, so the upstream's logs name the caller's request."""
    call = current_call()
    return {REQUEST_ID_HEADER: call.request_id} if call is not None else {}


def sdk_headers(client: Any) -> dict[str, str]:
    """The headers the SDK sends on every request, for a streamed answer.

    Call it inside the running loop: the SDK names the async library in one of them.
    """
    headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
    headers.update({k: v for k, v in client.auth_headers.items() if isinstance(v, str)})
    headers["Accept"] = "text/event-stream"
    return headers


async def open_sse(
    http: httpx2.AsyncClient,
    url: str,
    *,
    body: dict[str, Any],
    headers: Mapping[str, str],
    params: Mapping[str, str],
    timeouts: UpstreamTimeouts,
    provider: str,
    metadata: Mapping[str, str],
    on_status: StatusMapper,
) -> httpx2.Response:
    """POST `body` as JSON and return the open response once the upstream answered 2xx.

    Raises:
        SidecarError: A non-2xx status (`on_status`, Retry-After kept), a connect failure
            (UNAVAILABLE) or a timeout (DEADLINE_EXCEEDED), with the provider's metadata.
    """
    model = str(body.get("model", ""))
    return await open_stream(
        http,
        "POST",
        url,
        content=json.dumps(body, separators=(",", ":")).encode(),
        headers=headers,
        params=params,
        timeouts=timeout_of(timeouts),
        upstream=provider,
        metadata=metadata,
        on_status=on_status,
        # The GenAI semantic conventions' client span, when the call is traced.
        span_name=f"chat {model}",
        span_attributes={
            "gen_ai.system": provider,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
        },
    )
