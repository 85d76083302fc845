"""Reliable topics: the optional at-least-once side of the pub/sub capability.

Plain pub/sub (`PubSubBackend`) forgets a message once it is published. A backend that can
also keep messages until they are processed implements `ReliablePubSub`, an optional protocol
that servicers detect with `isinstance(backend, ReliablePubSub)`:

- `publish_reliable` appends to the topic's log and returns the message id;
- `consume` joins a consumer group: the group's consumers share the topic's messages, each
  message goes to one of them, and it stays pending until acknowledged;
- a message not acknowledged within the visibility timeout is delivered again, possibly to
  another consumer of the group; after `max_deliveries` it moves to the topic's dead-letter
  log instead, where `read_dead_letters` lists it and `replay_dead_letters` publishes it anew;
- a consumer that comes back under the same name first gets back what it still held.

Usage:

    subscription = await backend.consume(["orders"], "billing", None, max_in_flight=100)
    try:
        async for message in subscription:
            await handle(message.payload)
            await backend.acknowledge(message.topic, "billing", [message.message_id])
    finally:
        await subscription.close()
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from sidecar.config import PubSubServiceConfig

__all__ = [
    "DeadLetter",
    "Outgoing",
    "ReliableBatches",
    "ReliableMessage",
    "ReliableOptions",
    "ReliablePubSub",
    "ReliableSubscription",
    "ReliableTopics",
    "ReliableWithOrderingKeys",
    "ReplayOutcome",
    "Replayed",
    "publish_reliable_all",
]

Outgoing: TypeAlias = tuple[str, bytes, Mapping[str, str]]
"""One message to publish: (topic, payload, metadata)."""


@dataclass(frozen=True, slots=True)
class ReliableOptions:
    """How one service's reliable topics behave, whichever broker carries them.

    Attributes:
        name: the service name, reported as `target` in errors.
        key_prefix: prepended to every topic's name on the broker.
        max_length: messages kept per topic (or per group queue), oldest discarded beyond.
        visibility_timeout: seconds a delivery may stay unacknowledged.
        max_deliveries: deliveries after which a message goes to the dead letters.
    """

    name: str
    key_prefix: str = ""
    max_length: int = 100_000
    visibility_timeout: float = 30.0
    max_deliveries: int = 5

    def __post_init__(self) -> None:
        if self.visibility_timeout <= 0 or self.max_deliveries < 1 or self.max_length < 1:
            raise ValueError("visibility_timeout, max_deliveries and max_length must be > 0")

    @classmethod
    def of(cls, name: str, settings: PubSubServiceConfig) -> ReliableOptions:
        """The options a `type: pubsub` service's settings give its reliable topics."""
        return cls(
            name,
            settings.key_prefix,
            settings.max_stream_length,
            settings.visibility_timeout,
            settings.max_deliveries,
        )


@dataclass(frozen=True, slots=True)
class ReliableMessage:
    """One delivery of a message of a reliable topic.

    Attributes:
        topic: the topic it was published on.
        message_id: its id in the topic's log; acknowledge it with this id.
        payload: the opaque bytes published.
        metadata: string pairs published with it.
        published_at: wall-clock time of publishing, seconds since the epoch.
        delivery_count: deliveries so far, this one included (1 on the first).
    """

    topic: str
    message_id: str
    payload: bytes
    metadata: Mapping[str, str]
    published_at: float
    delivery_count: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was delivered `delivery_count` times without being acknowledged.

    Attributes:
        dead_letter_id: its id in the dead-letter log; replay it with this id.
        topic: the topic it was published on.
        message_id: its original id on the topic.
        payload, metadata, published_at: as published.
        delivery_count: deliveries it had before it was moved here.
        group: the consumer group that gave up on it.
        consumer: the consumer that held it last.
        dead_lettered_at: when it moved here, seconds since the epoch.
    """

    dead_letter_id: str
    topic: str
    message_id: str
    payload: bytes
    metadata: Mapping[str, str]
    published_at: float
    delivery_count: int
    group: str
    consumer: str
    dead_lettered_at: float


@dataclass(frozen=True, slots=True)
class Replayed:
    """A dead letter published again: its dead-letter id and its new message id."""

    dead_letter_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What `replay_dead_letters` did.

    Attributes:
        replayed: the dead letters published again, oldest first.
        not_found: named ids that were not in the dead-letter log (already replayed, trimmed).
        remaining: dead letters left in the log after this call.
    """

    replayed: tuple[Replayed, ...]
    not_found: tuple[str, ...]
    remaining: int


