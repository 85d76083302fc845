"""The queue capability: the `QueueBackend` protocol, its domain types, and the in-memory
backend (`sqs.py` is imported only where an SQS queue is configured)."""

from sidecar.backends.queue.base import (
    DEAD_LETTER,
    FIFO,
    MAX_BATCH,
    MAX_DELAY,
    MAX_VISIBILITY_TIMEOUT,
    AckOutcome,
    OutgoingMessage,
    QueueBackend,
    ReceivedMessage,
    SendOutcome,
    Sent,
)
from sidecar.backends.queue.memory import MemoryQueue, link_dead_letters

__all__ = [
    "DEAD_LETTER",
    "FIFO",
    "MAX_BATCH",
    "MAX_DELAY",
    "MAX_VISIBILITY_TIMEOUT",
    "AckOutcome",
    "MemoryQueue",
    "OutgoingMessage",
    "QueueBackend",
    "ReceivedMessage",
    "SendOutcome",
    "Sent",
    "link_dead_letters",
]
