"""Helpers for AI tests: config snippets, a sidecar with an AIService stub, stream readers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from generated.integration.v1 import ai_pb2, ai_pb2_grpc
from sidecar.resilience import SYSTEM_CLOCK, Clock
from sidecar.server import RunningServer
from sidecar.testing import FakeClock, serve_for_test

API_KEY = "test-key"


def model(
    name: str,
    url: str,
    *,
    provider: str = "openai",
    path: str = "/v1",
    retry: str = "{max_retries: 0}",
    extra: str = "",
) -> str:
    """An `ai_model` service pointing at a fake (no retries, so tests count attempts)."""
    lines = [
        f"  {name}:",
        "    type: ai_model",
        f"    provider: {provider}",
        f"    endpoint: {url}{path}",
        f"    auth: {{type: bearer, token: {API_KEY}}}",
        "    model: fake-model",
        f"    retry_policy: {retry}",
    ]
    lines += [f"    {line}" for line in extra.strip().splitlines()]
    return "\n".join(lines) + "\n"


def config(*services: str) -> str:
    """A whole config: quiet server, the given services."""
    return "server:\n  access_log: false\nservices:\n" + "".join(services)


def user(text: str) -> list[ai_pb2.ChatMessage]:
    """One user message."""
    return [ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content=text)]


@dataclass
class AISidecar:
    running: RunningServer
    stub: ai_pb2_grpc.AIServiceStub
    channel: grpc.aio.Channel


@asynccontextmanager
async def ai_sidecar(
    yaml_text: str, *, clock: Clock = SYSTEM_CLOCK, **options: Any
) -> AsyncIterator[AISidecar]:
    """The real server with this config, and an AIService stub connected to it."""
    async with (
        serve_for_test(yaml_text, clock=clock, **options) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield AISidecar(running, ai_pb2_grpc.AIServiceStub(channel), channel)


async def read_stream(
    call: Any,
) -> tuple[list[ai_pb2.StreamCompleteResponse], grpc.aio.AioRpcError | None]:
    """Every message of a stream, and the error it ended with (None when OK)."""
    messages: list[ai_pb2.StreamCompleteResponse] = []
    try:
        async for message in call:
            messages.append(message)
    except grpc.aio.AioRpcError as error:
        return messages, error
    return messages, None


async def sleepers(clock: FakeClock, count: int = 1, within: float = 5.0) -> None:
    """Wait (in real time: the call does real I/O first) until `count` tasks sleep on `clock`."""
    deadline = time.monotonic() + within
    while clock.sleepers < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} sleepers, found {clock.sleepers}")
        await asyncio.sleep(0.005)


def text_of(messages: Sequence[ai_pb2.StreamCompleteResponse]) -> str:
    """The answer text of a stream."""
    return "".join(message.content for message in messages)


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """The data points of every metric collected so far, by metric name."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


async def token_usage(
    reader: InMemoryMetricReader, deployment: str, within: float = 5.0
) -> dict[str, int]:
    """The recorded `gen_ai.client.token.usage` of `deployment` by token type, once there is
    one (a cancelled call is settled after the caller has gone, so this waits for it)."""
    deadline = time.monotonic() + within
    while True:
        points = metric_points(reader).get("gen_ai.client.token.usage", [])
        usage = {
            p.attributes["gen_ai.token.type"]: int(p.sum)
            for p in points
            if p.attributes["deployment"] == deployment
        }
        if usage or time.monotonic() > deadline:
            return usage
        await asyncio.sleep(0.005)
