"""`RedisBroker`: the pub/sub capability on Redis pub/sub (at-most-once), multiplexed.

A sidecar holds ONE subscriber connection per Redis connection however many gRPC subscribers
it serves (the connection's `SubscriberLink`, shared with a near cache's invalidations and
any other broker on it): every message arrives once on it and is fanned out to the local
subscriptions (`BufferedSubscription`: bounded buffers, `Dropped` events). SUBSCRIBE and
PSUBSCRIBE are reference-counted: the first local subscriber of a channel or pattern sends
SUBSCRIBE, the last one to leave sends UNSUBSCRIBE. `subscribe` returns once Redis has
confirmed every channel and pattern, so every message published after that reaches it.

If the connection drops (Redis restarted, network cut, or silent for 3 keepalive periods)
the link reconnects with exponential backoff and jitter and resubscribes everything; open
subscriptions stay open and miss only what was published meanwhile (at-most-once), and each
is told: a `Gap` when the link drops, and another, with the time it came back, once every
channel and pattern is subscribed again. While it is down, new `subscribe` calls fail at
once with `Unavailable`.

`publish` counts receivers as the contract does: one per subscription per matching channel
or pattern. Redis counts this sidecar's shared connection once per channel and pattern it
holds, so the broker replaces that share of Redis's reply with its exact local deliveries.
Other sidecars, and plain Redis clients, still count once per channel or pattern they hold,
not once per gRPC subscriber; while a subscribe or unsubscribe is under way the count may be
off by one.

Messages travel in an envelope carrying metadata and publish time (see `_envelope`); raw
messages from other publishers are delivered as they are. `key_prefix` is prepended to every
channel and (glob-escaped) pattern on the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sidecar.backends.pubsub import _envelope
from sidecar.backends.pubsub.base import (
    Gap,
    Message,
    PubSubBackend,
    Subscription,
    compile_glob,
    subscription_targets,
)
from sidecar.backends.pubsub.buffered import BufferedSubscription
from sidecar.backends.pubsub.redis_streams import with_reliable_topics
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import PubSubServiceConfig
from sidecar.connections.redis import RedisConnection
from sidecar.connections.redis.client import glob_escape, redis_errors
from sidecar.connections.redis.subscriber import Key
from sidecar.errors import Unavailable

__all__ = ["SPEC", "RedisBroker"]


class RedisBroker(PubSubBackend):
    """A `PubSubBackend` on Redis pub/sub with one shared subscriber connection.

    Args:
        connection: the Redis connection the service names: PUBLISH and PING go on its
            multiplexed link, subscriptions on its subscriber link (keepalive and reconnection
            are the connection's). Shared with other services; closed by its owner.
        name: the service name, reported as `target` in errors.
        key_prefix: prepended to every channel and pattern.
        clock_wall: wall-clock seconds, for `published_at`.

    Usage:

        broker = RedisBroker(connection, name="pubsub", key_prefix="app1:")
        subscription = await broker.subscribe(["orders"], ["news.*"], buffer_size=256)
    """

    def __init__(
        self,
        connection: RedisConnection,
        *,
        name: str,
        key_prefix: str = "",
        clock_wall: Callable[[], float] = time.time,
    ) -> None:
        self._execute: Callable[..., Awaitable[Any]] = connection.mux.call
        self._errors = redis_errors(name)
        self._name = name
        self._prefix = key_prefix
        self._clock_wall = clock_wall
        # Local subscriptions, and by what they listen to (dicts as ordered sets).
        self._subscriptions: dict[BufferedSubscription, None] = {}
        self._listeners: dict[Key, dict[BufferedSubscription, None]] = {}
        self._link = connection.subscriber.view(
            prefixes=(key_prefix, glob_escape(key_prefix)),
            wanted=lambda: list(self._listeners),
            on_message=self._dispatch,
            on_change=self._link_changed,
        )
        self._lost_at: float | None = None
        """When the subscriber link dropped under open subscriptions (a gap is running)."""
        self._closed = False

    @property
    def connection_name(self) -> str:
        """CLIENT SETNAME of the subscriber connection, to find it in `CLIENT LIST`."""
        return self._link.connection_name

    async def publish(
        self, channel: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> int:
        self._check_open()
        data = _envelope.encode(payload, metadata, self._clock_wall())
        with self._errors:
            reached = int(await self._execute("PUBLISH", self._prefix + channel, data))
        own = local = 0
        for key in self._link.confirmed:
            is_pattern, name = key
            if compile_glob(name).matches(channel) if is_pattern else name == channel:
                own += 1
                local += len(self._listeners.get(key, ()))
        return max(reached - own, 0) + local

    async def subscribe(
        self, channels: Sequence[str], patterns: Sequence[str], *, buffer_size: int
    ) -> Subscription:
        self._check_open()
        unique_channels, unique_patterns = subscription_targets(channels, patterns, buffer_size)
        link = self._link
        if not link.up and link.failure is not None:
            raise Unavailable(
                "the subscriber connection to Redis is down; it is reconnecting",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self._name},
            )
        link.start()
        subscription = BufferedSubscription(
            unique_channels,
            tuple(compile_glob(pattern) for pattern in unique_patterns),
            buffer_size,
            self._unregister,
        )
        self._subscriptions[subscription] = None
        waits: set[asyncio.Future[None]] = set()
        for key in [(False, c) for c in unique_channels] + [(True, p) for p in unique_patterns]:
            listeners = self._listeners.get(key)
            if listeners is None:
                listeners = self._listeners[key] = {}
                link.subscribe(key)
            listeners[subscription] = None
            if link.pending(key):
                waits.add(link.waiter(key))
        if waits:
            try:
                await asyncio.wait(waits)
                for future in waits:
                    if (error := future.exception()) is not None:
                        raise error
            except BaseException:
                subscription.close_now()
                raise
        return subscription

    async def ping(self) -> None:
        self._check_open()
        with self._errors:
            await self._execute("PING")

    async def sync(self) -> None:
        """Wait until every message Redis has already sent this broker is in the buffers.

        One PING round trip on the subscriber connection, which Redis answers after
        everything it queued there before; for tests and orderly hand-offs. Returns at once
        when not connected.
        """
        self._check_open()
        await self._link.sync()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._link.close()  # unsubscribes what no other service on the connection wants
        for subscription in list(self._subscriptions):
            subscription.close_now()

    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                "the Redis broker is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )

    def _unregister(self, subscription: BufferedSubscription) -> None:
        self._subscriptions.pop(subscription, None)
        keys = [(False, c) for c in subscription.channels]
        keys += [(True, glob.pattern) for glob in subscription.patterns]
        for key in keys:
            listeners = self._listeners.get(key)
            if listeners is None:
                continue
            listeners.pop(subscription, None)
            if not listeners:
                del self._listeners[key]
                if not self._closed:
                    self._link.unsubscribe(key)

    def _link_changed(self) -> None:
        """Tell the open subscriptions when the link drops and when, every name confirmed
        again, it is back."""
        if self._closed or not self._subscriptions:
            return
        link = self._link
        if not link.up:
            if self._lost_at is None:
                self._lost_at = self._clock_wall()
                for subscription in self._subscriptions:
                    subscription.gap(Gap(self._lost_at))
        elif self._lost_at is not None and link.confirmed.issuperset(self._listeners):
            back = Gap(self._lost_at, self._clock_wall())
            self._lost_at = None
            for subscription in self._subscriptions:
                subscription.gap(back)

    def _dispatch(self, key: Key, channel: str, data: bytes) -> None:
        """Fan one message from Redis out to the local subscriptions of `key`."""
        listeners = self._listeners.get(key)
        if not listeners:
            return
        payload, metadata, published_at = _envelope.decode(data, self._clock_wall())
        pattern = key[1] if key[0] else None
        # One immutable Message shared by every local delivery.
        message = Message(channel, payload, metadata, pattern, published_at)
        for subscription in listeners:
            subscription.deliver(message)


def _build(context: BuildContext[PubSubServiceConfig]) -> PubSubBackend:
    connection = context.connection
    assert isinstance(connection, RedisConnection)
    settings = context.settings
    broker = RedisBroker(connection, name=context.name, key_prefix=settings.key_prefix)
    # Reliable topics (if any) ride on the connection's client too.
    return with_reliable_topics(broker, connection.client, settings, name=context.name)


SPEC = BackendSpec(
    type="pubsub",
    backend="redis",
    settings=PubSubServiceConfig,
    build=_build,
    connection_type="redis",
    features=frozenset({"reliable", "patterns"}),
)
