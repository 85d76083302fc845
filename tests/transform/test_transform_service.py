"""TransformService through the real gRPC server, and the schema checks of
PubSubService.Publish and QueueService.Send: statuses with their ErrorInfo, and nothing
published or sent when the payload fails its schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from support import error_info, rich_status

from generated.integration.v1 import pubsub_pb2, queue_pb2, transform_pb2
from generated.integration.v1.pubsub_pb2_grpc import PubSubServiceStub
from generated.integration.v1.queue_pb2_grpc import QueueServiceStub
from generated.integration.v1.transform_pb2_grpc import TransformServiceStub
from sidecar.testing import serve_for_test

CONFIG = """
server:
  max_send_message_size: 64KiB
schemas:
  order-xml:
    schema: {type: object, required: [order]}
  order:
    schema:
      type: object
      required: [id, qty]
      properties:
        id: {type: string}
        qty: {type: integer, minimum: 1}
transforms:
  orders-xml:
    description: ERP orders as checked JSON.
    steps:
      - xml_to_json
      - validate: order-xml
  big-xml:
    max_input_bytes: 1MiB
    steps: [xml_to_json]
  order-xml-shape:
    steps: ["validate:order-xml"]
"""


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    async with (
        serve_for_test(CONFIG) as running,
        grpc.aio.insecure_channel(running.address) as opened,
    ):
        yield opened


async def test_transform_answers_json(channel: grpc.aio.Channel) -> None:
    stub = TransformServiceStub(channel)
    reply = await stub.Transform(
        transform_pb2.TransformRequest(
            transform="orders-xml",
            input=b'<order id="1"><line>a</line><line>b</line></order>',
            content_type="application/xml",
        )
    )
    assert reply.content_type == "application/json"
    assert json.loads(reply.output) == {"order": {"@_id": "1", "line": ["a", "b"]}}


async def test_validate_lists_every_violation_as_data(channel: grpc.aio.Channel) -> None:
    stub = TransformServiceStub(channel)
    reply = await stub.Validate(transform_pb2.ValidateRequest(schema="order", json=b'{"qty": 0}'))
    assert not reply.valid and not reply.truncated
    assert [(v.path, v.keyword) for v in reply.violations] == [
        ("$", "required"),
        ("$.qty", "minimum"),
    ]
    ok = await stub.Validate(
        transform_pb2.ValidateRequest(schema="order", json=b'{"id": "a", "qty": 1}')
    )
    assert ok.valid and not ok.violations


async def test_list_transforms(channel: grpc.aio.Channel) -> None:
    reply = await TransformServiceStub(channel).ListTransforms(
        transform_pb2.ListTransformsRequest()
    )
    by_name = {info.name: info for info in reply.transforms}
    assert list(by_name) == sorted(by_name)
    assert set(by_name) == {
        "big-xml",
        "order-xml-shape",
        "orders-xml",
        "validate:order",
        "validate:order-xml",
        "xml_to_json",
    }
    orders = by_name["orders-xml"]
    assert (orders.description, list(orders.steps)) == (
        "ERP orders as checked JSON.",
        ["xml_to_json", "validate:order-xml"],
    )
    assert (orders.input_content_type, orders.output_content_type) == (
        "application/xml",
        "application/json",
    )
    assert (orders.max_input_bytes, orders.max_depth) == (1024 * 1024, 64)
    assert list(reply.schemas) == ["order", "order-xml"]


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (
            transform_pb2.TransformRequest(transform="orders-xml", input=b"<order/>"),
            grpc.StatusCode.OK,
            "",
        ),
        (
            transform_pb2.TransformRequest(transform="orders-xml", input=b"<other/>"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "SCHEMA_VIOLATION",
        ),
        (
            transform_pb2.TransformRequest(transform="orders-xml", input=b"<!DOCTYPE a><a/>"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "TRANSFORM_FAILED",
        ),
        (
            transform_pb2.TransformRequest(transform="nope", input=b"<a/>"),
            grpc.StatusCode.NOT_FOUND,
            "TARGET_NOT_FOUND",
        ),
        (
            transform_pb2.TransformRequest(transform="", input=b"<a/>"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
        ),
        (
            transform_pb2.TransformRequest(transform="xml_to_json", input=b"<a>" * 100),
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALUE_TOO_LARGE",
        ),
        (
            transform_pb2.TransformRequest(
                transform="xml_to_json", input=b"<a/>", content_type="application/json"
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
        ),
        (
            # 40000 attributes of JSON outgrow the 64 KiB answers this server sends.
            transform_pb2.TransformRequest(
                transform="big-xml", input=b"<r>" + b"<i/>" * 40_000 + b"</r>"
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RESULT_TOO_LARGE",
        ),
    ],
)
async def test_statuses(
    channel: grpc.aio.Channel,
    request_: transform_pb2.TransformRequest,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    stub = TransformServiceStub(channel)
    if code == grpc.StatusCode.OK:
        await stub.Transform(request_)
        return
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Transform(request_)
    assert caught.value.code() == code
    assert error_info(caught.value).reason == reason


async def test_a_schema_violation_names_the_field_and_the_paths(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await TransformServiceStub(channel).Transform(
            transform_pb2.TransformRequest(transform="validate:order", input=b'{"qty": "1"}')
        )
    info = error_info(caught.value)
    assert info.metadata["paths"] == "$ $.qty"
    assert info.metadata["schema"] == "order"
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in rich_status(caught.value).details)
    assert bad_request.field_violations[0].field == "input"


async def test_publish_checks_its_schema_before_anything_is_published(
    channel: grpc.aio.Channel,
) -> None:
    pubsub = PubSubServiceStub(channel)
    call = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["transform-orders"]))
    first = await asyncio.wait_for(call.read(), 5)
    assert first.WhichOneof("event") == "started"
    for payload, reason in (
        (b'{"id": "a"}', "SCHEMA_VIOLATION"),
        (b"not json", "TRANSFORM_FAILED"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pubsub.Publish(
                pubsub_pb2.PublishRequest(
                    channel="transform-orders", payload=payload, schema="order"
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(caught.value).reason == reason
        assert error_info(caught.value).metadata["field"] == "payload"
    good = b'{"id": "a", "qty": 2}'
    sent = await pubsub.Publish(
        pubsub_pb2.PublishRequest(channel="transform-orders", payload=good, schema="order")
    )
    assert sent.receivers == 1
    received = await asyncio.wait_for(call.read(), 5)
    assert received.message.payload == good  # the first one through is the valid one
    call.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await pubsub.Publish(
            pubsub_pb2.PublishRequest(channel="transform-orders", payload=good, schema="nope")
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_send_checks_its_schema_before_anything_is_sent(
    channel: grpc.aio.Channel,
) -> None:
    queue = QueueServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await queue.Send(queue_pb2.SendRequest(body=b'{"qty": -1}', schema="order"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "SCHEMA_VIOLATION"
    assert error_info(caught.value).metadata["field"] == "body"
    good = b'{"id": "b", "qty": 1}'
    await queue.Send(queue_pb2.SendRequest(body=good, schema="order"))
    stream = queue.Receive(
        queue_pb2.ReceiveRequest(max_messages=5, wait_time=duration_pb2.Duration(seconds=1)),
        timeout=5,
    )
    bodies = [response.message.body async for response in stream]
    assert bodies == [good]


async def test_send_batch_checks_every_body_before_anything_is_sent(
    channel: grpc.aio.Channel,
) -> None:
    queue = QueueServiceStub(channel)
    good = b'{"id": "c", "qty": 2}'
    entries = [
        queue_pb2.SendBatchEntry(id="a", body=good),
        queue_pb2.SendBatchEntry(id="b", body=b'{"qty": -1}'),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await queue.SendBatch(queue_pb2.SendBatchRequest(entries=entries, schema="order"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "SCHEMA_VIOLATION"
    assert error_info(caught.value).metadata["field"] == "entries[1].body"
    await queue.SendBatch(queue_pb2.SendBatchRequest(entries=entries[:1], schema="order"))
    stream = queue.Receive(
        queue_pb2.ReceiveRequest(max_messages=5, wait_time=duration_pb2.Duration(seconds=1)),
        timeout=5,
    )
    assert [response.message.body async for response in stream] == [good]  # only the valid
