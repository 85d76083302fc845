"""An unknown value (99) in any enum field of any request answers INVALID_ARGUMENT, never
INTERNAL.

The enum fields are found by walking the request descriptors of every service, so a new
enum field is covered the day it is added; each RPC that has one needs a base request here
that is valid and reaches the field (a test fails if an enum field is left uncovered).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from support import error_info

from generated.integration.v1 import (
    admin_pb2,
    ai_pb2,
    cache_pb2,
    common_pb2,
    pubsub_pb2,
    sql_pb2,
)
from sidecar.testing import serve_for_test

pytestmark = pytest.mark.e2e

_MODULES: tuple[ModuleType, ...] = (admin_pb2, ai_pb2, cache_pb2, pubsub_pb2, sql_pb2)
_UNKNOWN = 99


def _chat(cls: Any) -> Message:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "default": None})
    return cls(  # type: ignore[no-any-return]
        messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content="hi")],
        tools=[ai_pb2.Tool(name="lookup", parameters=schema)],
        tool_choice=ai_pb2.ToolChoice(mode=ai_pb2.TOOL_CHOICE_MODE_AUTO),
        response_format=ai_pb2.ResponseFormat(
            type=ai_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_name="s", json_schema=schema
        ),
    )


def _null() -> common_pb2.Value:
    return common_pb2.Value(null_value=common_pb2.NULL_VALUE_UNSPECIFIED)


BASE_REQUESTS: dict[str, Callable[[], Message]] = {
    "AIService/Complete": lambda: _chat(ai_pb2.CompleteRequest),
    "AIService/StreamComplete": lambda: _chat(ai_pb2.StreamCompleteRequest),
    "AIService/GenerateImage": lambda: ai_pb2.GenerateImageRequest(prompt="a fox"),
    "CacheService/Set": lambda: cache_pb2.SetRequest(
        key="enum-k", value=b"v", condition=cache_pb2.SET_CONDITION_IF_ABSENT
    ),
    "CacheService/ListPush": lambda: cache_pb2.ListPushRequest(
        key="enum-l", values=[b"v"], end=cache_pb2.LIST_END_RIGHT
    ),
    "CacheService/ListPop": lambda: cache_pb2.ListPopRequest(
        key="enum-l", end=cache_pb2.LIST_END_RIGHT
    ),
    "CacheService/Batch": lambda: cache_pb2.BatchRequest(
        operations=[cache_pb2.BatchOperation(set=cache_pb2.SetRequest(key="enum-b", value=b"v"))]
    ),
    "SqlService/Query": lambda: sql_pb2.QueryRequest(sql="SELECT ?", parameters=[_null()]),
    "SqlService/QueryStream": lambda: sql_pb2.QueryStreamRequest(
        sql="SELECT ?", parameters=[_null()]
    ),
    "SqlService/Execute": lambda: sql_pb2.ExecuteRequest(sql="SELECT ?", parameters=[_null()]),
    "SqlService/Transaction": lambda: sql_pb2.TransactionRequest(
        statements=[sql_pb2.Statement(sql="SELECT ?", parameters=[_null()])],
        isolation_level=sql_pb2.ISOLATION_LEVEL_SERIALIZABLE,
    ),
}

Step = tuple[FieldDescriptor, Any]
"""One step down a path: the field, and the map key to follow (None otherwise)."""


def _enum_paths(descriptor: Descriptor, seen: frozenset[str]) -> Iterator[list[FieldDescriptor]]:
    """Every path to an enum field under `descriptor` (recursive types walked once)."""
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_ENUM:
            yield [field]
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            child = field.message_type
            if child.GetOptions().map_entry:
                child = child.fields_by_name["value"].message_type
                if child is None:
                    continue
            if child.full_name in seen:
                continue
            for rest in _enum_paths(child, seen | {child.full_name}):
                yield [field, *rest]


def _set_unknown(message: Message, path: list[FieldDescriptor]) -> bool:
    """Set the enum at `path` to 99, following only parts the base request has set (so a
    oneof keeps its case); False when the base request does not reach it."""
    field, rest = path[0], path[1:]
    value = getattr(message, field.name)
    if not rest:
        if field.is_repeated:
            value.append(_UNKNOWN)
        else:
            setattr(message, field.name, _UNKNOWN)
        return True
    if field.message_type.GetOptions().map_entry:
        children = list(value.values())
    elif field.is_repeated:
        children = list(value)
    else:
        children = [value] if message.HasField(field.name) else []
    return any(_set_unknown(child, rest) for child in children[:1])


def _cases() -> Iterator[tuple[str, str, Message]]:
    for module in _MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpc = f"{service.name}/{method.name}"
                request_type = method.input_type
                for path in _enum_paths(request_type, frozenset({request_type.full_name})):
                    name = ".".join(field.name for field in path)
                    if rpc not in BASE_REQUESTS:
                        raise AssertionError(f"{rpc}: no base request reaching {name}")
                    request = BASE_REQUESTS[rpc]()
                    if not _set_unknown(request, path):
                        raise AssertionError(f"{rpc}: the base request does not reach {name}")
                    yield rpc, name, request


CASES = list(_cases())


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    async with (
        serve_for_test() as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        yield channel


async def _call(channel: grpc.aio.Channel, rpc: str, request: Message) -> None:
    """Call `rpc` with `request` and read a stream to its end."""
    method = f"/integration.v1.{rpc}"
    serialize = type(request).SerializeToString
    streaming = rpc in {"AIService/StreamComplete", "SqlService/QueryStream"}
    if streaming:
        call = channel.unary_stream(method, request_serializer=serialize)(request, timeout=10)
        async for _ in call:
            pass
    else:
        await channel.unary_unary(method, request_serializer=serialize)(request, timeout=10)


def test_every_request_enum_is_covered() -> None:
    assert {rpc for rpc, _, _ in CASES} == set(BASE_REQUESTS)
    assert ("AIService/Complete", "response_format.type") in {(r, f) for r, f, _ in CASES}


@pytest.mark.parametrize(("rpc", "field", "request_"), CASES, ids=[f"{r}:{f}" for r, f, _ in CASES])
async def test_unknown_enum_value_is_invalid_argument(
    channel: grpc.aio.Channel, rpc: str, field: str, request_: Message
) -> None:
    if field.endswith("null_value"):
        # NullValue has one value; protobuf itself reads any number there as null.
        await _call(channel, rpc, request_)
        return
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, rpc, request_)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert error_info(caught.value).reason == "INVALID_REQUEST"
