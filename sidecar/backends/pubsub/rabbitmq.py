"""`RabbitMqBroker`: the pub/sub capability on RabbitMQ, plain channels at-most-once through
a topic exchange, reliable topics at-least-once on quorum queues (`_rabbitmq_reliable`).

Plain channels: every message is published to the durable topic exchange `sidecar.pubsub`
with the channel (after `key_prefix`) as routing key, the metadata as AMQP headers and the
publish time in the header `sidecar-published-at`. A broker holds ONE exclusive,
auto-deleted queue however many gRPC subscribers it serves; each subscribed channel and
glob becomes a binding on it (reference-counted), and every message arriving once on it is
fanned out locally (`LocalFanout`, then `BufferedSubscription`: bounded buffers, `Dropped`
events). Globs map to AMQP binding keys word by word (words split on `.`): a literal word
stays, a word holding `*`, `?`, `[` or `\\` becomes `#` (it may span dots), so the binding
matches at least what the glob matches, and the local match keeps exactly the right ones.
`subscribe` returns once the broker confirmed every binding.

`publish` returns the deliveries it makes to this sidecar's own subscriptions: RabbitMQ does
not report receivers, so subscribers of other sidecars (or plain AMQP clients) on the same
exchange are not counted. Routing keys are at most 255 bytes (AMQP), prefix included.

If the link drops, the connection reconnects and restores the queue, its bindings and its
consumer; open subscriptions stay open and miss only what was published meanwhile.
While it is down, `subscribe` and `publish` fail at once with `Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import aio_pika

from sidecar.backends.pubsub._fanout import LocalFanout
from sidecar.backends.pubsub.base import (
    PubSubBackend,
    Subscription,
    compile_glob,
    subscription_targets,
)
from sidecar.backends.pubsub.buffered import BufferedSubscription
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import PubSubServiceConfig
from sidecar.connections.rabbitmq import RabbitMqConnection
from sidecar.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustChannel,
    )

__all__ = ["EXCHANGE", "PUBLISHED_AT", "SPEC", "RabbitMqBroker", "binding_key", "headers_of"]

EXCHANGE = "sidecar.pubsub"
PUBLISHED_AT = "sidecar-published-at"
_SYNC = "sidecar-sync"
_MAX_ROUTING_KEY = 255
_BROKER_HEADERS = frozenset(
    {"x-death", "x-delivery-count"}
    | {
        f"x-{when}-death-{what}"
        for when in ("first", "last")
        for what in ("exchange", "queue", "reason")
    }
)
"""Headers RabbitMQ itself sets on redelivered and dead-lettered messages: not metadata."""
_GLOB_CHARS = frozenset("*?[\\")


def binding_key(is_pattern: bool, name: str) -> str:
    """The AMQP topic binding key matching at least what the channel or glob matches."""
    if not is_pattern:
        return name
    words: list[str] = []
    for word in name.split("."):
        wide = "#" if _GLOB_CHARS & set(word) else word
        if not (wide == "#" and words and words[-1] == "#"):
            words.append(wide)
    return ".".join(words)


def headers_of(
    metadata: Mapping[str, str] | None, published_at: float, **more: str | int | float
) -> dict[str, Any]:
    """The AMQP headers carrying metadata, the publish time and the sidecar's own fields."""
    return {**(metadata or {}), PUBLISHED_AT: repr(published_at), **more}


def routing_key(prefix: str, name: str, field: str, *, suffix: str = "") -> str:
    """`prefix + name`, checked against AMQP's 255-byte limit on routing keys and queue
    names (with `suffix`, the longest the name is given in a queue name)."""
    key = prefix + name
    if len((key + suffix).encode()) > _MAX_ROUTING_KEY:
        raise InvalidArgument(
            f"{field} is too long for RabbitMQ: at most {_MAX_ROUTING_KEY} bytes with the "
            f"key prefix{' and the suffix ' + repr(suffix) if suffix else ''}",
            reason="INVALID_REQUEST",
            metadata={"field": field},
        )
    return key


