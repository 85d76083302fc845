"""The `openai` provider: the official SDK for the client, the cheap parser for the stream.

One `AsyncOpenAI` per configured service, reused by every call; with `base_url` it serves
every OpenAI-compatible API (Azure OpenAI, vLLM, Ollama, Hugging Face TGI and its router,
Together, Groq, ...).

The SDK runs on the service's http connection's client (`http_client=`: the pool, TLS and
connection headers are the connection's, shared with every service naming it) and does
what it is good at: auth and default headers, base URL and query, timeouts, and typed
errors for non-2xx answers. Streamed completions skip the SDK's request path (the typed
`create()`'s TypedDict transform alone costs ~0.5 ms per call): they go out on the same
client with the SDK's headers (`_http.open_sse`) and return the unread response;
`openai_wire.ChunkParser` reads the events from it (~10 µs per chunk instead of
the SDK's pydantic chunk objects). The SDK's own retries are off: the router retries and
falls back.

Usage:

    provider = OpenAIProvider(endpoint="https://api.openai.com/v1", api_key=key, http=client)
    stream = await provider.open_stream(request, "gpt-4o-mini", UpstreamTimeouts())
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
import openai

from sidecar.backends.ai._http import call_headers, open_sse, sdk_headers, timeout_of
from sidecar.backends.ai.base import (
    ChatRequest,
    ChatStream,
    EmbedResult,
    GeneratedImage,
    ImageRequest,
    ImageResult,
    TranscriptionRequest,
    TranscriptionResult,
    UpstreamTimeouts,
    Usage,
)
from sidecar.backends.ai.errors import (
    mapped_sdk_errors,
    metadata_of,
    status_mapper,
    stream_interrupted,
)
from sidecar.backends.ai.openai_wire import ChunkParser, chat_body
from sidecar.connections.http.sse_stream import SSEStream
from sidecar.errors import SidecarError

__all__ = ["OpenAIProvider", "mapped_openai_errors"]

_PROVIDER = "openai"


def mapped_openai_errors(provider: str = _PROVIDER) -> contextlib.AbstractContextManager[None]:
    """Re-raise the openai SDK's and httpx2's exceptions as `sidecar.errors` types."""
    return mapped_sdk_errors(openai, provider)


class OpenAIProvider:
    """Chat and embeddings over the OpenAI API or any compatible one.

    Args:
        endpoint: Base URL including the version path (`https://api.openai.com/v1`); None
            uses the SDK's default.
        api_key: Sent as `Authorization: Bearer`; None for servers that need none.
        headers: Extra headers on every request (for example Azure's `api-key`).
        query: Extra query parameters on every request (for example `api-version`).
        store: Ask OpenAI to store completions (and send the requests' metadata with them).
        provider: The name errors and metrics use.
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
        store: bool = False,
        provider: str = _PROVIDER,
        http: httpx2.AsyncClient | None = None,
    ) -> None:
        self.provider = provider
        self._store = store
        self._owns_http = http is None
        self._http = http if http is not None else openai.DefaultAsyncHttpxClient()
        self._client = openai.AsyncOpenAI(
            # A placeholder keeps the SDK from demanding OPENAI_API_KEY for keyless servers.
            api_key=api_key or "no-key",
            base_url=endpoint,
            max_retries=0,
            default_headers=dict(headers or {}),
            default_query=dict(query or {}),
            http_client=self._http,
        )
        self._chat_url = str(self._client.base_url).rstrip("/") + "/chat/completions"
        self._query = dict(query or {})
        self._headers: dict[str, str] | None = None
        self._on_status = status_mapper(provider)
        self._metadata = metadata_of(provider)

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_openai_errors(self.provider)

    async def open_stream(
        self, request: ChatRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ChatStream:
        """Start a streamed chat completion (see `ChatProvider.open_stream`)."""
        if self._headers is None:
            self._headers = sdk_headers(self._client)
        response = await open_sse(
            self._http,
            self._chat_url,
            body=chat_body(request, model, store=self._store),
            headers=self._headers,
            params=self._query,
            timeouts=timeouts,
            provider=self.provider,
            metadata=self._metadata,
            on_status=self._on_status,
        )
        return SSEStream(
            response, ChunkParser(), self._errors, self.provider, metadata=self._metadata
        )

    async def embed(
        self, inputs: Sequence[str], model: str, dimensions: int | None, timeouts: UpstreamTimeouts
    ) -> EmbedResult:
        """Embed a batch of texts with `/embeddings`."""
        body: dict[str, Any] = {"model": model, "input": list(inputs), "encoding_format": "float"}
        if dimensions:
            body["dimensions"] = dimensions
        with self._errors():
            response = await self._client.post(
                "/embeddings",
                cast_to=httpx2.Response,
                body=body,
                options={"timeout": timeout_of(timeouts), "headers": call_headers()},
            )
            data = response.json()
        try:
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [item["embedding"] for item in items]
        except (KeyError, TypeError) as exc:
            raise stream_interrupted(self.provider, "malformed embeddings answer") from exc
        usage = data.get("usage") or {}
        tokens = int(usage.get("prompt_tokens") or 0)
        return EmbedResult(vectors, data.get("model") or model, Usage(tokens, 0))

    async def generate_image(
        self, request: ImageRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ImageResult:
        """Generate images with `/images/generations` (JSON in, JSON out, as the SDK's
        `images.generate` sends it; the raw answer is read so that compatible servers'
        extra or missing fields do not matter)."""
        body: dict[str, Any] = {"model": model, "prompt": request.prompt, "n": request.n}
        for name in ("size", "quality", "style", "response_format", "user"):
            value = getattr(request, name)
            if value:
                body[name] = value
        with self._errors():
            response = await self._client.post(
                "/images/generations",
                cast_to=httpx2.Response,
                body=body,
                options={"timeout": timeout_of(timeouts), "headers": call_headers()},
            )
            data = response.json()
        try:
            images = [_image(item) for item in data["data"]]
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise stream_interrupted(self.provider, "malformed images answer") from exc
        return ImageResult(images, data.get("model") or model, _usage(data.get("usage")))

    async def transcribe(
        self, request: TranscriptionRequest, model: str, timeouts: UpstreamTimeouts
    ) -> TranscriptionResult:
        """Transcribe with `/audio/transcriptions`: the SDK's own multipart upload."""
        params: dict[str, Any] = {}
        if request.language:
            params["language"] = request.language
        if request.prompt:
            params["prompt"] = request.prompt
        if request.temperature is not None:
            params["temperature"] = request.temperature
        with self._errors():
            answer = await self._client.audio.transcriptions.create(
                file=(request.filename, request.audio, request.content_type),
                model=model,
                response_format="json",
                timeout=timeout_of(timeouts),
                extra_headers=call_headers(),
                **params,
            )
        usage = getattr(answer, "usage", None)
        return TranscriptionResult(
            str(getattr(answer, "text", answer)),
            model,
            _usage(usage.model_dump() if usage is not None else None),
        )

    def check_model(self, model: str) -> None:
        """Any name will do: it travels only inside the JSON body."""

    async def list_models(self) -> list[str]:
        """The model ids the upstream lists at `/models`.

        Raises:
            SidecarError: The upstream is unreachable or refuses to list.
        """
        with self._errors():
            response = await self._client.get(
                "/models", cast_to=httpx2.Response, options={"timeout": 5.0}
            )
            data = response.json()
        try:
            return [str(item["id"]) for item in data["data"]]
        except (KeyError, TypeError) as exc:
            raise stream_interrupted(self.provider, "malformed models answer") from exc

    async def ping(self) -> None:
        """GET /models; a 404 still proves the server is there (not every one lists models).

        Raises:
            SidecarError: The server is unreachable, failing, or refuses the credentials.
        """
        try:
            with self._errors():
                await self._client.get("/models", cast_to=httpx2.Response, options={"timeout": 5.0})
        except SidecarError as exc:
            if exc.reason != "MODEL_NOT_FOUND":
                raise

    async def close(self) -> None:
        """Close the client if it is the provider's own (a connection's is closed by its
        owner, after every service on it)."""
        if self._owns_http:
            await self._client.close()


def _image(item: Mapping[str, Any]) -> GeneratedImage:
    encoded = item.get("b64_json")
    return GeneratedImage(
        data=base64.b64decode(encoded, validate=True) if encoded else b"",
        url=str(item.get("url") or ""),
        revised_prompt=str(item.get("revised_prompt") or ""),
    )


def _usage(usage: Mapping[str, Any] | None) -> Usage | None:
    """Token usage of an images or transcription answer (`input_tokens`/`output_tokens`);
    None when the upstream counts none (dall-e, whisper-1's duration-based usage)."""
    if not usage or "input_tokens" not in usage:
        return None
    return Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
