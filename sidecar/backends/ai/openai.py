"""The `openai` provider: the OpenAI API, or any compatible one, spoken with `httpx2`.

One provider per configured service, reused by every call; with `endpoint` it serves every
OpenAI-compatible API (Azure OpenAI, vLLM, Ollama, Hugging Face TGI and its router,
Together, Groq, ...). Requests go out on the service's http connection's client (its pool,
TLS and connection headers, shared with every service naming it) with this service's
credentials, headers and query (`_http.ProviderHTTP`; why not the `openai` SDK is said
there). Streamed completions are read by `openai_wire.ChunkParser` (~10 µs per chunk);
embeddings, images, transcriptions and the model list are one JSON (or multipart) request
each. Nothing retries here: the router retries and falls back.

Usage:

    provider = OpenAIProvider(endpoint="https://api.openai.com/v1", api_key=key, http=client)
    stream = await provider.open_stream(request, "gpt-4o-mini", UpstreamTimeouts())
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx2

from sidecar.backends.ai._http import ProviderHTTP, own_client, timeout_of
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
from sidecar.backends.ai.errors import stream_interrupted
from sidecar.backends.ai.openai_wire import ChunkParser, chat_body
from sidecar.connections.http.errors import mapped_http_errors
from sidecar.connections.http.sse_stream import SSEStream
from sidecar.connections.http.stream import request_timeout
from sidecar.errors import SidecarError

__all__ = ["DEFAULT_ENDPOINT", "OpenAIProvider"]

_PROVIDER = "openai"
DEFAULT_ENDPOINT: Final = "https://api.openai.com/v1"
_LIST_TIMEOUT: Final = request_timeout(5.0, 5.0)


class OpenAIProvider:
    """Chat, embeddings, images and transcription over the OpenAI API or a compatible one.

    Args:
        endpoint: Base URL including the version path (`https://api.openai.com/v1`); None
            is OpenAI's.
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
        sent = dict(headers or {})
        if api_key:
            sent["Authorization"] = f"Bearer {api_key}"
        self._api = ProviderHTTP(
            http if http is not None else own_client(),
            endpoint or DEFAULT_ENDPOINT,
            sent,
            query or {},
            provider,
        )

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return mapped_http_errors(self.provider, metadata=self._api.metadata, opening=False)

    async def open_stream(
        self, request: ChatRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ChatStream:
        """Start a streamed chat completion (see `ChatProvider.open_stream`)."""
        response = await self._api.open_sse(
            "/chat/completions", chat_body(request, model, store=self._store), timeouts
        )
        return SSEStream(
            response, ChunkParser(), self._errors, self.provider, metadata=self._api.metadata
        )

    async def embed(
        self, inputs: Sequence[str], model: str, dimensions: int | None, timeouts: UpstreamTimeouts
    ) -> EmbedResult:
        """Embed a batch of texts with `/embeddings`."""
        body: dict[str, Any] = {"model": model, "input": list(inputs), "encoding_format": "float"}
        if dimensions:
            body["dimensions"] = dimensions
        data = await self._api.request_json(
            "POST", "/embeddings", body=body, timeouts=timeout_of(timeouts)
        )
        try:
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [item["embedding"] for item in items]
            usage = data.get("usage") or {}
            tokens = int(usage.get("prompt_tokens") or 0)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise stream_interrupted(self.provider, "malformed embeddings answer") from exc
        return EmbedResult(vectors, data.get("model") or model, Usage(tokens, 0))

    async def generate_image(
        self, request: ImageRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ImageResult:
        """Generate images with `/images/generations` (JSON in, JSON out; extra or missing
        fields of compatible servers do not matter)."""
        body: dict[str, Any] = {"model": model, "prompt": request.prompt, "n": request.n}
        for name in ("size", "quality", "style", "response_format", "user"):
            value = getattr(request, name)
            if value:
                body[name] = value
        data = await self._api.request_json(
            "POST", "/images/generations", body=body, timeouts=timeout_of(timeouts)
        )
        try:
            images = [_image(item) for item in data["data"]]
            usage = _usage(data.get("usage"))
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise stream_interrupted(self.provider, "malformed images answer") from exc
        return ImageResult(images, data.get("model") or model, usage)

    async def transcribe(
        self, request: TranscriptionRequest, model: str, timeouts: UpstreamTimeouts
    ) -> TranscriptionResult:
        """Transcribe with `/audio/transcriptions`: a multipart upload of the audio."""
        form: dict[str, Any] = {"model": model, "response_format": "json"}
        if request.language:
            form["language"] = request.language
        if request.prompt:
            form["prompt"] = request.prompt
        if request.temperature is not None:
            form["temperature"] = str(request.temperature)
        data = await self._api.request_json(
            "POST",
            "/audio/transcriptions",
            files={"file": (request.filename, request.audio, request.content_type)},
            data=form,
            timeouts=timeout_of(timeouts),
        )
        try:
            text = str(data["text"])
            usage = _usage(data.get("usage"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise stream_interrupted(self.provider, "malformed transcription answer") from exc
        return TranscriptionResult(text, model, usage)

    def check_model(self, model: str) -> None:
        """Any name will do: it travels only inside the JSON body."""

    async def list_models(self) -> list[str]:
        """The model ids the upstream lists at `/models`.

        Raises:
            SidecarError: The upstream is unreachable or refuses to list.
        """
        data = await self._api.request_json("GET", "/models", timeouts=_LIST_TIMEOUT)
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
            await self._api.request_json("GET", "/models", timeouts=_LIST_TIMEOUT)
        except SidecarError as exc:
            if exc.reason != "MODEL_NOT_FOUND":
                raise

    async def close(self) -> None:
        """Close the client if it is the provider's own (a connection's is closed by its
        owner, after every service on it)."""
        if self._owns_http:
            await self._api.http.aclose()


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
