"""Every log line written during an RPC names its request id and trace id, whichever
logger (the sidecar's or a library's) wrote it; lines outside a call carry neither."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from collections.abc import Iterator

import grpc
import pytest
from observability.otlp_receiver import OtlpReceiver

from generated.integration.v1 import cache_pb2, cache_pb2_grpc
from sidecar.observability.call_context import CallInfo, set_current_call
from sidecar.observability.logging import ACCESS_LOGGER, JsonFormatter
from sidecar.testing import serve_for_test


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the root logger writes, as JSON lines (restored afterwards)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_library_line_inside_a_call_names_the_call(lines: io.StringIO) -> None:
    async def in_a_call() -> None:  # each RPC runs in a task of its own, as here
        set_current_call(CallInfo("req-1", "/x.S/M", 0.0, trace_id="ab" * 16))
        logging.getLogger("asyncpg.pool").warning("connection lost")

    await asyncio.create_task(in_a_call())
    logging.getLogger("asyncpg.pool").warning("outside any call")
    inside, outside = entries(lines)
    assert (inside["request_id"], inside["trace_id"]) == ("req-1", "ab" * 16)
    assert "request_id" not in outside and "trace_id" not in outside


@pytest.mark.parametrize("traced", [False, True], ids=["tracing-off", "tracing-on"])
async def test_the_access_line_carries_the_callers_trace_id(
    lines: io.StringIO, traced: bool
) -> None:
    receiver = OtlpReceiver()
    endpoint = receiver.endpoint
    tracing = f"integration:\n  tracing: {{otlp: {{endpoint: '{endpoint}'}}}}\n" if traced else ""
    trace_id = secrets.token_hex(16)
    header = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    async with (
        receiver,
        serve_for_test("server: {access_log: true}\n" + tracing) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        await cache_pb2_grpc.CacheServiceStub(channel).Get(
            cache_pb2.GetRequest(key="k"),
            metadata=(("traceparent", header), ("x-request-id", "my-call")),
        )
        access = [e for e in entries(lines) if e["logger"] == ACCESS_LOGGER]
    (line,) = access
    assert (line["request_id"], line["trace_id"]) == ("my-call", trace_id)
