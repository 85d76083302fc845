"""`RedisStreams`: reliable topics (`ReliablePubSub`) on Redis Streams, at-least-once.

Layout in Redis, for a topic `orders` and `key_prefix` `app:`:

- `app:orders`: the stream; `XADD ... MAXLEN ~ max_stream_length` appends each message;
- one consumer group per subscribing group name (`XGROUP CREATE ... 0 MKSTREAM`), whose
  pending entries list (PEL) holds every delivered, unacknowledged message with its
  consumer, idle time and delivery count;
- `app:orders:dlq`: the dead letters, each a copy of the entry plus `dead.*` fields.

Nothing of a consumer's progress lives in the sidecar: a sidecar killed at any instant
loses nothing, because a delivered message leaves the PEL only through XACK (acknowledge),
or through the atomic move to the dead letters. What the sidecar keeps is only which
messages each open subscription holds, to bound them (`max_in_flight`).

`with_reliable_topics` joins a plain `PubSubBackend` and a `RedisStreams` into one backend
(`joined.ReliableBroker`), which is what the registry builds for `backend: redis`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from sidecar.backends.pubsub._streams_consumer import StreamConsumer
from sidecar.backends.pubsub._streams_ops import StreamOps
from sidecar.backends.pubsub.base import PubSubBackend
from sidecar.backends.pubsub.joined import ReliableBroker
from sidecar.backends.pubsub.reliable import (
    DeadLetter,
    Outgoing,
    ReliableBatches,
    ReliablePubSub,
    ReliableSubscription,
    ReplayOutcome,
)
from sidecar.errors import Unavailable

__all__ = ["RedisStreams", "with_reliable_topics"]


class RedisStreams(ReliablePubSub, ReliableBatches):
    """Reliable topics on Redis Streams.

    Args:
        client: a `redis.asyncio.Redis` that returns bytes (no `decode_responses`); the
            caller owns it and closes it after `close`.
        name: the service name, reported as `target` in errors.
        key_prefix: prepended to every stream key, so apps can share one Redis.
        max_stream_length: entries kept per topic, and per dead-letter stream
            (approximately). A message trimmed before it is acknowledged is lost: size it
            above the largest backlog you expect.
        visibility_timeout: seconds a delivered message may stay unacknowledged before it is
            delivered again (to any consumer of the group).
        max_deliveries: deliveries after which an unacknowledged message, once its
            visibility timeout passes, moves to the dead letters instead.
        wall_clock: seconds since the epoch (tests may inject one).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        name: str = "pubsub",
        key_prefix: str = "",
        max_stream_length: int = 100_000,
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if visibility_timeout <= 0 or max_deliveries < 1 or max_stream_length < 1:
            raise ValueError("visibility_timeout, max_deliveries and max_stream_length must be > 0")
        self._visibility_timeout = visibility_timeout
        self._ops = StreamOps(
            client,
            name=name,
            key_prefix=key_prefix,
            max_len=max_stream_length,
            max_deliveries=max_deliveries,
            block_seconds=min(max(visibility_timeout / 4, 0.05), 5.0),
            wall_clock=wall_clock,
        )
        self._consumers: dict[StreamConsumer, None] = {}
        self._closed = False

    async def publish_reliable(
        self, topic: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> str:
        self._check_open()
        return await self._ops.append(topic, payload, metadata)

    async def publish_reliable_batch(self, messages: Sequence[Outgoing]) -> list[str]:
        self._check_open()
        return await self._ops.append_many(messages)

    async def consume(
        self, topics: Sequence[str], group: str, consumer: str | None, *, max_in_flight: int
    ) -> ReliableSubscription:
        self._check_open()
        if not topics or not group:
            raise ValueError("consume needs at least one topic and a group")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        await self._ops.ensure_groups(topics, group)
        subscription = StreamConsumer(
            self._ops,
            topics,
            group,
            consumer or f"sidecar-{uuid.uuid4().hex[:16]}",
            max_in_flight=max_in_flight,
            visibility_timeout=self._visibility_timeout,
            on_close=self._forget,
            leave_on_close=not consumer,
        )
        self._consumers[subscription] = None
        return subscription

    async def acknowledge(self, topic: str, group: str, message_ids: Sequence[str]) -> int:
        self._check_open()
        if not message_ids:
            return 0
        acknowledged = await self._ops.acknowledge(topic, group, message_ids)
        for subscription in list(self._consumers):
            if subscription.group == group and topic in subscription.topics:
                subscription.settle(topic, message_ids)
        return acknowledged

    async def read_dead_letters(
        self, topic: str, *, after: str | None, count: int
    ) -> list[DeadLetter]:
        self._check_open()
        return await self._ops.dead_letters(topic, after, count)

    async def replay_dead_letters(
        self, topic: str, dead_letter_ids: Sequence[str] | None, *, limit: int
    ) -> ReplayOutcome:
        self._check_open()
        return await self._ops.replay(topic, dead_letter_ids, limit)

    async def ping(self) -> None:
        """Return if Redis answers PING, else raise `Unavailable`."""
        self._check_open()
        await self._ops.ping()

    async def close(self) -> None:
        """End every open consumer (their messages stay pending) and the read pool."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._consumers):
            await subscription.close()
        await self._ops.close()

    def consumer_count(self) -> int:
        """Consumers currently open through this backend."""
        return len(self._consumers)

    def dead_lettered_total(self) -> int:
        """Messages this backend has moved to the dead letters since it was built."""
        return self._ops.dead_lettered

    def _forget(self, subscription: StreamConsumer) -> None:
        self._consumers.pop(subscription, None)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the reliable-topic backend is closed", reason="BACKEND_CLOSED")


def with_reliable_topics(
    plain: PubSubBackend,
    client: aioredis.Redis,
    settings: Any,
    *,
    name: str = "pubsub",
) -> PubSubBackend:
    """`plain`, joined with reliable topics on the same Redis client when `settings` (a
    `PubSubServiceConfig`) names any `reliable_topics`; else `plain` itself.

    The registry's factory for `("pubsub", "redis")` wraps its plain Redis broker with this;
    `name` is the service name errors report as `target`.
    """
    if not getattr(settings, "reliable_topics", ()):
        return plain
    streams = RedisStreams(
        client,
        name=name,
        key_prefix=settings.key_prefix,
        max_stream_length=settings.max_stream_length,
        visibility_timeout=settings.visibility_timeout,
        max_deliveries=settings.max_deliveries,
    )
    return ReliableBroker(plain, streams)
