"""The `huggingface` provider: Hugging Face Inference and TGI servers through their native
routes, for models not behind an OpenAI-compatible one (TGI's `/v1` route and the HF router
are OpenAI-compatible: use the `openai` provider for those).

- Text generation: POST `{endpoint}` with `{"inputs", "parameters", "stream": true}`; the
  answer is TGI's event stream (`data:{"token": {...}, "generated_text", "details"}`).
- Embeddings: POST `{endpoint}` with `{"inputs": [...]}` (feature extraction); token-level
  answers are mean-pooled into one vector per input.

`{model}` in the endpoint is replaced by the deployment's model, so one service can serve
several models of the serverless API:
`https://router.huggingface.co/hf-inference/models/{model}`. The model comes from the
caller's target, so it must never change the scheme, host, port or path shape: the config
allows `{model}` only as whole path segments, names must be Hugging Face ids
(`org/name`, see `huggingface_model_problem`), and each segment is percent-encoded.

Chat messages are rendered into one prompt (`System:`/`User:`/`Assistant:` turns) since the
native route takes text; models with their own chat template are better served by TGI's
OpenAI-compatible route.

Usage:

    provider = HuggingFaceProvider(endpoint="http://tgi:8080", api_key=token, http=client)

Requests go out on the service's http connection's client (`http`), with this service's
headers, credentials and query parameters added per request.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx2

from sidecar.backends.ai.base import (
    ChatEnd,
    ChatEvent,
    ChatRequest,
    ChatStream,
    EmbedResult,
    Role,
    UpstreamTimeouts,
    Usage,
)
from sidecar.backends.ai.errors import (
    metadata_of,
    parse_retry_after,
    status_error,
    stream_interrupted,
)
from sidecar.backends.ai.openai_wire import finish_reason
from sidecar.config.services.ai import huggingface_model_problem
from sidecar.connections.http.errors import mapped_http_errors
from sidecar.connections.http.sse_stream import SSEStream
from sidecar.connections.http.stream import open_stream, request_timeout
from sidecar.errors import InvalidArgument, SidecarError

__all__ = ["HuggingFaceProvider", "render_prompt"]

_PROVIDER = "huggingface"
_METADATA = metadata_of(_PROVIDER)
_TURN = {Role.USER: "User", Role.ASSISTANT: "Assistant", Role.TOOL: "Tool"}


def render_prompt(request: ChatRequest) -> str:
    """The conversation as one text prompt ending where the assistant's answer starts."""
    lines = [m.text for m in request.messages if m.role is Role.SYSTEM]
    lines += [f"{_TURN[m.role]}: {m.text}" for m in request.messages if m.role is not Role.SYSTEM]
    return "\n\n".join([*lines, "Assistant:"])


def _parameters(request: ChatRequest) -> dict[str, Any]:
    parameters: dict[str, Any] = {"details": True, "return_full_text": False}
    if request.max_tokens is not None:
        parameters["max_new_tokens"] = request.max_tokens
    if request.temperature:  # TGI rejects 0: greedy decoding is do_sample false instead
        parameters["temperature"] = request.temperature
        parameters["do_sample"] = True
    else:
        parameters["do_sample"] = False
    if request.top_p is not None and 0 < request.top_p < 1:
        parameters["top_p"] = request.top_p
    if request.stop:
        parameters["stop"] = list(request.stop)
    if request.seed is not None:
        parameters["seed"] = request.seed
    return parameters


class _TGIParser:
    """TGI events: one token each; the last one carries `generated_text` and `details`."""

    __slots__ = ("_end", "_prompt_tokens")

    def __init__(self, prompt_tokens: int) -> None:
        self._prompt_tokens = prompt_tokens
        self._end: ChatEnd | None = None

    def feed(self, event: bytes, payload: bytes, batch: list[ChatEvent]) -> bool:
        data = json.loads(payload)
        if "error" in data:
            raise ValueError(f"{data.get('error_type', 'error')}: {data['error']}")
        token = data.get("token") or {}
        if token.get("text") and not token.get("special"):
            batch.append(token["text"])
        if data.get("generated_text") is None:
            return False
        details = data.get("details") or {}
        generated = int(details.get("generated_tokens") or data.get("index") or 0)
        usage = Usage(self._prompt_tokens, generated)
        batch.append(ChatEnd(finish_reason(details.get("finish_reason")), usage))
        return True

    def end_of_stream(self) -> ChatEnd | None:
        return None


def _mapped(opening: bool) -> contextlib.AbstractContextManager[None]:
    return mapped_http_errors(_PROVIDER, metadata=_METADATA, opening=opening)


