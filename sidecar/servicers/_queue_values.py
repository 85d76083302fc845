"""QueueService request validation and proto mapping: every bound of queue.proto, checked
before any call reaches a queue's pipeline, and the domain types of `sidecar.backends.queue`
as proto messages.

The bounds are SQS's, whatever the backend, so an application tested on the in-memory queue
behaves the same on SQS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from google.protobuf import duration_pb2, timestamp_pb2

from generated.integration.v1 import queue_pb2
from sidecar.backends.queue import (
    MAX_BATCH,
    MAX_DELAY,
    MAX_VISIBILITY_TIMEOUT,
    OutgoingMessage,
    ReceivedMessage,
)
from sidecar.errors import SidecarError
from sidecar.servicers._common import invalid

__all__ = [
    "DEFAULT_IN_FLIGHT",
    "MAX_PAYLOAD",
    "entry_error",
    "in_flight",
    "max_messages",
    "message",
    "outgoing",
    "receipt_handle",
    "receipt_handles",
    "seconds",
    "wait_time",
]

MAX_PAYLOAD: Final = 256 * 1024
"""Largest message (body and attributes) and largest batch, in bytes (SQS's)."""
MAX_ATTRIBUTES: Final = 9
"""SQS allows 10 message attributes; the sidecar keeps one for binary bodies."""
DEFAULT_IN_FLIGHT: Final = 10
MAX_IN_FLIGHT: Final = 1000
MAX_STREAM_MESSAGES: Final = 1_000_000
MAX_ACK_HANDLES: Final = 100
MAX_RECEIPT_HANDLE: Final = 1024
LONGEST_WAIT: Final = 20.0
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_RESERVED_PREFIXES = ("aws.", "amazon.", "sidecar-")
_FIFO_ID = re.compile(r"[!-~]{1,128}")
_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_ATTRIBUTE_TYPE_BYTES = len("String")

_CODES: Final = {
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "UNIMPLEMENTED": 12,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
"""google.rpc.Code numbers of the sidecar's error kinds."""


def seconds(value: duration_pb2.Duration, field: str, *, low: float, high: float) -> float:
    """A Duration in seconds, within [low, high]."""
    if value.seconds < 0 or value.nanos < 0:
        raise invalid(field, "must not be negative")
    total = value.seconds + value.nanos / 1e9
    if not low <= total <= high:
        raise invalid(field, f"must be between {low:g}s and {high:g}s")
    return total


def outgoing(
    source: queue_pb2.SendRequest | queue_pb2.SendBatchEntry, fifo: bool, prefix: str = ""
) -> OutgoingMessage:
    """The message of a Send (or of one batch entry, its fields named under `prefix`)."""
    if not source.body:
        raise invalid(f"{prefix}body", "must not be empty")
    attributes = _attributes(source.attributes, f"{prefix}attributes")
    size = len(source.body) + sum(
        len(name.encode()) + len(value.encode()) + _ATTRIBUTE_TYPE_BYTES
        for name, value in attributes.items()
    )
    if size > MAX_PAYLOAD:
        raise invalid(
            f"{prefix}body",
            f"the message is {size} bytes with its attributes; the limit is {MAX_PAYLOAD}",
            "VALUE_TOO_LARGE",
        )
    delay = 0.0
    if source.HasField("delay"):
        delay = seconds(source.delay, f"{prefix}delay", low=0.0, high=MAX_DELAY)
    group = source.message_group_id
    dedup = source.deduplication_id
    if fifo:
        if not group:
            raise invalid(f"{prefix}message_group_id", "is required on a FIFO queue")
        _fifo_id(group, f"{prefix}message_group_id")
        if dedup:
            _fifo_id(dedup, f"{prefix}deduplication_id")
        if delay:
            raise invalid(f"{prefix}delay", "a FIFO queue takes no per-message delay")
    else:
        for name, value in (("message_group_id", group), ("deduplication_id", dedup)):
            if value:
                raise invalid(f"{prefix}{name}", "applies to FIFO queues only")
    return OutgoingMessage(
        body=source.body,
        attributes=attributes,
        delay=delay,
        group_id=group or None,
        deduplication_id=dedup or None,
    )


def batch(entries: Sequence[queue_pb2.SendBatchEntry], fifo: bool) -> list[OutgoingMessage]:
    """The messages of a SendBatch, entry ids checked unique."""
    if not 1 <= len(entries) <= MAX_BATCH:
        raise invalid("entries", f"send 1 to {MAX_BATCH} entries")
    seen: set[str] = set()
    messages = []
    total = 0
    for i, entry in enumerate(entries):
        if not _ENTRY_ID.fullmatch(entry.id):
            raise invalid(f"entries[{i}].id", "use 1-80 letters, digits, '_' or '-'")
        if entry.id in seen:
            raise invalid(f"entries[{i}].id", f"{entry.id!r} is used twice")
        seen.add(entry.id)
        message = outgoing(entry, fifo, f"entries[{i}].")
        messages.append(message)
        total += len(message.body) + sum(len(k) + len(v) for k, v in message.attributes.items())
    if total > MAX_PAYLOAD:
        raise invalid(
            "entries", f"the batch is {total} bytes; the limit is {MAX_PAYLOAD}", "VALUE_TOO_LARGE"
        )
    return messages


def _attributes(values: Mapping[str, str], field: str) -> dict[str, str]:
    if len(values) > MAX_ATTRIBUTES:
        raise invalid(field, f"at most {MAX_ATTRIBUTES} attributes")
    for name, value in values.items():
        where = f"{field}[{name[:64]!r}]"
        if not _ATTRIBUTE_NAME.fullmatch(name) or name.startswith(".") or ".." in name:
            raise invalid(where, "names are 1-256 letters, digits, '_', '-' and '.'")
        if name.lower().startswith(_RESERVED_PREFIXES):
            raise invalid(where, "names starting with AWS., Amazon. or sidecar- are reserved")
        if not value:
            raise invalid(where, "the value must not be empty")
    return dict(values)


def _fifo_id(value: str, field: str) -> None:
    if not _FIFO_ID.fullmatch(value):
        raise invalid(field, "use 1-128 printable ASCII characters")


def in_flight(value: int) -> int:
    """`max_in_flight` with its default (0: 10) and bounds."""
    if value == 0:
        return DEFAULT_IN_FLIGHT
    if not 1 <= value <= MAX_IN_FLIGHT:
        raise invalid("max_in_flight", f"must be between 0 and {MAX_IN_FLIGHT}")
    return value


def max_messages(value: int) -> int:
    if not 0 <= value <= MAX_STREAM_MESSAGES:
        raise invalid("max_messages", f"must be between 0 and {MAX_STREAM_MESSAGES}")
    return value


def wait_time(request: queue_pb2.ReceiveRequest) -> float:
    if not request.HasField("wait_time"):
        return LONGEST_WAIT
    return seconds(request.wait_time, "wait_time", low=1.0, high=LONGEST_WAIT)


def receipt_handle(value: str, field: str = "receipt_handle") -> str:
    if not value:
        raise invalid(field, "must not be empty")
    if len(value) > MAX_RECEIPT_HANDLE:
        raise invalid(field, f"must be at most {MAX_RECEIPT_HANDLE} characters")
    return value


def receipt_handles(values: Sequence[str]) -> list[str]:
    if not 1 <= len(values) <= MAX_ACK_HANDLES:
        raise invalid("receipt_handles", f"give 1 to {MAX_ACK_HANDLES} handles")
    return [receipt_handle(value, f"receipt_handles[{i}]") for i, value in enumerate(values)]


def visibility(request: Any) -> float | None:
    """A request's `visibility_timeout` in seconds (None: unset)."""
    if not request.HasField("visibility_timeout"):
        return None
    return seconds(
        request.visibility_timeout, "visibility_timeout", low=0.0, high=MAX_VISIBILITY_TIMEOUT
    )


def entry_error(error: SidecarError) -> queue_pb2.QueueEntryError:
    """One batch entry's failure as its proto message."""
    return queue_pb2.QueueEntryError(
        code=_CODES.get(error.kind.value, 14), reason=error.reason, message=error.message
    )


def message(received: ReceivedMessage) -> queue_pb2.QueueMessage:
    sent = timestamp_pb2.Timestamp()
    sent.FromNanoseconds(int(received.sent_at * 1e9))
    return queue_pb2.QueueMessage(
        message_id=received.message_id,
        body=received.body,
        attributes=dict(received.attributes),
        receipt_handle=received.receipt_handle,
        receive_count=received.receive_count,
        message_group_id=received.group_id,
        sent_time=sent,
        sequence_number=received.sequence_number,
    )
