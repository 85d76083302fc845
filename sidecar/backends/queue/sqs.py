"""`SqsQueue`: one Amazon SQS queue, on the shared client of an aws connection.

- **Client**: `await connection.client("sqs")`, the one SQS client of the connection (its
  own retries are off: the service's resilience pipeline retries).
- **Queue**: configured by name (its URL is looked up once, with GetQueueUrl) or by URL. A
  name ending in `.fifo` is a FIFO queue. Its visibility timeout, delays, FIFO settings and
  redrive policy (dead letters after `maxReceiveCount`) are the queue's own, set in SQS.
- **Bodies**: SQS carries text only. A body that is UTF-8 text of the characters SQS allows
  goes as it is, so other SQS producers and consumers read it; any other body goes base64
  encoded with the message attribute `sidecar-body-encoding: base64`, decoded on receive.
- **Long polling**: `receive` asks with WaitTimeSeconds = its `wait` (whole seconds, at
  most 20), which the servicer bounds by the caller's deadline. Cancelling the call
  cancels the HTTP request at once; messages SQS had already handed out come back after
  their visibility timeout.
- **Durations**: SQS takes whole seconds; a delay or visibility timeout is rounded up.
- **Errors**: through the aws mapping (`connection.errors`), except receipt handles SQS
  refuses (ReceiptHandleIsInvalid, MessageNotInflight), which are RECEIPT_INVALID. SQS
  accepts an older receipt handle of a message it still has, and a handle of a message
  already deleted: only handles it never issued are refused.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sidecar.backends.queue.base import (
    DEAD_LETTER,
    FIFO,
    MAX_BATCH,
    AckOutcome,
    OutgoingMessage,
    ReceivedMessage,
    SendOutcome,
    Sent,
)
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config.services.queue import QueueServiceConfig
from sidecar.connections.aws import AwsConnection, AwsErrors, aws_errors
from sidecar.connections.aws.errors import client_error
from sidecar.errors import FailedPrecondition, InvalidArgument, SidecarError, Unavailable

__all__ = ["BODY_ENCODING_ATTRIBUTE", "SPEC", "SqsQueue"]

BODY_ENCODING_ATTRIBUTE: Final = "sidecar-body-encoding"
"""The message attribute marking a base64-encoded binary body."""
MAX_PAYLOAD: Final = 256 * 1024
"""SQS's largest message, body and attributes together (and largest batch)."""
_LONGEST_POLL: Final = 20
_RECEIPT_CODES: Final = frozenset(
    {"ReceiptHandleIsInvalid", "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"}
)
# The characters SQS accepts in a message body (its documented XML character ranges).
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SYSTEM_ATTRIBUTES: Final = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "MessageGroupId",
    "SequenceNumber",
]


