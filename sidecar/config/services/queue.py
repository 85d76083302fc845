"""`QueueServiceConfig`: a work queue (`type: queue`), served by QueueService.

One service is one queue. In memory, the embedded default (per process, gone at exit):

    services:
      jobs:
        type: queue
        backend: memory
        visibility_timeout: 30s
        max_receive_count: 5
        dead_letter: jobs-dlq
      jobs-dlq: {type: queue, backend: memory}

An SQS queue, on an aws connection: a `connections:` entry of `type: aws`, or a `type: cloud`
service (whose inline region and credentials make a connection named like it). The queue's
own attributes (visibility timeout, FIFO, redrive policy to its dead-letter queue) are set
in SQS, not here:

    services:
      aws: {type: cloud, region: eu-west-1, credentials: {...}}
      orders:
        type: queue
        backend: sqs
        connection: aws
        queue: orders.fifo          # a name in the connection's account and region, or a URL
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .._common import ServiceName
from .._units import DurationSeconds
from .base import ServiceBase, backend_settings_hold

__all__ = ["QueueServiceConfig"]

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}(\.fifo)?|[A-Za-z0-9_-]{1,80}")
_QUEUE_URL = re.compile(r"https?://[^\s/]+/[^\s/]+/[A-Za-z0-9_.-]{1,80}")
_SQS_ONLY = ("queue", "connection")
_MEMORY_ONLY = (
    "fifo",
    "content_based_deduplication",
    "visibility_timeout",
    "max_receive_count",
    "dead_letter",
    "max_messages",
    "message_retention",
)
_TWELVE_HOURS = 12 * 3600.0
_FOURTEEN_DAYS = 14 * 24 * 3600.0
LONGEST_POLL = 20.0
"""Seconds one long-polling fetch may wait (SQS's WaitTimeSeconds limit)."""


class QueueServiceConfig(ServiceBase):
    """A work queue (QueueService): in this process's memory, or an SQS queue."""

    type: Literal["queue"] = Field(default="queue", description="Service type.")
    backend: str = Field(
        default="memory",
        description="memory: a queue in this process (lost at exit), with SQS's visibility "
        "and redelivery semantics; sqs: an Amazon SQS queue through an aws connection. "
        "Default memory.",
    )
    queue: str | None = Field(
        default=None,
        description="The SQS queue (backend: sqs, required): its name in the connection's "
        "account and region, or its URL.",
    )
    connection: ServiceName | None = Field(
        default=None,
        description="The aws connection to use (backend: sqs, required): a connections: entry "
        "of type aws, or a type: cloud service.",
    )
    fifo: bool = Field(
        default=False,
        description="A FIFO queue (backend: memory): order within a message group, one group "
        "member in flight at a time, deduplication ids. Default false.",
    )
    content_based_deduplication: bool = Field(
        default=False,
        description="FIFO queues (backend: memory): a message sent without a deduplication id "
        "is deduplicated by the SHA-256 of its body. Default false (the id is required).",
    )
    visibility_timeout: DurationSeconds = Field(
        default=30.0,
        le=_TWELVE_HOURS,
        description="How long a received message stays invisible when the receiver does not "
        "say (backend: memory; at most 12h). Default 30s.",
    )
    max_receive_count: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Receives after which a message not acked moves to the dead_letter queue "
        "instead of being delivered again (backend: memory; 1-1000, with dead_letter). "
        "Default null: delivered again forever.",
    )
    dead_letter: ServiceName | None = Field(
        default=None,
        description="The queue service (type: queue, backend: memory) that takes messages "
        "received max_receive_count times (backend: memory, with max_receive_count).",
    )
    max_messages: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Most messages the queue holds (visible, delayed and in flight); a Send "
        "beyond it fails with RESOURCE_EXHAUSTED (backend: memory; 1-10000000). "
        "Default 100000.",
    )
    message_retention: DurationSeconds = Field(
        default=4 * 24 * 3600.0,
        ge=60.0,
        le=_FOURTEEN_DAYS,
        description="A message not acked this long after it was sent is deleted (backend: "
        "memory; 1m-14d, as SQS). Default 4d.",
    )

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        if value is not None and not (_QUEUE_NAME.fullmatch(value) or _QUEUE_URL.fullmatch(value)):
            raise PydanticCustomError(
                "queue_name",
                "{queue} is neither an SQS queue name (1-80 letters, digits, '_' and '-', "
                "a FIFO queue's ending in .fifo) nor a queue URL",
                {"queue": repr(value)},
            )
        return value

    @model_validator(mode="after")
    def _settings_match_backend(self) -> QueueServiceConfig:
        backend_settings_hold(
            self,
            self.backend,
            {"sqs": _SQS_ONLY, "memory": _MEMORY_ONLY},
            required=("connection", "queue") if self.backend == "sqs" else (),
            why="connection names an aws connection (a connections: entry of type aws, or a "
            "type: cloud service), queue the queue's name or URL",
        )
        if (self.max_receive_count is None) != (self.dead_letter is None):
            raise PydanticCustomError(
                "dead_letter_pair",
                "max_receive_count and dead_letter go together: after max_receive_count "
                "receives a message moves to the dead_letter queue",
            )
        if self.content_based_deduplication and not self.fifo:
            raise PydanticCustomError(
                "fifo_only", "content_based_deduplication applies to fifo queues only"
            )
        request = self.timeouts.request if self.timeouts is not None else None
        if request is not None and request <= LONGEST_POLL:
            raise PydanticCustomError(
                "poll_longer_than_timeout",
                "timeouts.request must exceed 20s for a queue: one long-polling fetch waits "
                "up to 20s",
            )
        return self
