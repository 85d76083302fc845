"""What only the SQS queue has (the shared semantics are the conformance suite's), against
moto in server mode: queues named by name or URL, how bodies travel (plain text for other
SQS clients, base64 with a marker for binary), error mapping, and QueueService end to end
through a real gRPC server on an SQS queue."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aws_server import FAKE_KEY, FAKE_SECRET, MotoServer, moto_server

from generated.integration.v1 import queue_pb2 as pb
from generated.integration.v1.queue_pb2_grpc import QueueServiceStub
from sidecar.backends.queue import OutgoingMessage
from sidecar.backends.queue.sqs import BODY_ENCODING_ATTRIBUTE, SqsQueue
from sidecar.config import parse_config
from sidecar.connections.aws import AwsConnection, open_connection
from sidecar.errors import InvalidArgument, NotFound
from sidecar.testing import serve_for_test

__all__ = ["moto_server"]

_names = itertools.count()


def _section(server: MotoServer) -> str:
    return (
        f"{{type: aws, region: us-east-1, endpoint_url: {server.url}, "
        f"credentials: {{access_key_id: {FAKE_KEY}, secret_access_key: {FAKE_SECRET}}}}}"
    )


@pytest.fixture
async def connection(moto_server: MotoServer) -> AsyncIterator[AwsConnection]:
    config = parse_config(f"connections:\n  moto: {_section(moto_server)}\n")
    pool, timeouts = config.connection_policies("moto")
    endpoint: Any = config.connections["moto"]
    opened = open_connection("moto", endpoint, pool, timeouts)
    yield opened
    await opened.close()


async def _new_queue(connection: AwsConnection) -> tuple[str, str]:
    sqs: Any = await connection.client("sqs")
    name = f"sqs-unit-{os.getpid()}-{next(_names)}"
    made = await sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "7"})
    return name, str(made["QueueUrl"])


async def test_text_bodies_stay_text_and_binary_ones_travel_base64(
    connection: AwsConnection,
) -> None:
    _, url = await _new_queue(connection)
    queue = SqsQueue(connection, name="jobs", queue=url)  # by URL: no GetQueueUrl
    await queue.send(OutgoingMessage("héllo".encode(), attributes={"k": "v"}))
    await queue.send(OutgoingMessage(b"\xff\x00binary"))
    sqs: Any = await connection.client("sqs")
    raw = await sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    by_body = {m["Body"]: m.get("MessageAttributes", {}) for m in raw["Messages"]}
    assert by_body["héllo"] == {"k": {"StringValue": "v", "DataType": "String"}}
    [(_, attributes)] = [(b, a) for b, a in by_body.items() if b != "héllo"]
    assert attributes[BODY_ENCODING_ATTRIBUTE]["StringValue"] == "base64"
    for message in raw["Messages"]:
        await sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    received = await queue.receive(10, wait=0, visibility_timeout=None)
    assert sorted(m.body for m in received) == sorted(["héllo".encode(), b"\xff\x00binary"])
    assert all(BODY_ENCODING_ATTRIBUTE not in m.attributes for m in received)


async def test_a_queue_named_by_name_is_looked_up_once_and_says_its_visibility_timeout(
    connection: AwsConnection, moto_server: MotoServer
) -> None:
    name, _ = await _new_queue(connection)
    queue = SqsQueue(connection, name="jobs", queue=name)
    assert not queue.fifo
    before = moto_server.calls("sqs:GetQueueUrl")
    await queue.send(OutgoingMessage(b"1"))
    await queue.send(OutgoingMessage(b"2"))
    assert moto_server.calls("sqs:GetQueueUrl") - before == 1
    assert await queue.default_visibility_timeout() == 7.0


async def test_a_missing_queue_is_not_found(connection: AwsConnection) -> None:
    queue = SqsQueue(connection, name="jobs", queue=f"missing-{os.getpid()}")
    with pytest.raises(NotFound) as raised:
        await queue.send(OutgoingMessage(b"x"))
    assert raised.value.reason == "UPSTREAM_NOT_FOUND"


async def test_a_binary_body_too_large_once_encoded_is_refused_before_sending(
    connection: AwsConnection, moto_server: MotoServer
) -> None:
    _, url = await _new_queue(connection)
    queue = SqsQueue(connection, name="jobs", queue=url)
    before = moto_server.calls("sqs:SendMessage")
    with pytest.raises(InvalidArgument) as raised:
        await queue.send(OutgoingMessage(b"\xff" * 200_000))  # 266668 bytes in base64
    assert raised.value.reason == "VALUE_TOO_LARGE"
    assert moto_server.calls("sqs:SendMessage") == before


async def test_queue_service_on_sqs_end_to_end(
    connection: AwsConnection, moto_server: MotoServer
) -> None:
    name, _ = await _new_queue(connection)
    config = f"""
connections:
  moto: {_section(moto_server)}
services:
  jobs: {{type: queue, backend: sqs, connection: moto, queue: {name}}}
"""
    async with (
        serve_for_test(config) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = QueueServiceStub(channel)
        answer = await stub.SendBatch(
            pb.SendBatchRequest(
                target="jobs",
                entries=[pb.SendBatchEntry(id=f"e{i}", body=b"%d" % i) for i in range(3)],
            )
        )
        assert all(result.message_id for result in answer.results)
        call = stub.Receive(pb.ReceiveRequest(target="jobs", max_messages=3), timeout=10)
        got = [response.message async for response in call]
        assert sorted(m.body for m in got) == [b"0", b"1", b"2"]
        acked = await stub.Ack(
            pb.AckRequest(target="jobs", receipt_handles=[m.receipt_handle for m in got])
        )
        assert (acked.acknowledged, list(acked.failures)) == (3, [])
        bogus = await stub.Ack(pb.AckRequest(target="jobs", receipt_handles=["bogus"]))
        assert bogus.failures[0].error.reason == "RECEIPT_INVALID"
