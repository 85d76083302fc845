"""`MemoryBroker`: the pub/sub capability inside one process, with Redis semantics.

`publish` fans a message out synchronously into the bounded buffer of every matching
subscription (`BufferedSubscription`, shared with the other brokers), so per-subscriber order
is publishing order and a slow reader costs at most `buffer_size` messages of memory. A full
buffer drops its oldest message and counts it; the reader then gets `Dropped(count)` before
the newer messages. A *paced* subscription (feature `paced`) is never dropped from: `publish`
waits until every paced subscription it reaches has room, so its reader paces the publishers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from sidecar.backends.pubsub.base import (
    GlobPattern,
    Message,
    PacedPubSub,
    Subscription,
    compile_glob,
    subscription_targets,
)
from sidecar.backends.pubsub.buffered import BufferedSubscription
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import PubSubServiceConfig
from sidecar.errors import Unavailable

__all__ = ["SPEC", "MemoryBroker"]


class MemoryBroker(PacedPubSub):
    """A `PubSubBackend` within one process.

    Args:
        clock_wall: wall-clock seconds for `Message.published_at`; tests inject a fake.
            Default `time.time`.

    Usage:

        broker = MemoryBroker()
        subscription = await broker.subscribe([], ["orders.*"], buffer_size=100)
        await broker.publish("orders.eu", b"{...}", {"content-type": "application/json"})
    """

    def __init__(self, *, clock_wall: Callable[[], float] = time.time) -> None:
        self._clock_wall = clock_wall
        # Dicts used as ordered sets, so delivery order across subscriptions is deterministic.
        self._subscriptions: dict[BufferedSubscription, None] = {}
        self._by_channel: dict[str, dict[BufferedSubscription, None]] = {}
        self._by_pattern: dict[str, tuple[GlobPattern, dict[BufferedSubscription, None]]] = {}
        self._closed = False

    async def publish(
        self, channel: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> int:
        self._check_open()
        # One read-only copy shared by every delivery: no subscriber can alter another's.
        shared_metadata = MappingProxyType(dict(metadata or {}))
        payload = bytes(payload)
        published_at = self._clock_wall()
        matched = self._matching(channel)
        # Matched afresh after each wait: subscriptions may have come or gone meanwhile. The
        # check and the deliveries below run without a pause, so none overfills.
        while full := next(
            (s for s, why in matched.items() if s.paced and not s.has_room(len(why))), None
        ):
            await full.room(len(matched[full]))
            self._check_open()
            matched = self._matching(channel)
        deliveries = 0
        for subscription, reasons in matched.items():
            for matched_pattern in reasons:
                subscription.deliver(
                    Message(channel, payload, shared_metadata, matched_pattern, published_at)
                )
                deliveries += 1
        return deliveries

    def _matching(self, channel: str) -> dict[BufferedSubscription, list[str | None]]:
        """The subscriptions a message on `channel` reaches, each with why (None: the
        channel itself, else the pattern), once per reason."""
        matched: dict[BufferedSubscription, list[str | None]] = {
            subscription: [None] for subscription in self._by_channel.get(channel, {})
        }
        for pattern, (glob, subscriptions) in self._by_pattern.items():
            if glob.matches(channel):
                for subscription in subscriptions:
                    matched.setdefault(subscription, []).append(pattern)
        return matched

    async def subscribe(
        self,
        channels: Sequence[str],
        patterns: Sequence[str],
        *,
        buffer_size: int,
        paced: bool = False,
    ) -> Subscription:
        self._check_open()
        unique_channels, unique_patterns = subscription_targets(channels, patterns, buffer_size)
        subscription = BufferedSubscription(
            unique_channels,
            tuple(compile_glob(pattern) for pattern in unique_patterns),
            buffer_size,
            self._unregister,
            paced=paced,
        )
        self._subscriptions[subscription] = None
        for channel in unique_channels:
            self._by_channel.setdefault(channel, {})[subscription] = None
        for glob in subscription.patterns:
            self._by_pattern.setdefault(glob.pattern, (glob, {}))[1][subscription] = None
        return subscription

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()

    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the in-memory broker is closed", reason="BACKEND_CLOSED")

    def _unregister(self, subscription: BufferedSubscription) -> None:
        self._subscriptions.pop(subscription, None)
        for channel in subscription.channels:
            subscribers = self._by_channel.get(channel)
            if subscribers is not None:
                subscribers.pop(subscription, None)
                if not subscribers:
                    del self._by_channel[channel]
        for glob in subscription.patterns:
            entry = self._by_pattern.get(glob.pattern)
            if entry is not None:
                entry[1].pop(subscription, None)
                if not entry[1]:
                    del self._by_pattern[glob.pattern]


def _build(context: BuildContext[PubSubServiceConfig]) -> MemoryBroker:
    return MemoryBroker()


SPEC = BackendSpec(
    type="pubsub",
    backend="memory",
    settings=PubSubServiceConfig,
    build=_build,
    features=frozenset({"patterns", "paced"}),
)
