"""Helpers of the api tests: the sidecar serving HttpService on a config, and requests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from generated.integration.v1 import http_pb2, http_pb2_grpc
from sidecar.resilience import SYSTEM_CLOCK, Clock
from sidecar.testing import serve_for_test

FAST_RETRIES = "retry_policy: {max_retries: 3, base_delay: 10ms, max_delay: 5s, jitter: false}"


@contextlib.asynccontextmanager
async def http_service(
    config: str, *, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[http_pb2_grpc.HttpServiceStub]:
    """The sidecar on `config` (YAML), and an HttpService stub on it."""
    async with (
        serve_for_test(config, clock=clock) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield http_pb2_grpc.HttpServiceStub(channel)


NO_RETRIES = "retry_policy: {max_retries: 0}"


def api_config(
    base_url: str, extra: str = "", *, name: str = "up", retries: str = FAST_RETRIES
) -> str:
    """One api service `name` on `base_url`, with fast retries; `extra` is more YAML
    lines of the service (indented by the caller's text, 4 spaces)."""
    return f"""
services:
  {name}:
    type: api
    base_url: {base_url}
    {retries}
{extra}
"""


def request(
    method: str = "GET",
    path: str = "echo",
    *,
    target: str = "",
    headers: dict[str, str] | None = None,
    query: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    json: str | None = None,
) -> http_pb2.HttpServiceCallRequest:
    message = http_pb2.HttpRequest(
        target=target,
        method=method,
        path=path,
        headers=[http_pb2.HttpHeader(name=k, value=v) for k, v in (headers or {}).items()],
        query=[http_pb2.HttpQueryParameter(name=k, value=v) for k, v in (query or [])],
    )
    if body is not None:
        message.body_bytes = body
    if json is not None:
        message.json = json
    return http_pb2.HttpServiceCallRequest(request=message)


def header(response: http_pb2.HttpServiceCallResponse, name: str) -> str | None:
    return next((h.value for h in response.headers if h.name.lower() == name.lower()), None)
