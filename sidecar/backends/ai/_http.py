"""The requests the HTTP providers share, sent on the service's http connection's client.

The providers speak the APIs' JSON and event streams with `httpx2` directly, not through
the `openai` and `anthropic` SDKs: the SDKs' request path costs about a millisecond per call
(options copied twice through pydantic, header merging, an auth-retry wrapper), a whole
time-to-first-token budget, and importing them costs 20 MB (openai) and 50 MB (anthropic) of
resident memory and a third of a second of start-up, for what is here a header or two and a
JSON body. A non-2xx answer maps by status (`errors.status_mapper`), as the SDKs' typed
errors would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import httpx2

import sidecar
from sidecar.backends.ai.base import UpstreamTimeouts
from sidecar.backends.ai.errors import metadata_of, status_mapper, stream_interrupted
from sidecar.connections.http.errors import mapped_http_errors
from sidecar.connections.http.stream import open_stream, request_timeout

__all__ = ["USER_AGENT", "ProviderHTTP", "own_client", "timeout_of"]

USER_AGENT: Final = f"integration-sidecar/{sidecar.__version__}"


def timeout_of(timeouts: UpstreamTimeouts) -> httpx2.Timeout:
    """The httpx2 timeout of one request (writes and pool waits get the connect timeout)."""
    return request_timeout(timeouts.connect, timeouts.read)


def own_client() -> httpx2.AsyncClient:
    """The client of a provider that was given no http connection's (tests, tools)."""
    return httpx2.AsyncClient(follow_redirects=True)


class ProviderHTTP:
    """One provider's requests: its base URL, headers (credentials included) and query
    parameters on `http`, its errors named after `provider`.

    Args:
        base_url: Every path is appended to it (`https://api.openai.com/v1`).
        headers: Sent on every request; `User-Agent` and `Accept` are added.
    """

    __slots__ = (
        "_headers",
        "_json_headers",
        "base_url",
        "http",
        "metadata",
        "on_status",
        "params",
        "provider",
        "stream_headers",
    )

    def __init__(
        self,
        http: httpx2.AsyncClient,
        base_url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        provider: str,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.params = dict(params)
        self.provider = provider
        self.metadata = metadata_of(provider)
        self.on_status = status_mapper(provider)
        base = {"User-Agent": USER_AGENT, **headers}
        self._headers = {**base, "Accept": "application/json"}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self.stream_headers = {
            **base,
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
        }

    async def open_sse(
        self, path: str, body: dict[str, Any], timeouts: UpstreamTimeouts
    ) -> httpx2.Response:
        """POST `body` as JSON and return the open event stream once the upstream answered
        2xx (see `open_stream`), as a GenAI client span when the call is traced."""
        model = str(body.get("model", ""))
        return await open_stream(
            self.http,
            "POST",
            self.base_url + path,
            content=_json(body),
            headers=self.stream_headers,
            params=self.params,
            timeouts=timeout_of(timeouts),
            upstream=self.provider,
            metadata=self.metadata,
            on_status=self.on_status,
            span_name=f"chat {model}",
            span_attributes={
                "gen_ai.system": self.provider,
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
            },
        )

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        timeouts: httpx2.Timeout,
        body: dict[str, Any] | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request (a JSON `body`, or a multipart form of `files` and `data`) and
        return the answer's JSON.

        Raises:
            SidecarError: A non-2xx status, an unreachable or slow upstream, or an answer
                that is not JSON (UNAVAILABLE: the upstream is broken, not the caller).
        """
        multipart = files is not None
        response = await open_stream(
            self.http,
            method,
            self.base_url + path,
            content=_json(body) if body is not None else None,
            files=files,
            data=data,
            headers=self._headers if multipart or body is None else self._json_headers,
            params=self.params,
            timeouts=timeouts,
            upstream=self.provider,
            metadata=self.metadata,
            on_status=self.on_status,
            own_span=False,  # the attempt's GenAI span (`sidecar.ai.unary`) is the client span
        )
        with mapped_http_errors(self.provider, metadata=self.metadata, opening=False):
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise stream_interrupted(self.provider, f"{path} answered no JSON") from exc


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
