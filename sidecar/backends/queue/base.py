"""The queue capability: the `QueueBackend` protocol and its domain types.

One backend instance is one queue. Delivery is at least once, with SQS's semantics whatever
the backend: a received message is invisible until it is acked or its visibility timeout
runs out, then delivered again with `receive_count` one higher; a queue with a dead-letter
queue moves a message there after `max_receive_count` receives; a FIFO queue delivers each
message group in order and holds a group back while any of its messages is in flight.

Backends know nothing of gRPC: they raise `sidecar.errors` types, and per-entry failures of
batches come back as `EntryError` values (a `SidecarError` each) rather than raised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from sidecar.errors import SidecarError

__all__ = [
    "DEAD_LETTER",
    "FIFO",
    "MAX_BATCH",
    "MAX_DELAY",
    "MAX_VISIBILITY_TIMEOUT",
    "AckOutcome",
    "OutgoingMessage",
    "QueueBackend",
    "ReceivedMessage",
    "SendOutcome",
    "Sent",
]

FIFO: Final = "fifo"
"""Feature: the queue is FIFO (an instance adds it when it is one)."""
DEAD_LETTER: Final = "dead_letter"
"""Feature: the queue moves messages received too often to a dead-letter queue."""

MAX_BATCH: Final = 10
"""Most entries of one SendBatch, and most messages of one fetch (SQS's limits)."""
MAX_DELAY: Final = 900.0
"""Longest delay of a message, in seconds (15 minutes, SQS's limit)."""
MAX_VISIBILITY_TIMEOUT: Final = 43_200.0
"""Longest visibility timeout, in seconds (12 hours, SQS's limit)."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message to send, validated by the caller against the documented bounds."""

    body: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds the message stays invisible after it is sent (standard queues)."""
    group_id: str | None = None
    """FIFO queues: the message group (required there)."""
    deduplication_id: str | None = None
    """FIFO queues: a second send with this id within 5 minutes is not enqueued."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A message the queue accepted."""

    message_id: str
    sequence_number: str = ""
    """FIFO queues: its place in its group (increasing); "" on standard queues."""


SendOutcome = Sent | SidecarError
"""One entry's outcome in a batch: sent, or the error it would have failed with alone."""

AckOutcome = None | SidecarError
"""One receipt handle's outcome in an ack: None when accepted, else why not (RECEIPT_INVALID,
...)."""


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One delivery of a message."""

    message_id: str
    body: bytes
    attributes: Mapping[str, str]
    receipt_handle: str
    """Names this delivery to `ack` and `change_visibility`; a redelivery has a new one."""
    receive_count: int
    """Deliveries so far, this one included (1 = first)."""
    sent_at: float
    """Wall-clock seconds of the first send."""
    group_id: str = ""
    sequence_number: str = ""


@runtime_checkable
class QueueBackend(Protocol):
    """One queue."""

    @property
    def fifo(self) -> bool:
        """Whether the queue is FIFO; known from its configuration or its name."""
        ...

    async def default_visibility_timeout(self) -> float:
        """Seconds a received message stays invisible when `receive` does not say."""
        ...

    async def send(self, message: OutgoingMessage) -> Sent:
        """Put one message on the queue.

        Raises:
            ResourceExhausted: the queue is full (in memory: `max_messages`).
            InvalidArgument: the queue refused the message (a FIFO message without a
                deduplication id on a queue that does not deduplicate by content, ...).
        """
        ...

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendOutcome]:
        """Put 1 to `MAX_BATCH` messages on the queue; one outcome per message, in order.

        Raises:
            SidecarError: the whole batch failed (the queue is unreachable, ...).
        """
        ...

    async def receive(
        self, max_messages: int, *, wait: float, visibility_timeout: float | None
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` (1 to `MAX_BATCH`) visible messages, waiting up to `wait`
        seconds for the first one (long polling); an empty list when none came.

        `visibility_timeout` (seconds, 0 to `MAX_VISIBILITY_TIMEOUT`) overrides the queue's
        own. Cancelling the call loses nothing: a message taken but never returned comes
        back after its visibility timeout.
        """
        ...

    async def ack(self, receipt_handles: Sequence[str]) -> list[AckOutcome]:
        """Delete received messages; one outcome per handle, in order.

        Raises:
            SidecarError: the whole call failed.
        """
        ...

    async def change_visibility(self, receipt_handle: str, seconds: float) -> None:
        """Make a received message invisible for `seconds` from now (0: visible now).

        Raises:
            FailedPrecondition: the handle no longer holds its message (RECEIPT_INVALID).
            InvalidArgument: the handle was never issued by this queue (RECEIPT_INVALID).
        """
        ...

    async def ping(self) -> None:
        """Return if the queue can serve requests (a health check), else raise `Unavailable`."""
        ...

    async def close(self) -> None:
        """Release what the backend holds; later calls fail with UNAVAILABLE."""
        ...
