"""`ReliableBroker`: a plain broker and a broker's reliable topics as one pub/sub backend.

Plain channels and reliable topics are often two mechanisms of one broker (Redis pub/sub and
Redis Streams; a RabbitMQ exchange and its quorum queues; NATS core and JetStream): each
backend builds the two and this joins them, so servicers see one `PubSubBackend` that is
also a `ReliablePubSub`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidecar.backends.pubsub.base import PubSubBackend, Subscription
from sidecar.backends.pubsub.reliable import (
    DeadLetter,
    Outgoing,
    ReliableBatches,
    ReliablePubSub,
    ReliableSubscription,
    ReliableTopics,
    ReplayOutcome,
    publish_reliable_all,
)

__all__ = ["ReliableBroker"]


class ReliableBroker(PubSubBackend, ReliablePubSub, ReliableBatches):
    """One backend serving plain channels through `plain` and reliable topics through
    `streams`: servicers see a `PubSubBackend` that is also a `ReliablePubSub`.

    Closing closes `streams`, then `plain`; the Redis client is the connection's.
    """

    def __init__(
        self,
        plain: PubSubBackend,
        streams: ReliableTopics,
    ) -> None:
        self.plain = plain
        self.streams = streams

    async def publish(
        self, channel: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> int:
        return await self.plain.publish(channel, payload, metadata)

    async def subscribe(
        self, channels: Sequence[str], patterns: Sequence[str], *, buffer_size: int
    ) -> Subscription:
        return await self.plain.subscribe(channels, patterns, buffer_size=buffer_size)

    def subscriber_count(self) -> int:
        return self.plain.subscriber_count() + self.streams.consumer_count()

    def dead_lettered_total(self) -> int:
        """Messages the reliable topics moved to the dead letters since they were built."""
        return self.streams.dead_lettered_total()

    async def publish_reliable(
        self, topic: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> str:
        return await self.streams.publish_reliable(topic, payload, metadata)

    async def publish_reliable_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        return await publish_reliable_all(self.streams, messages)

    async def consume(
        self, topics: Sequence[str], group: str, consumer: str | None, *, max_in_flight: int
    ) -> ReliableSubscription:
        return await self.streams.consume(topics, group, consumer, max_in_flight=max_in_flight)

    async def acknowledge(self, topic: str, group: str, message_ids: Sequence[str]) -> int:
        return await self.streams.acknowledge(topic, group, message_ids)

    async def read_dead_letters(
        self, topic: str, *, after: str | None, count: int
    ) -> list[DeadLetter]:
        return await self.streams.read_dead_letters(topic, after=after, count=count)

    async def replay_dead_letters(
        self, topic: str, dead_letter_ids: Sequence[str] | None, *, limit: int
    ) -> ReplayOutcome:
        return await self.streams.replay_dead_letters(topic, dead_letter_ids, limit=limit)

    async def ping(self) -> None:
        await self.plain.ping()

    def features(self) -> frozenset[str]:
        return frozenset({"reliable_topics"})

    async def close(self) -> None:
        try:
            await self.streams.close()
        finally:
            await self.plain.close()