class SqsQueue:
    """A `QueueBackend` on one SQS queue.

    Args:
        connection: the aws connection the service names (its SQS client is shared; the
            connection is closed by its owner, after this backend).
        name: the service's name, `target` in errors.
        queue: the queue's name or URL.
    """

    def __init__(self, connection: AwsConnection, *, name: str, queue: str) -> None:
        self._connection = connection
        self._name = name
        self._queue = queue
        self._url: str | None = queue if "://" in queue else None
        self._url_lock = asyncio.Lock()
        self._errors: AwsErrors = aws_errors(name)
        self._visibility_timeout: float | None = None
        self._closed = False

    @property
    def fifo(self) -> bool:
        return self._queue.endswith(".fifo")

    async def default_visibility_timeout(self) -> float:
        """The queue's VisibilityTimeout attribute, asked once."""
        if self._visibility_timeout is None:
            client, url = await self._client()
            with self._errors:
                answer = await client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["VisibilityTimeout"]
                )
            self._visibility_timeout = float(answer["Attributes"]["VisibilityTimeout"])
        return self._visibility_timeout

    # -- sending -----------------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> Sent:
        client, url = await self._client()
        with self._errors:
            answer = await client.send_message(QueueUrl=url, **self._send_fields(message))
        return Sent(answer["MessageId"], answer.get("SequenceNumber", ""))

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        client, url = await self._client()
        entries = [
            {"Id": str(index), **self._send_fields(message)}
            for index, message in enumerate(messages)
        ]
        total = sum(_payload_size(entry) for entry in entries)
        if total > MAX_PAYLOAD:
            raise InvalidArgument(
                f"the batch is {total} bytes as SQS counts them (binary bodies grow by a third "
                f"in base64); the limit is {MAX_PAYLOAD}",
                reason="VALUE_TOO_LARGE",
                metadata={"target": self._name, "field": "entries"},
            )
        with self._errors:
            answer = await client.send_message_batch(QueueUrl=url, Entries=entries)
        outcomes: list[SendOutcome] = [
            Unavailable("SQS gave no result", reason="UPSTREAM_UNAVAILABLE") for _ in messages
        ]
        for sent in answer.get("Successful", []):
            outcomes[int(sent["Id"])] = Sent(sent["MessageId"], sent.get("SequenceNumber", ""))
        for failed in answer.get("Failed", []):
            outcomes[int(failed["Id"])] = self._entry_error(failed)
        return outcomes

    def _send_fields(self, message: OutgoingMessage) -> dict[str, Any]:
        body, encoded = _encode_body(message.body)
        attributes = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in message.attributes.items()
        }
        if encoded:
            attributes[BODY_ENCODING_ATTRIBUTE] = {"DataType": "String", "StringValue": "base64"}
        fields: dict[str, Any] = {"MessageBody": body}
        if attributes:
            fields["MessageAttributes"] = attributes
        if message.delay:
            fields["DelaySeconds"] = math.ceil(message.delay)
        if message.group_id:
            fields["MessageGroupId"] = message.group_id
        if message.deduplication_id:
            fields["MessageDeduplicationId"] = message.deduplication_id
        size = _payload_size(fields)
        if size > MAX_PAYLOAD:
            raise InvalidArgument(
                f"the message is {size} bytes as SQS counts them (a binary body grows by a "
                f"third in base64); the limit is {MAX_PAYLOAD}",
                reason="VALUE_TOO_LARGE",
                metadata={"target": self._name, "field": "body"},
            )
        return fields

    # -- receiving ---------------------------------------------------------------------------

    async def receive(
        self, max_messages: int, *, wait: float, visibility_timeout: float | None
    ) -> list[ReceivedMessage]:
        client, url = await self._client()
        request: dict[str, Any] = {
            "QueueUrl": url,
            "MaxNumberOfMessages": max(1, min(max_messages, MAX_BATCH)),
            "WaitTimeSeconds": max(0, min(int(wait), _LONGEST_POLL)),  # never past `wait`
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": _SYSTEM_ATTRIBUTES,
        }
        if visibility_timeout is not None:
            request["VisibilityTimeout"] = math.ceil(visibility_timeout)
        with self._errors:
            answer = await client.receive_message(**request)
        return [self._received(message) for message in answer.get("Messages", [])]

    def _received(self, message: Mapping[str, Any]) -> ReceivedMessage:
        system: Mapping[str, str] = message.get("Attributes", {})
        attributes = {
            name: str(value.get("StringValue", ""))
            for name, value in message.get("MessageAttributes", {}).items()
        }
        body: str = message.get("Body", "")
        if attributes.pop(BODY_ENCODING_ATTRIBUTE, None) == "base64":
            data = base64.b64decode(body)
        else:
            data = body.encode()
        return ReceivedMessage(
            message_id=message["MessageId"],
            body=data,
            attributes=attributes,
            receipt_handle=message["ReceiptHandle"],
            receive_count=int(system.get("ApproximateReceiveCount", "1")),
            sent_at=int(system.get("SentTimestamp", "0")) / 1000,
            group_id=system.get("MessageGroupId", ""),
            sequence_number=system.get("SequenceNumber", ""),
        )

    # -- acks and visibility -----------------------------------------------------------------

    async def ack(self, receipt_handles: Sequence[str]) -> list[AckOutcome]:
        client, url = await self._client()
        outcomes: list[AckOutcome] = [None] * len(receipt_handles)
        for start in range(0, len(receipt_handles), MAX_BATCH):
            chunk = receipt_handles[start : start + MAX_BATCH]
            entries = [
                {"Id": str(start + offset), "ReceiptHandle": handle}
                for offset, handle in enumerate(chunk)
            ]
            with self._errors:
                answer = await client.delete_message_batch(QueueUrl=url, Entries=entries)
            for failed in answer.get("Failed", []):
                outcomes[int(failed["Id"])] = self._entry_error(failed)
        return outcomes

    async def change_visibility(self, receipt_handle: str, seconds: float) -> None:
        client, url = await self._client()
        try:
            with self._errors:
                await client.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=math.ceil(seconds)
                )
        except SidecarError as exc:
            if exc.metadata.get("aws_error_code") in _RECEIPT_CODES:
                raise _receipt_invalid(exc.message, exc.metadata) from exc
            raise

    # -- the client and the queue's URL ------------------------------------------------------

    async def _client(self) -> tuple[Any, str]:
        if self._closed:
            raise Unavailable(
                f"queue {self._name!r} is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )
        client: Any = await self._connection.client("sqs")
        if self._url is None:
            async with self._url_lock:
                if self._url is None:
                    with self._errors:
                        answer = await client.get_queue_url(QueueName=self._queue)
                    self._url = str(answer["QueueUrl"])
        return client, self._url

    def _entry_error(self, failed: Mapping[str, Any]) -> SidecarError:
        code = str(failed.get("Code", ""))
        message = str(failed.get("Message", "")) or code
        metadata = {"target": self._name, "aws_error_code": code}
        if code in _RECEIPT_CODES:
            return _receipt_invalid(message, metadata)
        status = 400 if failed.get("SenderFault", True) else 500
        return client_error(code=code, status=status, message=message, metadata=metadata)

    async def ping(self) -> None:
        client, url = await self._client()
        with self._errors:
            await client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])

    async def close(self) -> None:
        self._closed = True  # the client is the connection's; it closes it