class ReliableSubscription(Protocol):
    """A consumer in a group: iterate it for messages; close it to leave.

    At most `max_in_flight` delivered messages are unacknowledged at a time: the iteration
    waits for acknowledgements (or for the visibility timeout to hand messages to someone
    else) before it reads more. Closing leaves unacknowledged messages pending, so they are
    delivered again: to this consumer name when it comes back, or to another consumer once
    their visibility timeout passes. Whoever consumes must close it, for example in a
    `finally`; cancelling the iterating task also closes it.
    """

    @property
    def consumer(self) -> str:
        """This consumer's name in its group (the chosen one, or a generated one)."""
        ...

    def __aiter__(self) -> AsyncIterator[ReliableMessage]:
        """Messages as they arrive; redeliveries included; ends once closed."""
        ...

    async def close(self) -> None:
        """Stop reading; unacknowledged messages stay pending. Idempotent."""
        ...


@runtime_checkable
class ReliablePubSub(Protocol):
    """At-least-once topics with consumer groups, acknowledgements and dead letters.

    Every method raises `Unavailable` when the backend cannot be reached.
    """

    async def publish_reliable(
        self, topic: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Append a message to the topic's log; return its message id."""
        ...

    async def consume(
        self, topics: Sequence[str], group: str, consumer: str | None, *, max_in_flight: int
    ) -> ReliableSubscription:
        """Join `group` on `topics` as `consumer` (None: a generated name).

        Creates the group if needed, reading the topic from its oldest kept message, so
        messages published before the group's first consumer are not lost. Returns once
        the consumer is ready; its own pending messages come first.
        """
        ...

    async def acknowledge(self, topic: str, group: str, message_ids: Sequence[str]) -> int:
        """Mark messages processed by `group`; return how many were pending until now."""
        ...

    async def read_dead_letters(
        self, topic: str, *, after: str | None, count: int
    ) -> list[DeadLetter]:
        """Up to `count` dead letters of `topic`, oldest first, after the id `after`."""
        ...

    async def replay_dead_letters(
        self, topic: str, dead_letter_ids: Sequence[str] | None, *, limit: int
    ) -> ReplayOutcome:
        """Publish dead letters again as new messages and remove them from the dead letters.

        `dead_letter_ids` names them; None replays the oldest `limit` ones.
        """
        ...


class ReliableTopics(ReliablePubSub, Protocol):
    """A reliable-topic backend that `redis_streams.ReliableBroker` joins with a plain one
    (Redis Streams, RabbitMQ quorum queues, NATS JetStream)."""

    def consumer_count(self) -> int:
        """Consumers currently open through this backend."""
        ...

    def dead_lettered_total(self) -> int:
        """Messages this backend has moved to the dead letters since it was built."""
        ...

    async def close(self) -> None:
        """End every open consumer (their messages stay pending) and the backend."""
        ...


class ReliableWithOrderingKeys(ReliablePubSub, Protocol):
    """A reliable-topic backend whose spec lists the `ordering_keys` feature: messages
    published with the same key reach the group's consumers in publish order, one at a time
    per key (Kafka: the key picks the partition)."""

    async def publish_reliable(
        self,
        topic: str,
        payload: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        ordering_key: str | None = None,
    ) -> str:
        """`ReliablePubSub.publish_reliable`, keeping the order of `ordering_key`'s messages."""
        ...


@runtime_checkable
class ReliableBatches(Protocol):
    """A reliable-topic backend that publishes many messages at once (Redis Streams: one
    pipeline of XADDs)."""

    async def publish_reliable_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        """Append every message, in order; their message ids, in the same order."""
        ...


async def publish_reliable_all(backend: ReliablePubSub, messages: Sequence[Outgoing]) -> list[str]:
    """Publish `messages` in order with the backend's batch call where it has one, else one
    after the other; their message ids, in order."""
    if isinstance(backend, ReliableBatches):
        return await backend.publish_reliable_batch(messages)
    return [await backend.publish_reliable(*message) for message in messages]