def metadata_of(
    message: AbstractIncomingMessage, received_at: float, *, own: frozenset[str] = frozenset()
) -> tuple[Mapping[str, str], float]:
    """(read-only metadata, published_at) of an arrived message: its string headers except
    the sidecar's own fields; the time of receipt when it carries no publish time."""
    metadata: dict[str, str] = {}
    published_at = received_at
    for key, value in (message.headers or {}).items():
        if key == PUBLISHED_AT:
            with contextlib.suppress(ValueError):  # not the sidecar's: the time of receipt
                published_at = float(str(value.decode() if isinstance(value, bytes) else value))
        elif key not in own and key not in _BROKER_HEADERS:
            metadata[key] = value.decode() if isinstance(value, bytes) else str(value)
    return MappingProxyType(metadata), published_at


class RabbitMqBroker(PubSubBackend):
    """Plain pub/sub on RabbitMQ; see the module docstring.

    Args:
        connection: the rabbitmq connection the service names (shared; closed by its owner).
        name: the service name, reported as `target` in errors.
        key_prefix: prepended to every routing key.
        clock_wall: wall-clock seconds, for `published_at`.
    """

    def __init__(
        self,
        connection: RabbitMqConnection,
        *,
        name: str,
        key_prefix: str = "",
        clock_wall: Callable[[], float] = time.time,
    ) -> None:
        self._connection = connection
        self._name = name
        self._prefix = key_prefix
        self._clock_wall = clock_wall
        self._fanout = LocalFanout(
            lambda is_pattern, key: binding_key(is_pattern, key_prefix + key)
        )
        self._queue_name = f"sidecar.pubsub.{name}.{uuid.uuid4().hex[:12]}"
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None
        self._setup = asyncio.Lock()
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._bindings: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._closed = False

    async def publish(
        self, channel: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> int:
        self._check_open()
        key = routing_key(self._prefix, channel, "channel")
        exchange = await self._ready()
        local = self._fanout.count(channel)
        await self._send(exchange, key, bytes(payload), headers_of(metadata, self._clock_wall()))
        return local

    async def subscribe(
        self, channels: Sequence[str], patterns: Sequence[str], *, buffer_size: int
    ) -> Subscription:
        self._check_open()
        unique_channels, unique_patterns = subscription_targets(channels, patterns, buffer_size)
        for i, channel in enumerate(unique_channels):
            routing_key(self._prefix, channel, f"channels[{i}]")
        queue = await self._listening()
        subscription = BufferedSubscription(
            unique_channels,
            tuple(compile_glob(pattern) for pattern in unique_patterns),
            buffer_size,
            self._unregister,
        )
        try:
            for key in self._fanout.add(subscription):
                self._bindings[key] = asyncio.ensure_future(self._bind(queue, key))
            # Wait for every binding this subscription relies on (some another one started).
            needed = self._fanout.wires_of(subscription)
            waits = [self._bindings[key] for key in needed if key in self._bindings]
            if waits:
                await asyncio.gather(*(asyncio.shield(w) for w in waits))
        except BaseException:
            subscription.close_now()
            raise
        return subscription

    async def ping(self) -> None:
        self._check_open()
        await self._connection.ping()

    async def sync(self) -> None:
        """Wait until every message this broker published before is in the local buffers.

        A marker published to its own queue after them arrives after them (one channel,
        one queue: AMQP keeps the order); for tests and orderly hand-offs.
        """
        self._check_open()
        await self._listening()
        token = uuid.uuid4().hex
        arrived = self._syncs[token] = asyncio.get_running_loop().create_future()
        try:
            channel = self._channel
            assert channel is not None
            await self._send(channel.default_exchange, self._queue_name, b"", {_SYNC: token})
            await asyncio.wait_for(arrived, 10)
        finally:
            self._syncs.pop(token, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.close_all()
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            try:
                with self._connection.errors:
                    await channel.close()  # the exclusive queue goes with its consumer
            except Unavailable:
                pass  # the link is down: the broker drops the exclusive queue itself

    def subscriber_count(self) -> int:
        return len(self._fanout.subscriptions)

    # -- internals ---------------------------------------------------------------------------

    async def _ready(self) -> AbstractExchange:
        """The exchange, on this broker's confirming channel (declared once)."""
        if self._exchange is not None:
            self._check_link()
            return self._exchange
        async with self._setup:
            if self._exchange is None:
                channel = await self._connection.channel(confirms=True)
                with self._connection.errors:
                    exchange = await channel.declare_exchange(
                        EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                self._channel, self._exchange = channel, exchange
        return self._exchange

    async def _listening(self) -> AbstractQueue:
        """This broker's exclusive queue and its consumer, made on the first subscription
        (a sidecar that only publishes holds no queue)."""
        await self._ready()
        if self._queue is not None:
            return self._queue
        async with self._setup:
            if self._queue is None:
                channel = self._channel
                assert channel is not None
                with self._connection.errors:
                    queue = await channel.declare_queue(
                        self._queue_name, exclusive=True, auto_delete=True
                    )
                    await queue.consume(self._arrived, no_ack=True)
                self._queue = queue
        return self._queue

    def _check_link(self) -> None:
        if not self._connection.connected:
            raise Unavailable(
                "the connection to RabbitMQ is down; it is reconnecting",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self._name},
            )

    async def _send(
        self, exchange: AbstractExchange, key: str, body: bytes, headers: dict[str, Any]
    ) -> None:
        message = aio_pika.Message(body, headers=headers)
        with self._connection.errors:
            await exchange.publish(message, routing_key=key, mandatory=False)

    async def _bind(self, queue: AbstractQueue, key: str) -> None:
        with self._connection.errors:
            await queue.bind(EXCHANGE, routing_key=key)

    async def _unbind(self, queue: AbstractQueue, key: str, bound: asyncio.Future[None]) -> None:
        try:
            await bound
            if not self._closed:
                with self._connection.errors:
                    await queue.unbind(EXCHANGE, routing_key=key)
        except Exception:  # a stale binding only widens what arrives
            return

    def _unregister(self, subscription: BufferedSubscription) -> None:
        queue = self._queue
        for key in self._fanout.remove(subscription):
            bound = self._bindings.pop(key, None)
            if queue is not None and bound is not None and not self._closed:
                # Synchronous callers (the iterator's finally): unbind in the background.
                task = asyncio.ensure_future(self._unbind(queue, key, bound))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _arrived(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        if _SYNC in headers:
            token = headers[_SYNC]
            future = self._syncs.get(token.decode() if isinstance(token, bytes) else str(token))
            if future is not None and not future.done():
                future.set_result(None)
            return
        key = message.routing_key or ""
        if not key.startswith(self._prefix):
            return
        metadata, published_at = metadata_of(message, self._clock_wall())
        self._fanout.dispatch(key[len(self._prefix) :], message.body, metadata, published_at)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                "the RabbitMQ broker is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )


def _build(context: BuildContext[PubSubServiceConfig]) -> PubSubBackend:
    connection = context.connection
    assert isinstance(connection, RabbitMqConnection)
    settings = context.settings
    broker = RabbitMqBroker(connection, name=context.name, key_prefix=settings.key_prefix)
    if not settings.reliable_topics:
        return broker
    from sidecar.backends.pubsub._rabbitmq_reliable import RabbitMqReliable
    from sidecar.backends.pubsub.joined import ReliableBroker
    from sidecar.backends.pubsub.reliable import ReliableOptions

    reliable = RabbitMqReliable(connection, ReliableOptions.of(context.name, settings))
    return ReliableBroker(broker, reliable)


SPEC = BackendSpec(
    type="pubsub",
    backend="rabbitmq",
    settings=PubSubServiceConfig,
    build=_build,
    connection_type="rabbitmq",
    features=frozenset({"reliable", "patterns"}),
)