def _receipt_invalid(message: str, metadata: Mapping[str, str]) -> SidecarError:
    return FailedPrecondition(
        f"SQS refused the receipt handle: {message[:300]}",
        reason="RECEIPT_INVALID",
        metadata=metadata,
    )


def _encode_body(body: bytes) -> tuple[str, bool]:
    """The body as SQS text, and whether it had to be base64-encoded."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True
    if _NOT_SQS_TEXT.search(text):
        return base64.b64encode(body).decode("ascii"), True
    return text, False


def _payload_size(fields: Mapping[str, Any]) -> int:
    """Bytes of a message as SQS counts them: the body, and each attribute's name, type and
    value."""
    size = len(str(fields["MessageBody"]).encode())
    for name, value in fields.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(value["DataType"]) + len(value["StringValue"].encode())
    return size


def _build(context: BuildContext[QueueServiceConfig]) -> SqsQueue:
    connection = context.connection
    assert isinstance(connection, AwsConnection)
    assert context.settings.queue is not None  # the settings model requires it for sqs
    return SqsQueue(connection, name=context.name, queue=context.settings.queue)


SPEC = BackendSpec(
    type="queue",
    backend="sqs",
    settings=QueueServiceConfig,
    build=_build,
    connection_type="aws",
    features=frozenset({FIFO, DEAD_LETTER}),
)
"""An Amazon SQS queue on an aws connection (FIFO when its name ends in .fifo, dead letters
through its own redrive policy)."""
