"""`RabbitMqReliable`: reliable topics (`ReliablePubSub`) on RabbitMQ quorum queues.

Layout on the broker, for a topic `orders`, a group `billing` and `key_prefix` `app.`:

- `sidecar.reliable` (direct exchange): `publish_reliable` sends each message there with
  routing key `app.orders`, persistent, with publisher confirms: it returns once the
  broker has written it to every group's queue (a quorum queue confirms once a majority
  of its replicas has it);
- `app.orders.group.billing` (quorum queue, bound with `app.orders`): one per group, so
  every group gets every message and the group's consumers share it (competing
  consumers). `x-max-length` is `max_stream_length` (oldest dropped);
- `app.orders.unclaimed` (quorum queue): messages published while the topic has no group
  at all land here (the alternate exchange `sidecar.unrouted`), and the first group created
  takes them over, so nothing published before the first consumer is lost. A group created
  later starts with the messages published after it.
- `app.orders.dlq` (quorum queue, bound to `sidecar.dead` with `app.orders.dlq`): the dead
  letters, each a copy of the message with `sidecar-dead-*` headers.

Each consumer is one channel with `prefetch = max_in_flight`, consuming its group's queues.
The visibility timeout is the sidecar's: a message held unacknowledged that long is
returned (`nack`, requeue) and the broker delivers it again, to any consumer of the group,
with `x-delivery-count` one higher. A message whose timeout passes on its
`max_deliveries`-th delivery is copied to the dead letters (confirmed) and acked instead.
The queues also carry `x-delivery-limit` (the broker's own count, including deliveries cut
short by a crash) and a dead-letter exchange, so a message that keeps killing consumers
still ends in the dead letters without the sidecar's help.

Acknowledgements are per delivery (delivery tags live on the channel that received the
message): `acknowledge` acks what this sidecar's open consumers hold; an id it does not hold
(already acked, returned after its timeout, or delivered before a reconnection) counts 0,
and the message is delivered again. Message ids are `<publish ms>-<random>`, set at publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika

from sidecar.backends.pubsub.rabbitmq import headers_of, metadata_of, routing_key
from sidecar.backends.pubsub.reliable import (
    DeadLetter,
    ReliableMessage,
    ReliableOptions,
    ReliablePubSub,
    ReliableSubscription,
    Replayed,
    ReplayOutcome,
)
from sidecar.connections.rabbitmq import RabbitMqConnection
from sidecar.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel

__all__ = ["RabbitMqReliable"]

RELIABLE = "sidecar.reliable"
UNROUTED = "sidecar.unrouted"
DEAD = "sidecar.dead"
_DEAD_TOPIC = "sidecar-dead-topic"
_DEAD_ID = "sidecar-dead-message-id"
_DEAD_GROUP = "sidecar-dead-group"
_DEAD_CONSUMER = "sidecar-dead-consumer"
_DEAD_COUNT = "sidecar-dead-delivery-count"
_DEAD_AT = "sidecar-dead-at"
_OWN = frozenset({_DEAD_TOPIC, _DEAD_ID, _DEAD_GROUP, _DEAD_CONSUMER, _DEAD_COUNT, _DEAD_AT})
_MAX_SCAN = 10_000
"""Dead letters read at most per ReadDeadLetters / ReplayDeadLetters call (a queue cannot
be browsed: they are taken and given back)."""


def new_id(now: float) -> str:
    """A message id in the `<ms>-<seq>` shape every reliable backend answers with."""
    return f"{int(now * 1000)}-{secrets.randbits(60)}"


def _order(message_id: str) -> tuple[int, int]:
    millis, _, rest = message_id.partition("-")
    return int(millis or 0), int(rest or 0)


@dataclass
class _Held:
    """A delivery this sidecar holds unacknowledged."""

    message: AbstractIncomingMessage
    delivered: ReliableMessage
    group: str
    timer: asyncio.TimerHandle


class RabbitMqReliable(ReliablePubSub):
    """Reliable topics on RabbitMQ; see the module docstring.

    Args:
        connection: the rabbitmq connection (shared; closed by its owner).
        options: the service's reliable-topic settings (`ReliableOptions`).
        wall_clock: seconds since the epoch.
    """

    def __init__(
        self,
        connection: RabbitMqConnection,
        options: ReliableOptions,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self._errors = connection.errors
        self._name = options.name
        self._prefix = options.key_prefix
        self._max_length = options.max_length
        self.visibility_timeout = options.visibility_timeout
        self.max_deliveries = options.max_deliveries
        self.wall_clock = wall_clock
        self.dead_lettered = 0
        self._publisher: AbstractRobustChannel | None = None
        self._opening = asyncio.Lock()
        self._topics: set[str] = set()
        self._groups: set[tuple[str, str]] = set()
        self._consumers: dict[_Consumer, None] = {}
        self._closed = False

    # -- ReliablePubSub ----------------------------------------------------------------------

    async def publish_reliable(
        self, topic: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> str:
        self._check_open()
        key = self._key(topic, "topic")
        channel = await self.publisher()
        await self._ensure_topic(channel, topic)
        now = self.wall_clock()
        message_id = new_id(now)
        await self.send(
            channel, RELIABLE, key, bytes(payload), headers_of(metadata, now), message_id
        )
        return message_id

    async def consume(
        self, topics: Sequence[str], group: str, consumer: str | None, *, max_in_flight: int
    ) -> ReliableSubscription:
        self._check_open()
        if not topics or not group:
            raise ValueError("consume needs at least one topic and a group")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        topics = list(dict.fromkeys(topics))
        for i, topic in enumerate(topics):
            self._key(topic, f"channels[{i}]", suffix=f".group.{group}")
        publisher = await self.publisher()
        for topic in topics:
            await self._ensure_topic(publisher, topic)
            await self._ensure_group(publisher, topic, group)
        channel = await self.connection.channel(confirms=False, prefetch=max_in_flight)
        subscription = _Consumer(self, channel, topics, group, consumer or _generated())
        try:
            await subscription.start()
        except BaseException:
            await subscription.close()
            raise
        self._consumers[subscription] = None
        return subscription

    async def acknowledge(self, topic: str, group: str, message_ids: Sequence[str]) -> int:
        self._check_open()
        acknowledged = 0
        for subscription in list(self._consumers):
            if subscription.group == group and topic in subscription.topics:
                acknowledged += await subscription.settle(topic, message_ids)
        return acknowledged

    async def read_dead_letters(
        self, topic: str, *, after: str | None, count: int
    ) -> list[DeadLetter]:
        self._check_open()
        async with self._dead_letters(topic) as taken:
            letters = sorted(
                (self._dead_letter(topic, message) for message in taken),
                key=lambda letter: (letter.dead_lettered_at, letter.dead_letter_id),
            )
        # Every taken message went back when the channel closed, maybe reordered: the page
        # order is the time they died.
        if after is not None:
            ids = [letter.dead_letter_id for letter in letters]
            if after in ids:
                letters = letters[ids.index(after) + 1 :]
            else:  # `after` was replayed meanwhile: what died after its time
                letters = [d for d in letters if _order(d.dead_letter_id)[0] > _order(after)[0]]
        return letters[:count]

    async def replay_dead_letters(
        self, topic: str, dead_letter_ids: Sequence[str] | None, *, limit: int
    ) -> ReplayOutcome:
        self._check_open()
        wanted = None if dead_letter_ids is None else dict.fromkeys(dead_letter_ids)
        replayed: list[Replayed] = []
        publisher = await self.publisher()
        key = self._key(topic, "topic")
        async with self._dead_letters(topic) as taken:
            letters = [(self._dead_letter(topic, message), message) for message in taken]
            letters.sort(key=lambda pair: (pair[0].dead_lettered_at, pair[0].dead_letter_id))
            for letter, message in letters:
                if len(replayed) >= limit:
                    break
                if wanted is not None and letter.dead_letter_id not in wanted:
                    continue
                now = self.wall_clock()
                message_id = new_id(now)
                headers = headers_of(letter.metadata, letter.published_at)
                await self.send(publisher, RELIABLE, key, letter.payload, headers, message_id)
                with self._errors:
                    await message.ack()
                replayed.append(Replayed(letter.dead_letter_id, message_id))
                if wanted is not None:
                    wanted.pop(letter.dead_letter_id, None)
        remaining = await self._queue_length(self.dead_queue(topic))
        return ReplayOutcome(tuple(replayed), tuple(wanted or ()), remaining)

    async def ping(self) -> None:
        self._check_open()
        await self.connection.ping()

    async def close(self) -> None:
        """Close every consumer (what they hold goes back to the queues) and the publisher."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._consumers):
            await subscription.close()
        publisher, self._publisher = self._publisher, None
        if publisher is not None and not publisher.is_closed:
            with contextlib.suppress(Unavailable), self._errors:
                await publisher.close()

    def consumer_count(self) -> int:
        """Consumers currently open through this backend."""
        return len(self._consumers)

    def dead_lettered_total(self) -> int:
        """Messages this backend has moved to the dead letters since it was built."""
        return self.dead_lettered

    def declared_queues(self) -> list[str]:
        """The queues this backend declared (for operators and tests that clean up)."""
        names = [f"{self._prefix}{topic}.unclaimed" for topic in self._topics]
        names += [self.dead_queue(topic) for topic in self._topics]
        return names + [self.group_queue(topic, group) for topic, group in self._groups]

    # -- names and topology ------------------------------------------------------------------

    def group_queue(self, topic: str, group: str) -> str:
        return f"{self._prefix}{topic}.group.{group}"

    def dead_queue(self, topic: str) -> str:
        return f"{self._prefix}{topic}.dlq"

    def _key(self, name: str, field: str, *, suffix: str = ".unclaimed") -> str:
        """The routing key of topic `name`, checked: not a dead-letter name, and short enough
        for the queue names made from it (`suffix` the longest)."""
        if name.endswith(".dlq"):
            raise InvalidArgument(
                f"{field}: the suffix '.dlq' is reserved for dead letters",
                reason="INVALID_REQUEST",
                metadata={"field": field},
            )
        return routing_key(self._prefix, name, field, suffix=suffix)

    async def publisher(self) -> AbstractRobustChannel:
        """The confirming channel publishes and topology go through (opened once)."""
        if self._publisher is None:
            async with self._opening:
                if self._publisher is None:
                    self._publisher = await self._declare_exchanges()
        if not self.connection.connected:
            raise Unavailable(
                "the connection to RabbitMQ is down; it is reconnecting",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self._name},
            )
        return self._publisher

    async def _declare_exchanges(self) -> AbstractRobustChannel:
        channel = await self.connection.channel(confirms=True)
        direct = aio_pika.ExchangeType.DIRECT
        with self._errors:
            await channel.declare_exchange(UNROUTED, direct, durable=True)
            await channel.declare_exchange(DEAD, direct, durable=True)
            await channel.declare_exchange(
                RELIABLE, direct, durable=True, arguments={"alternate-exchange": UNROUTED}
            )
        return channel

    async def _quorum(
        self, channel: AbstractRobustChannel, name: str, **arguments: Any
    ) -> AbstractQueue:
        with self._errors:
            return await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "quorum", **arguments}
            )

    async def _ensure_topic(self, channel: AbstractRobustChannel, topic: str) -> None:
        """The topic's unclaimed and dead-letter queues (once per process)."""
        if topic in self._topics:
            return
        key = self._prefix + topic
        unclaimed = await self._quorum(channel, f"{key}.unclaimed")
        dead = await self._quorum(channel, self.dead_queue(topic))
        with self._errors:
            await unclaimed.bind(UNROUTED, routing_key=key)
            await dead.bind(DEAD, routing_key=self.dead_queue(topic))
        self._topics.add(topic)

    async def _ensure_group(self, channel: AbstractRobustChannel, topic: str, group: str) -> None:
        """The group's queue, bound to the topic; the first group takes the unclaimed ones."""
        if (topic, group) in self._groups:
            return
        key = self._prefix + topic
        queue = await self._quorum(
            channel,
            self.group_queue(topic, group),
            **{
                "x-max-length": self._max_length,
                "x-delivery-limit": self.max_deliveries,
                "x-dead-letter-exchange": DEAD,
                "x-dead-letter-routing-key": self.dead_queue(topic),
            },
        )
        with self._errors:
            await queue.bind(RELIABLE, routing_key=key)
            unclaimed = await channel.declare_queue(f"{key}.unclaimed", passive=True)
            while (message := await unclaimed.get(no_ack=False, fail=False)) is not None:
                await channel.default_exchange.publish(
                    _copy(message), routing_key=queue.name, mandatory=True
                )
                await message.ack()
        self._groups.add((topic, group))

    async def send(
        self,
        channel: AbstractRobustChannel,
        exchange: str,
        key: str,
        body: bytes,
        headers: dict[str, Any],
        message_id: str,
    ) -> None:
        """Publish persistently and wait for the broker's confirm."""
        message = aio_pika.Message(
            body,
            headers=headers,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        with self._errors:
            target = (
                channel.default_exchange
                if not exchange
                else await channel.get_exchange(exchange, ensure=False)
            )
            await target.publish(message, routing_key=key, mandatory=False)

    async def _queue_length(self, name: str) -> int:
        channel = await self.publisher()
        with self._errors:
            declared = await channel.declare_queue(name, passive=True)
            ok = await declared.declare()
        return int(ok.message_count or 0)

    @contextlib.asynccontextmanager
    async def _dead_letters(self, topic: str) -> AsyncIterator[list[AbstractIncomingMessage]]:
        """Take up to `_MAX_SCAN` dead letters, oldest first, on a channel of their own;
        what is not acked when the block ends goes back when the channel closes."""
        await self._ensure_topic(await self.publisher(), topic)
        channel = await self.connection.channel(confirms=False)
        taken: list[AbstractIncomingMessage] = []
        try:
            with self._errors:
                queue = await channel.declare_queue(self.dead_queue(topic), passive=True)
                while len(taken) < _MAX_SCAN:
                    message = await queue.get(no_ack=False, fail=False)
                    if message is None:
                        break
                    taken.append(message)
            yield taken
        finally:
            with contextlib.suppress(Unavailable), self._errors:
                await channel.close()

    def _dead_letter(self, topic: str, message: AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers or {}
        metadata, published_at = metadata_of(message, self.wall_clock(), own=_OWN)

        def text(key: str, default: str = "") -> str:
            value = headers.get(key, default)
            return value.decode() if isinstance(value, bytes) else str(value)

        deaths = headers.get("x-death")
        death = deaths[0] if isinstance(deaths, list) and deaths else {}
        group_queue = str(death.get("queue", "")) if isinstance(death, dict) else ""
        dead_at = float(text(_DEAD_AT, "0")) or published_at
        return DeadLetter(
            dead_letter_id=message.message_id or new_id(dead_at),
            topic=topic,
            message_id=text(_DEAD_ID) or (message.message_id or ""),
            payload=message.body,
            metadata=metadata,
            published_at=published_at,
            delivery_count=int(text(_DEAD_COUNT, "0")) or self.max_deliveries,
            group=text(_DEAD_GROUP) or group_queue.rpartition(".group.")[2],
            consumer=text(_DEAD_CONSUMER),
            dead_lettered_at=dead_at,
        )

    def forget(self, subscription: _Consumer) -> None:
        self._consumers.pop(subscription, None)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                "the reliable-topic backend is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )


def _bytes_prefix(text: str, size: int) -> str:
    """At most `size` UTF-8 bytes of `text`, cut on a character boundary."""
    return text.encode()[:size].decode(errors="ignore")


def _generated() -> str:
    return f"sidecar-{uuid.uuid4().hex[:16]}"


def _copy(message: AbstractIncomingMessage) -> Any:
    return aio_pika.Message(
        message.body,
        headers=dict(message.headers or {}),
        message_id=message.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _stale(held: _Held) -> bool:
    """Whether the delivery came on a channel that has closed since (a dropped link): its
    tag is void, and the broker has put the message back in its queue."""
    try:
        held.message.channel  # noqa: B018 (raises once that channel is closed)
    except Exception:  # aio-pika's ChannelInvalidStateError
        return True
    return False


class _Consumer(ReliableSubscription):
    """One consumer of a group: a channel consuming the group's queues; see the module
    docstring for acknowledgements and the visibility timeout."""

    def __init__(
        self,
        backend: RabbitMqReliable,
        channel: AbstractRobustChannel,
        topics: list[str],
        group: str,
        consumer: str,
    ) -> None:
        self._backend = backend
        self._channel = channel
        self.topics = topics
        self.group = group
        self._consumer = consumer
        self._arrived: asyncio.Queue[ReliableMessage | None] = asyncio.Queue()
        self._held: dict[tuple[str, str], _Held] = {}
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def consumer(self) -> str:
        return self._consumer

    async def start(self) -> None:
        for topic in self.topics:
            with self._backend_connection().errors:
                queue = await self._channel.declare_queue(
                    self._backend.group_queue(topic, self.group), passive=True
                )
                await queue.consume(
                    functools.partial(self._received, topic),
                    # A tag is an AMQP short string: at most 255 bytes.
                    consumer_tag=f"{_bytes_prefix(self._consumer, 200)}.{uuid.uuid4().hex[:8]}",
                )

    def _backend_connection(self) -> RabbitMqConnection:
        return self._backend.connection

    def __aiter__(self) -> AsyncIterator[ReliableMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[ReliableMessage]:
        try:
            while not self._closed:
                message = await self._arrived.get()
                if message is None:
                    return
                held = self._held.get((message.topic, message.message_id))
                if held is not None and held.delivered is message and not _stale(held):
                    yield message  # else settled, expired, or void since a reconnection
        finally:
            await asyncio.shield(self.close())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._backend.forget(self)
        for held in self._held.values():
            held.timer.cancel()
        self._held.clear()
        self._arrived.put_nowait(None)
        if not self._channel.is_closed:
            # Closing the channel gives back every unacknowledged delivery at once.
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def settle(self, topic: str, message_ids: Sequence[str]) -> int:
        """Ack the deliveries of `message_ids` this consumer holds; how many it held."""
        settled = 0
        for message_id in message_ids:
            held = self._held.pop((topic, message_id), None)
            if held is None:
                continue
            held.timer.cancel()
            if _stale(held):
                continue  # back in its queue since the link dropped: delivered again
            with self._backend_connection().errors:
                await held.message.ack()
            settled += 1
        return settled

    async def _received(self, topic: str, message: AbstractIncomingMessage) -> None:
        for key, held in list(self._held.items()):
            if _stale(held):  # the link dropped since: the broker has it back already
                held.timer.cancel()
                del self._held[key]
        backend = self._backend
        metadata, published_at = metadata_of(message, backend.wall_clock())
        count = int(str((message.headers or {}).get("x-delivery-count", 0) or 0)) + 1
        delivered = ReliableMessage(
            topic=topic,
            message_id=message.message_id or new_id(published_at),
            payload=message.body,
            metadata=metadata,
            published_at=published_at,
            delivery_count=count,
        )
        key = (topic, delivered.message_id)
        timer = asyncio.get_running_loop().call_later(
            backend.visibility_timeout, self._expired, key
        )
        self._held[key] = _Held(message, delivered, self.group, timer)
        self._arrived.put_nowait(delivered)

    def _expired(self, key: tuple[str, str]) -> None:
        held = self._held.pop(key, None)
        if held is None or self._closed:
            return
        task = asyncio.ensure_future(self._give_up(held))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_up(self, held: _Held) -> None:
        """Return an expired delivery to the queue, or dead-letter it on its last delivery."""
        if _stale(held):
            return
        backend = self._backend
        try:
            if held.delivered.delivery_count < backend.max_deliveries:
                with self._backend_connection().errors:
                    await held.message.nack(requeue=True)
                return
            delivered = held.delivered
            now = backend.wall_clock()
            dead: dict[str, str | int | float] = {
                _DEAD_TOPIC: delivered.topic,
                _DEAD_ID: delivered.message_id,
                _DEAD_GROUP: self.group,
                _DEAD_CONSUMER: self._consumer,
                _DEAD_COUNT: delivered.delivery_count,
                _DEAD_AT: repr(now),
            }
            headers = headers_of(delivered.metadata, delivered.published_at, **dead)
            publisher = await backend.publisher()
            dead_queue = backend.dead_queue(delivered.topic)
            await backend.send(publisher, DEAD, dead_queue, delivered.payload, headers, new_id(now))
            backend.dead_lettered += 1
            with self._backend_connection().errors:
                await held.message.ack()
        except Exception:  # unacked, it returns to the queue with its channel
            return
