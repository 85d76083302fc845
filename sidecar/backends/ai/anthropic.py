"""The `anthropic` provider: the Anthropic Messages API, spoken with `httpx2`.

As with the `openai` provider, requests go out on the service's http connection's client
with this service's credentials (`x-api-key`), `anthropic-version` and headers
(`_http.ProviderHTTP`); `anthropic_wire.EventParser` reads the streamed events.

The Messages API has no embeddings: `embed` answers UNIMPLEMENTED.

Usage:

    provider = AnthropicProvider(endpoint="https://api.anthropic.com", api_key=key, http=client)
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Final

import httpx2

from sidecar.backends.ai._http import ProviderHTTP, own_client
from sidecar.backends.ai.anthropic_wire import EventParser, messages_body
from sidecar.backends.ai.base import ChatRequest, ChatStream, EmbedResult, UpstreamTimeouts
from sidecar.connections.http.errors import mapped_http_errors
from sidecar.connections.http.sse_stream import SSEStream
from sidecar.connections.http.stream import request_timeout
from sidecar.errors import SidecarError, Unimplemented

__all__ = ["API_VERSION", "DEFAULT_ENDPOINT", "AnthropicProvider"]

_PROVIDER = "anthropic"
DEFAULT_ENDPOINT: Final = "https://api.anthropic.com"
API_VERSION: Final = "2023-06-01"
"""The `anthropic-version` sent unless the service's headers set another."""
_PING_TIMEOUT: Final = request_timeout(5.0, 5.0)


class AnthropicProvider:
    """Chat over the Anthropic Messages API.

    Args:
        endpoint: Base URL without the version path (`https://api.anthropic.com`); None is
            Anthropic's.
        api_key: Sent as `x-api-key`.
        headers: Extra headers on every request (for example `anthropic-beta`).
        query: Extra query parameters on every request.
        http: The http connection's client to run on (not closed here); None makes one of
            the provider's own (closed by `close`).
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        http: httpx2.AsyncClient | None = None,
    ) -> None:
        self.provider = _PROVIDER
        self._owns_http = http is None
        sent = {"anthropic-version": API_VERSION, **(headers or {})}
        if api_key:
            sent["x-api-key"] = api_key
        self._api = ProviderHTTP(
            http if http is not None else own_client(),
            endpoint or DEFAULT_ENDPOINT,
            sent,
            query or {},
            self.provider,
        )

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_http_errors(self.provider, metadata=self._api.metadata, opening=False)

    async def open_stream(
        self, request: ChatRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ChatStream:
        """Start a streamed message (see `ChatProvider.open_stream`)."""
        response = await self._api.open_sse("/v1/messages", messages_body(request, model), timeouts)
        return SSEStream(
            response, EventParser(), self._errors, self.provider, metadata=self._api.metadata
        )

    async def embed(
        self, inputs: Sequence[str], model: str, dimensions: int | None, timeouts: UpstreamTimeouts
    ) -> EmbedResult:
        """Anthropic has no embeddings API.

        Raises:
            Unimplemented: Always (UNSUPPORTED_OPERATION).
        """
        raise Unimplemented(
            "the anthropic provider has no embeddings; configure an embedding model elsewhere",
            reason="UNSUPPORTED_OPERATION",
            metadata={"provider": self.provider},
        )

    def check_model(self, model: str) -> None:
        """Any name will do: it travels only inside the JSON body."""

    async def ping(self) -> None:
        """GET /v1/models; a 404 still proves the server is there."""
        try:
            await self._api.request_json("GET", "/v1/models", timeouts=_PING_TIMEOUT)
        except SidecarError as exc:
            if exc.reason != "MODEL_NOT_FOUND":
                raise

    async def close(self) -> None:
        """Close the client if it is the provider's own (a connection's is closed by its
        owner, after every service on it)."""
        if self._owns_http:
            await self._api.http.aclose()