def _status_error(status: int, body: bytes, headers: Mapping[str, str]) -> SidecarError:
    """TGI's `{"error", "error_type"}` body; a loading model's `estimated_time` becomes the
    Retry-After when the upstream sent none."""
    text = body.decode(errors="replace")
    try:
        error: Any = json.loads(text)
    except ValueError:
        error = {"error": text}
    retry_after = parse_retry_after(headers)
    if isinstance(error, dict):
        if retry_after is None and error.get("estimated_time") is not None:
            retry_after = float(error["estimated_time"])  # the model is still loading
        text = str(error.get("error") or "")
    return status_error(_PROVIDER, status, text, retry_after)


class HuggingFaceProvider:
    """Text generation and feature extraction over Hugging Face's native API.

    Args:
        endpoint: URL of the model (TGI server root, or a serverless URL with `{model}`).
        api_key: Sent as `Authorization: Bearer` (a Hugging Face token); None for none.
        headers: Extra headers on every request.
        query: Extra query parameters on every request.
        http: The http connection's client to run on (not closed here); None makes one of
            the provider's own (closed by `close`).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        http: httpx2.AsyncClient | None = None,
    ) -> None:
        self.provider = _PROVIDER
        self._endpoint = endpoint.rstrip("/")
        self._headers = dict(headers or {})
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._query = dict(query or {})
        self._post_headers = {**self._headers, "content-type": "application/json"}
        self._owns_http = http is None
        self._client = http if http is not None else httpx2.AsyncClient()

    def check_model(self, model: str) -> None:
        """Refuse a name that is not a Hugging Face model id (see the module docstring)."""
        problem = huggingface_model_problem(model)
        if problem is not None:
            raise InvalidArgument(
                f"target: {problem}", reason="INVALID_REQUEST", metadata={"field": "target"}
            )

    def _url(self, model: str) -> str:
        self.check_model(model)  # also here: no URL is ever built from an unchecked name
        path = "/".join(quote(segment, safe="") for segment in model.split("/"))
        return self._endpoint.replace("{model}", path)

    async def _post(
        self, url: str, body: dict[str, Any], timeouts: UpstreamTimeouts
    ) -> httpx2.Response:
        """POST and return the open response; a non-2xx answer becomes a sidecar error."""
        return await open_stream(
            self._client,
            "POST",
            url,
            content=json.dumps(body, separators=(",", ":")).encode(),
            headers=self._post_headers,
            params=self._query,
            timeouts=request_timeout(timeouts.connect, timeouts.read),
            upstream=_PROVIDER,
            metadata=_METADATA,
            on_status=_status_error,
        )

    async def open_stream(
        self, request: ChatRequest, model: str, timeouts: UpstreamTimeouts
    ) -> ChatStream:
        """Start a streamed text generation (see `ChatProvider.open_stream`)."""
        prompt = render_prompt(request)
        body = {"inputs": prompt, "parameters": _parameters(request), "stream": True}
        response = await self._post(self._url(model), body, timeouts)
        parser = _TGIParser(prompt_tokens=max(1, len(prompt) // 4))
        return SSEStream(
            response, parser, lambda: _mapped(opening=False), self.provider, metadata=_METADATA
        )

    async def embed(
        self, inputs: Sequence[str], model: str, dimensions: int | None, timeouts: UpstreamTimeouts
    ) -> EmbedResult:
        """Feature extraction; vectors are truncated to `dimensions` when it is set."""
        response = await self._post(self._url(model), {"inputs": list(inputs)}, timeouts)
        with _mapped(opening=False):
            try:
                data = json.loads(await response.aread())
            finally:
                await response.aclose()
        try:
            vectors = [_pooled(item) for item in data]
        except (TypeError, ValueError) as exc:
            raise stream_interrupted(self.provider, "malformed feature-extraction answer") from exc
        if dimensions:
            vectors = [vector[:dimensions] for vector in vectors]
        tokens = sum(max(1, len(text) // 4) for text in inputs)
        return EmbedResult(vectors, model, Usage(tokens, 0))

    async def ping(self) -> None:
        """GET `{endpoint}/health` (TGI); any answer but 401, 403 or 5xx means reachable."""
        with _mapped(opening=True):
            root = self._endpoint.replace("{model}", "")
            response = await self._client.get(
                root + "/health", headers=self._headers, params=self._query, timeout=5.0
            )
        if response.status_code in (401, 403) or response.status_code >= 500:
            raise status_error(_PROVIDER, response.status_code)

    async def close(self) -> None:
        """Close the client if it is the provider's own (a connection's is closed by its
        owner, after every service on it)."""
        if self._owns_http:
            await self._client.aclose()


def _pooled(item: Any) -> list[float]:
    """One vector for one input: token-level (2-D) answers are mean-pooled."""
    if item and isinstance(item[0], list):
        columns = len(item[0])
        return [sum(row[i] for row in item) / len(item) for i in range(columns)]
    return [float(value) for value in item]
