"""While the largest request each RPC accepts runs, the health check still answers.

One real sidecar process on the embedded defaults (memory cache and pub/sub, SQLite in
memory, the echo AI model) gets, RPC by RPC, the largest request its documented bounds
and the default 4 MiB `max_receive_message_size` accept. While each runs, a grpc.health.v1
Check on its own connection must answer within `HEALTH_WITHIN`: one request must never
hold the event loop. Long calls (streams) are watched for `WATCH_FOR` seconds and then
cancelled. The table must name every RPC of every service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sidecar_process import sidecar_process

from generated.integration.v1 import (
    admin_pb2,
    ai_pb2,
    cache_pb2,
    common_pb2,
    pubsub_pb2,
    queue_pb2,
    sql_pb2,
    transform_pb2,
)
from sidecar.ai import limits

pytestmark = pytest.mark.e2e

HEALTH_WITHIN = 1.0
"""Seconds a health check may take while a large request runs."""
WATCH_FOR = 2.0
"""Seconds a long call is watched before it is cancelled."""
MESSAGE_LIMIT = 4 * 1024 * 1024 - 4096
"""The default max_receive_message_size, less room for the gRPC framing."""
MODULES: tuple[ModuleType, ...] = (
    admin_pb2,
    ai_pb2,
    cache_pb2,
    pubsub_pb2,
    queue_pb2,
    sql_pb2,
    transform_pb2,
)

MAX_ITEMS = 10_000  # cache: keys, entries, values, members, operations per call
KEY = "k" * 1024  # cache: max_key_length
MIB = 1024 * 1024  # cache max_value_size, pubsub max_payload_size
NAME = "c" * 1024  # pubsub: channel and pattern names
SQL_PARAMETERS = 32_766  # SQLite's own limit, under the sidecar's 32,767
SQL_BYTES = 1024 * 1024


def per_item(count: int, overhead: int = 8) -> int:
    """Bytes each of `count` items may have so that they fill one request."""
    return MESSAGE_LIMIT // count - overhead


def pad_sql(sql: str, size: int = SQL_BYTES) -> str:
    return sql + " /*" + "x" * (size - len(sql) - 6) + "*/"


def _schema() -> struct_pb2.Struct:
    """A JSON schema at the depth bound."""
    value: dict[str, Any] = {"type": "string"}
    for _ in range(limits.MAX_JSON_DEPTH - 1):
        value = {"properties": value}
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _chat_words(cls: Any) -> Message:
    """One user message of single-letter words filling the request; echo answers up to
    max_tokens of them."""
    text = "a " * (MESSAGE_LIMIT // 2 - 64)
    return cls(  # type: ignore[no-any-return]
        messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content=text)],
        max_tokens=limits.MAX_MAX_TOKENS,
    )


def _chat_shape(cls: Any) -> Message:
    """Every count at its bound: messages, tools with deep schemas, stops, metadata."""
    schema = _schema()
    tools = [
        ai_pb2.Tool(name=f"t{i}", description="d" * 200, parameters=schema)
        for i in range(limits.MAX_TOOLS)
    ]
    fixed = cls(
        tools=tools,
        stop=["s" * limits.MAX_STOP_LENGTH] * limits.MAX_STOP,
        metadata={f"{i:0>64}": "v" * limits.MAX_METADATA_VALUE for i in range(limits.MAX_METADATA)},
        user="u" * limits.MAX_NAME,
        max_tokens=limits.MAX_MAX_TOKENS,
        response_format=ai_pb2.ResponseFormat(
            type=ai_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_name="n", json_schema=schema
        ),
    )
    size = per_item(limits.MAX_MESSAGES, 16) - fixed.ByteSize() // limits.MAX_MESSAGES
    content = " ".join(["word"] * (size // 5))
    fixed.messages.extend(
        [ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content=content)] * limits.MAX_MESSAGES
    )
    return fixed  # type: ignore[no-any-return]


def _keys(count: int = MAX_ITEMS, overhead: int = 4) -> list[str]:
    size = per_item(count, overhead)
    return [f"{i:0>{size}}" for i in range(count)]


def _blobs(count: int = MAX_ITEMS) -> list[bytes]:
    size = per_item(count, 4)
    return [f"{i:0>{size}}".encode() for i in range(count)]


def _hash_fields() -> dict[str, bytes]:
    count = MESSAGE_LIMIT // 24  # no count bound: the message size is the bound
    return {f"{i:0>8}": b"v" * 8 for i in range(count)}


def _sql_in_list() -> dict[str, Any]:
    sql = "SELECT 1 WHERE 1 IN (" + ",".join(["?"] * SQL_PARAMETERS) + ")"
    parameters = [common_pb2.Value(int_value=i) for i in range(SQL_PARAMETERS)]
    return {"sql": pad_sql(sql), "parameters": parameters}


LARGEST: dict[str, Callable[[], Message]] = {
    # Cache (memory): keys 1024 bytes, values 1 MiB, 10,000 items per call.
    "CacheService/Get": lambda: cache_pb2.GetRequest(key=KEY),
    "CacheService/Set": lambda: cache_pb2.SetRequest(key=KEY, value=b"v" * MIB),
    "CacheService/Delete": lambda: cache_pb2.DeleteRequest(keys=_keys()),
    "CacheService/Exists": lambda: cache_pb2.ExistsRequest(key=KEY),
    "CacheService/Expire": lambda: cache_pb2.ExpireRequest(
        key=KEY, ttl=duration_pb2.Duration(seconds=3600)
    ),
    "CacheService/Increment": lambda: cache_pb2.IncrementRequest(key="largest-n", delta=1),
    "CacheService/GetMany": lambda: cache_pb2.GetManyRequest(keys=_keys()),
    "CacheService/SetMany": lambda: cache_pb2.SetManyRequest(
        entries=[
            cache_pb2.CacheEntry(key=k[:16], value=k[16:].encode()) for k in _keys(overhead=12)
        ]
    ),
    "CacheService/HashGet": lambda: cache_pb2.HashGetRequest(key="largest-h", field="f" * 1024),
    "CacheService/HashSet": lambda: cache_pb2.HashSetRequest(
        key="largest-h", fields=_hash_fields()
    ),
    "CacheService/HashGetAll": lambda: cache_pb2.HashGetAllRequest(key="largest-h"),
    "CacheService/ListPush": lambda: cache_pb2.ListPushRequest(key="largest-l", values=_blobs()),
    "CacheService/ListPop": lambda: cache_pb2.ListPopRequest(key="largest-l", count=MAX_ITEMS),
    "CacheService/SetAdd": lambda: cache_pb2.SetAddRequest(key="largest-s", members=_blobs()),
    "CacheService/SetMembers": lambda: cache_pb2.SetMembersRequest(key="largest-s"),
    "CacheService/Batch": lambda: cache_pb2.BatchRequest(
        operations=[
            cache_pb2.BatchOperation(set=cache_pb2.SetRequest(key=k[:16], value=k[16:].encode()))
            for k in _keys(overhead=16)
        ]
    ),
    # PubSub (memory): names 1024 bytes, payload 1 MiB, 64 metadata entries, 100 channels
    # and 100 patterns per subscription, 1000 ids and a page of 1000.
    "PubSubService/Publish": lambda: pubsub_pb2.PublishRequest(
        channel=NAME,
        payload=b"p" * MIB,
        metadata={f"{i:0>8}": "m" * 40_000 for i in range(64)},
    ),
    # 1000 messages (the most) of 1024-byte channels and 3 KiB payloads: just under 4 MiB.
    "PubSubService/PublishBatch": lambda: pubsub_pb2.PublishBatchRequest(
        messages=[
            pubsub_pb2.PublishBatchEntry(channel=NAME, payload=b"p" * 3072) for _ in range(1000)
        ]
    ),
    "PubSubService/Subscribe": lambda: pubsub_pb2.SubscribeRequest(
        channels=[f"{i:0>1024}" for i in range(100)],
        patterns=[f"{i:0>1023}*" for i in range(100)],
    ),
    "PubSubService/Acknowledge": lambda: pubsub_pb2.AcknowledgeRequest(
        topic=NAME, group="g" * 256, message_ids=[f"{i}-0" for i in range(1000)]
    ),
    "PubSubService/ReadDeadLetters": lambda: pubsub_pb2.ReadDeadLettersRequest(
        topic=NAME, page=common_pb2.PageRequest(page_size=1000)
    ),
    "PubSubService/ReplayDeadLetters": lambda: pubsub_pb2.ReplayDeadLettersRequest(
        topic=NAME, dead_letter_ids=[f"{i}-0" for i in range(1000)]
    ),
    # Sql (SQLite): 1 MiB of SQL, 32,766 parameters, 1000 statements, batches of 10,000.
    "SqlService/Query": lambda: sql_pb2.QueryRequest(**_sql_in_list()),
    "SqlService/QueryStream": lambda: sql_pb2.QueryStreamRequest(
        sql=pad_sql(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)"
            " SELECT x FROM c"
        ),
        batch_size=10_000,
    ),
    "SqlService/Execute": lambda: sql_pb2.ExecuteRequest(**_sql_in_list()),
    "SqlService/Transaction": lambda: sql_pb2.TransactionRequest(
        statements=[sql_pb2.Statement(sql=pad_sql("SELECT 1", per_item(1000, 16)))] * 1000
    ),
    # AI (echo): see sidecar.ai.limits.
    "AIService/Complete": lambda: _chat_words(ai_pb2.CompleteRequest),
    "AIService/Complete:shape": lambda: _chat_shape(ai_pb2.CompleteRequest),
    "AIService/StreamComplete": lambda: _chat_words(ai_pb2.StreamCompleteRequest),
    "AIService/StreamComplete:shape": lambda: _chat_shape(ai_pb2.StreamCompleteRequest),
    "AIService/Embed": lambda: ai_pb2.EmbedRequest(
        inputs=["x"] * (limits.MAX_EMBED_VALUES // limits.MAX_EMBED_DIMENSIONS),
        dimensions=limits.MAX_EMBED_DIMENSIONS,
    ),
    "AIService/Embed:inputs": lambda: ai_pb2.EmbedRequest(
        inputs=[k[:-1] + " " for k in _keys(limits.MAX_EMBED_INPUTS)],
        dimensions=limits.MAX_EMBED_VALUES // limits.MAX_EMBED_INPUTS,
    ),
    "AIService/ListModels": ai_pb2.ListModelsRequest,
    "AIService/GenerateImage": lambda: ai_pb2.GenerateImageRequest(
        prompt="x" * limits.MAX_IMAGE_PROMPT, n=limits.MAX_IMAGES, size="1024x1024"
    ),
    # One message of the client stream (the 25 MiB total needs several; see tests/ai).
    "AIService/Transcribe": lambda: ai_pb2.TranscribeRequest(
        config=ai_pb2.TranscribeConfig(filename="a.wav"), audio=b"\0" * (MESSAGE_LIMIT - 64)
    ),
    # Queue (memory, the embedded default): body and attributes 256 KiB, 10 entries,
    # 100 receipts of 1024 bytes.
    "QueueService/Send": lambda: queue_pb2.SendRequest(
        body=b"q" * (256 * 1024 - 9 * 300), attributes={f"a{i}": "v" * 256 for i in range(9)}
    ),
    "QueueService/SendBatch": lambda: queue_pb2.SendBatchRequest(
        entries=[queue_pb2.SendBatchEntry(id=f"e{i}", body=b"q" * 26_000) for i in range(10)]
    ),
    "QueueService/Receive": lambda: queue_pb2.ReceiveRequest(
        max_in_flight=1000, max_messages=1_000_000, wait_time=duration_pb2.Duration(seconds=20)
    ),
    "QueueService/Ack": lambda: queue_pb2.AckRequest(receipt_handles=["r" * 1024] * 100),
    "QueueService/ChangeVisibility": lambda: queue_pb2.ChangeVisibilityRequest(
        receipt_handle="r" * 1024, visibility_timeout=duration_pb2.Duration(seconds=60)
    ),
    # Transform: a whole message of nested XML (refused past max_input_bytes, 1 MiB by
    # default), and of JSON for a schema that is not configured.
    "TransformService/Transform": lambda: transform_pb2.TransformRequest(
        transform="xml_to_json",
        input=b"<a>" * (MESSAGE_LIMIT // 8) + b"</a>" * (MESSAGE_LIMIT // 8),
        content_type="application/xml",
    ),
    "TransformService/Validate": lambda: transform_pb2.ValidateRequest(
        schema="s" * 1024,
        json=b"[" * (MESSAGE_LIMIT // 2 - 1024) + b"]" * (MESSAGE_LIMIT // 2 - 1024),
    ),
    "TransformService/ListTransforms": transform_pb2.ListTransformsRequest,
    # Admin: a page of 1000.
    "AdminService/ListIntegrations": lambda: admin_pb2.ListIntegrationsRequest(
        page=common_pb2.PageRequest(page_size=1000)
    ),
    "AdminService/GetIntegration": lambda: admin_pb2.GetIntegrationRequest(name="cache"),
    "AdminService/ListConnections": lambda: admin_pb2.ListConnectionsRequest(
        page=common_pb2.PageRequest(page_size=1000)
    ),
}


@dataclass
class Outcome:
    rpc: str
    request_bytes: int
    worst_health: float
    checks: int
    seconds: float
    status: str


def _methods() -> dict[str, Any]:
    return {
        f"{service.name}/{method.name}": method
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_the_table_names_every_rpc_of_every_service() -> None:
    assert {row.split(":")[0] for row in LARGEST} == set(_methods())


@pytest.fixture
async def sidecar_address(tmp_path: Path) -> AsyncIterator[str]:
    async with sidecar_process(tmp_path) as sidecar:
        yield sidecar.address


async def _run(channel: grpc.aio.Channel, method: Any, request: Message) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize = type(request).SerializeToString
    if method.server_streaming:
        async for _ in channel.unary_stream(path, request_serializer=serialize)(request):
            pass
    elif method.client_streaming:
        await channel.stream_unary(path, request_serializer=serialize)(iter([request]))
    else:
        await channel.unary_unary(path, request_serializer=serialize)(request)


async def _watch(
    rpc: str, call: asyncio.Task[None], health: health_pb2_grpc.HealthStub, request_bytes: int
) -> Outcome:
    started = time.monotonic()
    worst, checks = 0.0, 0
    while checks == 0 or (not call.done() and time.monotonic() - started < WATCH_FOR):
        asked = time.monotonic()
        try:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_WITHIN)
        except grpc.aio.AioRpcError as error:
            raise AssertionError(f"{rpc}: health did not answer: {error.code()}") from None
        worst, checks = max(worst, time.monotonic() - asked), checks + 1
        await asyncio.sleep(0.02)
    status = "running (cancelled)"
    if call.done():
        error = call.exception()
        status = error.code().name if isinstance(error, grpc.aio.AioRpcError) else repr(error)
        status = "OK" if error is None else status
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    return Outcome(rpc, request_bytes, worst, checks, time.monotonic() - started, status)


async def test_health_answers_while_the_largest_request_of_each_rpc_runs(
    sidecar_address: str,
) -> None:
    methods = _methods()
    outcomes = []
    async with (
        grpc.aio.insecure_channel(sidecar_address) as channel,
        grpc.aio.insecure_channel(sidecar_address) as health_channel,
    ):
        health = health_pb2_grpc.HealthStub(health_channel)
        for rpc, build in LARGEST.items():
            request = build()
            size = request.ByteSize()
            assert size <= MESSAGE_LIMIT, f"{rpc}: the test's request is {size} bytes"
            call = asyncio.ensure_future(_run(channel, methods[rpc.split(":")[0]], request))
            outcomes.append(await _watch(rpc, call, health, size))
    for o in outcomes:
        print(
            f"{o.rpc:34} {o.request_bytes:>9} B  health worst {o.worst_health * 1000:6.1f} ms"
            f" over {o.checks:3} checks  {o.seconds:5.2f} s  {o.status}"
        )
    assert all(o.status not in ("INTERNAL", "UNKNOWN") for o in outcomes), outcomes
