"""The `anthropic` provider: the official SDK for the client, the cheap parser for the stream.

As with the `openai` provider, the SDK runs on the http connection's client and supplies
auth headers, `anthropic-version`, base URL, timeouts and typed errors; streamed messages go
out on that client directly (`_http.open_sse`) and `anthropic_wire.EventParser` reads the
events.
The Messages API has no embeddings: `embed` answers UNIMPLEMENTED.

Usage:

    provider = AnthropicProvider(endpoint="https://api.anthropic.com", api_key=key, http=client)
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import anthropic
import httpx2

from sidecar.backends.ai._http import open_sse, sdk_headers
from sidecar.backends.ai.anthropic_wire import EventParser, messages_body
from sidecar.backends.ai.base import ChatRequest, ChatStream, EmbedResult, UpstreamTimeouts
from sidecar.backends.ai.errors import mapped_sdk_errors, metadata_of, status_mapper
from sidecar.connections.http.sse_stream import SSEStream
from sidecar.errors import Unimplemented

__all__ = ["AnthropicProvider", "mapped_anthropic_errors"]

_PROVIDER = "anthropic"


def mapped_anthropic_errors(provider: str = _PROVIDER) -> contextlib.AbstractContextManager[None]:
    """Re-raise the anthropic SDK's and httpx2's exceptions as `sidecar.errors` types."""
    return mapped_sdk_errors(anthropic, provider)


class AnthropicProvider:
    """Chat over the Anthropic Messages API.

    Args:
        endpoint: Base URL without the version path (`https://api.anthropic.com`); None uses
            the SDK's default.
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
        self._http = http if http is not None else anthropic.DefaultAsyncHttpxClient()
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key or "no-key",
            base_url=endpoint,
            max_retries=0,
            default_headers=dict(headers or {}),
            default_query=dict(query or {}),
            http_client=self._http,
        )
        self._messages_url = str(self._client.base_url).rstrip("/") + "/v1/messages"
        self._query = dict(query or {})
        self._headers: dict[str, str] | None = None
        self._on_status = status_mapper(self.provider)
        self._metadata = metadata_of(self.provider)

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_anthropic_errors(self.provider)

    async def open_stream(
        self, request: ChatRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ChatStream:
        """Start a streamed message (see `ChatProvider.open_stream`)."""
        if self._headers is None:
            self._headers = sdk_headers(self._client)
        response = await open_sse(
            self._http,
            self._messages_url,
            body=messages_body(request, model),
            headers=self._headers,
            params=self._query,
            timeouts=timeouts,
            provider=self.provider,
            metadata=self._metadata,
            on_status=self._on_status,
        )
        return SSEStream(
            response, EventParser(), self._errors, self.provider, metadata=self._metadata
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
            with self._errors():
                await self._client.get(
                    "/v1/models", cast_to=httpx2.Response, options={"timeout": 5.0}
                )
        except Exception as exc:
            if getattr(exc, "reason", "") != "MODEL_NOT_FOUND":
                raise

    async def close(self) -> None:
        """Close the client if it is the provider's own (a connection's is closed by its
        owner, after every service on it)."""
        if self._owns_http:
            await self._client.close()
