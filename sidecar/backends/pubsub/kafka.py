"""`KafkaBroker`: the pub/sub capability on a Kafka-protocol cluster (plain channels and
reliable topics).

Plain channels are topics (see `connections.kafka.topic_name` for the name mapping), read by
one shared group-less consumer (`_kafka_reader.PlainReader`) that starts each subscribed
topic at its end offsets, so a subscription receives exactly what is published after
`subscribe` returns; globs are matched locally over every topic under the connection's
prefix. `publish` returns once the broker has the message (acks=all) and counts this
sidecar's own matching subscriptions: Kafka does not know who else will read it.

Metadata travels as Kafka record headers, and `published_at` is the record's timestamp, so
programs using Kafka directly read and write the same messages.

Reliable topics (`reliable_topics`) are consumer groups on the same topics; see
`_kafka_reliable`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from sidecar.backends.pubsub._fanout import LocalFanout
from sidecar.backends.pubsub._kafka_reader import ALL_TOPICS, PlainReader
from sidecar.backends.pubsub._kafka_reliable import KafkaReliable
from sidecar.backends.pubsub.base import (
    PubSubBackend,
    Subscription,
    compile_glob,
    subscription_targets,
)
from sidecar.backends.pubsub.buffered import BufferedSubscription
from sidecar.backends.pubsub.reliable import (
    DeadLetter,
    ReliablePubSub,
    ReliableSubscription,
    ReplayOutcome,
)
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import PubSubServiceConfig
from sidecar.connections.kafka import KafkaConnection
from sidecar.errors import Unavailable

__all__ = ["SPEC", "KafkaBroker", "headers_of"]


def headers_of(metadata: Mapping[str, str] | None) -> list[tuple[str, bytes]]:
    """Kafka record headers carrying `metadata`."""
    return [(key, value.encode()) for key, value in (metadata or {}).items()]


class KafkaBroker(PubSubBackend, ReliablePubSub):
    """Plain channels and reliable topics on one Kafka connection.

    Args:
        connection: the Kafka connection the service names (shared; closed by its owner).
        name: the service name, reported as `target` in errors.
        key_prefix: the service's prefix of topic names, after the connection's
            `topic_prefix` (escaped like a channel).
        visibility_timeout, max_deliveries: of reliable topics (see `KafkaReliable`).
        clock_wall: wall-clock seconds, for record timestamps.

    Usage:

        broker = KafkaBroker(connection, name="events")
        subscription = await broker.subscribe(["orders"], ["news.*"], buffer_size=256)
    """

    def __init__(
        self,
        connection: KafkaConnection,
        *,
        name: str,
        key_prefix: str = "",
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        clock_wall: Callable[[], float] = time.time,
    ) -> None:
        self._connection = connection
        self._names = connection.names(key_prefix)
        self._name = name
        self._clock_wall = clock_wall
        self._fanout = LocalFanout(
            lambda is_pattern, key: ALL_TOPICS if is_pattern else self._names.topic(key)
        )
        self._reader = PlainReader(connection, self._names, self._fanout)
        self.reliable = KafkaReliable(
            connection,
            name=name,
            key_prefix=key_prefix,
            visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries,
            clock_wall=clock_wall,
        )
        self._closed = False

    async def publish(
        self, channel: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> int:
        self._check_open()
        topic = self._names.topic(channel)
        await self._connection.ensure_topic(topic)
        if self._reader.is_new(topic) and any(
            compile_glob(glob.pattern).matches(channel)
            for subscription in self._fanout.subscriptions
            for glob in subscription.patterns
        ):
            await self._reader.adopt(topic)
        producer = await self._connection.producer()
        with self._connection.errors:
            await producer.send_and_wait(
                topic,
                value=bytes(payload),
                headers=headers_of(metadata),
                timestamp_ms=round(self._clock_wall() * 1000),
            )
        return self._fanout.count(channel)

    async def subscribe(
        self, channels: Sequence[str], patterns: Sequence[str], *, buffer_size: int
    ) -> Subscription:
        self._check_open()
        unique_channels, unique_patterns = subscription_targets(channels, patterns, buffer_size)
        for channel in unique_channels:
            self._names.topic(channel)  # a name Kafka cannot take is refused here
        subscription = BufferedSubscription(
            unique_channels,
            tuple(compile_glob(pattern) for pattern in unique_patterns),
            buffer_size,
            self._unregister,
        )
        added = self._fanout.add(subscription)
        if added:
            try:
                await self._reader.update()
            except BaseException:
                subscription.close_now()
                raise
        return subscription

    async def sync(self) -> None:
        """Wait until every message already published on the subscribed topics is in the
        subscriptions' buffers (for tests and orderly hand-offs)."""
        self._check_open()
        await self._reader.sync()

    async def ping(self) -> None:
        self._check_open()
        await self._connection.ping()

    def subscriber_count(self) -> int:
        return len(self._fanout.subscriptions) + self.reliable.consumer_count()

    def dead_lettered_total(self) -> int:
        """Messages the reliable topics moved to the dead letters since they were built."""
        return self.reliable.dead_lettered_total()

    async def publish_reliable(
        self,
        topic: str,
        payload: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        ordering_key: str | None = None,
    ) -> str:
        self._check_open()
        return await self.reliable.publish_reliable(
            topic, payload, metadata, ordering_key=ordering_key
        )

    async def consume(
        self, topics: Sequence[str], group: str, consumer: str | None, *, max_in_flight: int
    ) -> ReliableSubscription:
        self._check_open()
        return await self.reliable.consume(topics, group, consumer, max_in_flight=max_in_flight)

    async def acknowledge(self, topic: str, group: str, message_ids: Sequence[str]) -> int:
        self._check_open()
        return await self.reliable.acknowledge(topic, group, message_ids)

    async def read_dead_letters(
        self, topic: str, *, after: str | None, count: int
    ) -> list[DeadLetter]:
        self._check_open()
        return await self.reliable.read_dead_letters(topic, after=after, count=count)

    async def replay_dead_letters(
        self, topic: str, dead_letter_ids: Sequence[str] | None, *, limit: int
    ) -> ReplayOutcome:
        self._check_open()
        return await self.reliable.replay_dead_letters(topic, dead_letter_ids, limit=limit)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.close_all()
        try:
            await self.reliable.close()
        finally:
            await self._reader.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                "the Kafka broker is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )

    def _unregister(self, subscription: BufferedSubscription) -> None:
        # Topics no longer wanted stay assigned until the next subscribe: the reader's
        # fan-out finds no listener for them, and reassigning here would need an await.
        self._fanout.remove(subscription)


def _build(context: BuildContext[PubSubServiceConfig]) -> KafkaBroker:
    connection = context.connection
    assert isinstance(connection, KafkaConnection)
    settings = context.settings
    return KafkaBroker(
        connection,
        name=context.name,
        key_prefix=settings.key_prefix,
        visibility_timeout=settings.visibility_timeout,
        max_deliveries=settings.max_deliveries,
    )


SPEC = BackendSpec(
    type="pubsub",
    backend="kafka",
    settings=PubSubServiceConfig,
    build=_build,
    connection_type="kafka",
    features=frozenset({"reliable", "patterns", "ordering_keys"}),
)
