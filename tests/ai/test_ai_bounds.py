"""Every size an AIService caller controls has a documented bound (`sidecar.ai.limits`):
one over it is INVALID_ARGUMENT naming the field, and nothing is computed for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from ai.helpers import AISidecar, ai_sidecar, user
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import error_info

from generated.integration.v1 import ai_pb2
from sidecar.ai import limits


@pytest.fixture
async def ai() -> AsyncIterator[AISidecar]:
    async with ai_sidecar("server:\n  access_log: false\n") as sidecar:  # embedded echo
        yield sidecar


def _nested(depth: int) -> struct_pb2.Struct:
    """A JSON object `depth` levels deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def chat(**fields: Any) -> ai_pb2.CompleteRequest:
    fields.setdefault("messages", user("hello there"))
    return ai_pb2.CompleteRequest(**fields)


def message(**fields: Any) -> ai_pb2.CompleteRequest:
    return chat(messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, **fields)])


def tool_message(count: int = 1, **call: Any) -> ai_pb2.CompleteRequest:
    calls = [ai_pb2.ToolCall(**call)] * count
    return chat(messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_ASSISTANT, tool_calls=calls)])


LONG_NAME = "n" * (limits.MAX_NAME + 1)
OVER: list[tuple[str, Callable[[], Any]]] = [
    ("target", lambda: chat(target="t" * (limits.MAX_TARGET + 1))),
    ("messages", lambda: chat(messages=user("x") * (limits.MAX_MESSAGES + 1))),
    (
        "messages[0].parts",
        lambda: message(parts=[ai_pb2.ContentPart(text="x")] * (limits.MAX_PARTS + 1)),
    ),
    ("messages[0].tool_calls", lambda: tool_message(count=limits.MAX_TOOL_CALLS + 1, name="f")),
    ("messages[0].name", lambda: message(content="x", name=LONG_NAME)),
    ("messages[0].tool_calls[0].id", lambda: tool_message(id=LONG_NAME, name="f")),
    ("messages[0].tool_calls[0].name", lambda: tool_message(name=LONG_NAME)),
    (
        "messages[0].parts[0].image_url.detail",
        lambda: message(
            parts=[
                ai_pb2.ContentPart(image_url=ai_pb2.ImageUrl(url="https://x/i.png", detail="4k"))
            ]
        ),
    ),
    ("tools", lambda: chat(tools=[ai_pb2.Tool(name="f")] * (limits.MAX_TOOLS + 1))),
    ("tools[0].name", lambda: chat(tools=[ai_pb2.Tool(name=LONG_NAME)])),
    (
        "tools[0].parameters",
        lambda: chat(tools=[ai_pb2.Tool(name="f", parameters=_nested(limits.MAX_JSON_DEPTH + 1))]),
    ),
    (
        "response_format.json_schema",
        lambda: chat(
            response_format=ai_pb2.ResponseFormat(
                type=ai_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=_nested(limits.MAX_JSON_DEPTH + 1),
            )
        ),
    ),
    (
        "response_format.schema_name",
        lambda: chat(
            response_format=ai_pb2.ResponseFormat(
                type=ai_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT, schema_name=LONG_NAME
            )
        ),
    ),
    (
        "tool_choice.function_name",
        lambda: chat(
            tool_choice=ai_pb2.ToolChoice(
                mode=ai_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name=LONG_NAME
            )
        ),
    ),
    ("stop", lambda: chat(stop=["s"] * (limits.MAX_STOP + 1))),
    ("stop[0]", lambda: chat(stop=["s" * (limits.MAX_STOP_LENGTH + 1)])),
    ("metadata", lambda: chat(metadata={f"k{i}": "v" for i in range(limits.MAX_METADATA + 1)})),
    ("metadata", lambda: chat(metadata={"k" * (limits.MAX_METADATA_KEY + 1): "v"})),
    ("metadata", lambda: chat(metadata={"k": "v" * (limits.MAX_METADATA_VALUE + 1)})),
    ("user", lambda: chat(user=LONG_NAME)),
    ("max_tokens", lambda: chat(max_tokens=limits.MAX_MAX_TOKENS + 1)),
    ("max_tokens", lambda: chat(max_tokens=2**31 - 1)),
    ("target", lambda: chat(target="echo/" + "m" * (limits.MAX_MODEL_NAME + 1))),
]
OVER_EMBED: list[tuple[str, Callable[[], ai_pb2.EmbedRequest]]] = [
    ("inputs", lambda: ai_pb2.EmbedRequest(inputs=["x"] * (limits.MAX_EMBED_INPUTS + 1))),
    ("dimensions", lambda: ai_pb2.EmbedRequest(inputs=["x"], dimensions=2**31 - 1)),
    (
        "dimensions",
        lambda: ai_pb2.EmbedRequest(inputs=["x"], dimensions=limits.MAX_EMBED_DIMENSIONS + 1),
    ),
    ("dimensions", lambda: ai_pb2.EmbedRequest(inputs=["x"], dimensions=-1)),
    (
        "dimensions",
        lambda: ai_pb2.EmbedRequest(
            inputs=["x"] * (limits.MAX_EMBED_VALUES // limits.MAX_EMBED_DIMENSIONS + 1),
            dimensions=limits.MAX_EMBED_DIMENSIONS,
        ),
    ),
]


async def _refused(call: Any, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert error_info(caught.value).metadata["field"] == field


@pytest.mark.parametrize(("field", "build"), OVER, ids=[f for f, _ in OVER])
async def test_over_a_chat_bound_is_invalid_argument(
    ai: AISidecar, field: str, build: Callable[[], ai_pb2.CompleteRequest]
) -> None:
    request = build()
    await _refused(ai.stub.Complete(request, timeout=10), field)
    stream = ai_pb2.StreamCompleteRequest.FromString(request.SerializeToString())
    await _refused(ai.stub.StreamComplete(stream, timeout=10).read(), field)


@pytest.mark.parametrize(("field", "build"), OVER_EMBED, ids=[f for f, _ in OVER_EMBED])
async def test_over_an_embed_bound_is_invalid_argument(
    ai: AISidecar, field: str, build: Callable[[], ai_pb2.EmbedRequest]
) -> None:
    await _refused(ai.stub.Embed(build(), timeout=10), field)


async def test_the_issues_embed_answers_at_once_and_health_keeps_answering(ai: AISidecar) -> None:
    """`dimensions: 2147483647` on echo used to run quadratic work on the event loop."""
    health = health_pb2_grpc.HealthStub(ai.channel)
    embed = asyncio.ensure_future(
        ai.stub.Embed(ai_pb2.EmbedRequest(inputs=["x"], dimensions=2**31 - 1), timeout=30)
    )
    started = time.monotonic()
    await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
    await _refused(embed, "dimensions")
    assert time.monotonic() - started < 1


async def test_the_largest_embedding_is_answered(ai: AISidecar) -> None:
    inputs = limits.MAX_EMBED_VALUES // limits.MAX_EMBED_DIMENSIONS
    reply = await ai.stub.Embed(
        ai_pb2.EmbedRequest(inputs=["x"] * inputs, dimensions=limits.MAX_EMBED_DIMENSIONS),
        timeout=10,
    )
    assert [len(e.values) for e in reply.embeddings] == [limits.MAX_EMBED_DIMENSIONS] * inputs
    assert reply.embeddings[0].values == reply.embeddings[-1].values  # same text, same vector


async def test_a_schema_at_the_depth_bound_is_accepted(ai: AISidecar) -> None:
    tool = ai_pb2.Tool(name="f", parameters=_nested(limits.MAX_JSON_DEPTH))
    reply = await ai.stub.Complete(chat(tools=[tool]), timeout=10)
    assert reply.content == "hello there"
