"""`NatsBroker`: the pub/sub capability on NATS, plain channels on core subjects
(at-most-once), reliable topics on JetStream (`_nats_reliable`).

Plain channels: a message is published on the subject `key_prefix + channel`, with the
metadata as NATS headers and the publish time in `Sidecar-Published-At`. A broker holds
ONE core subscription per distinct subject it needs (reference-counted) however many gRPC
subscribers it serves, and fans each message out locally (`LocalFanout`, then
`BufferedSubscription`: bounded buffers, `Dropped` events). Globs map to NATS wildcards:
the literal dot-separated words are kept up to the first word holding a glob character
(`*`, `?`, `[`, `\\`), which with everything after it becomes `>` (a Redis `*` may span
dots, a NATS `*` may not), so `orders.*` subscribes `orders.>` and `*.eu` subscribes `>`;
every message is then matched again locally, exactly. `subscribe` returns once the server
has the subscriptions (a flush round trip).

Channels must be valid NATS subjects: no spaces, no empty words (`a..b`), no word that is
exactly `*` or `>`; others are refused with INVALID_ARGUMENT. `publish` returns the
deliveries it makes to this sidecar's own subscriptions (NATS does not report receivers).
Reliable topics are JetStream subjects too: a plain pattern subscription that matches a
reliable topic also sees its messages, once, as core NATS delivers them.

If the link drops, nats-py reconnects and re-subscribes; open subscriptions stay open and
miss what was published meanwhile. While it is down, `subscribe` and `publish` fail at once
with `Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

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
from sidecar.connections.nats import NatsConnection
from sidecar.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription

__all__ = ["PUBLISHED_AT", "SPEC", "NatsBroker", "check_subject", "nats_subject", "split_headers"]

PUBLISHED_AT = "Sidecar-Published-At"
_GLOB_CHARS = frozenset("*?[\\")
_BAD_TOKEN_CHARS = frozenset(" \t\r\n")


def _plain_token(word: str) -> bool:
    return bool(word) and word not in ("*", ">") and not _BAD_TOKEN_CHARS & set(word)


def nats_subject(is_pattern: bool, name: str) -> str:
    """The NATS subject (with wildcards) matching at least what the channel or glob does."""
    if not is_pattern:
        return name
    words: list[str] = []
    for word in name.split("."):
        if _GLOB_CHARS & set(word) or not _plain_token(word):
            words.append(">")
            break
        words.append(word)
    return ".".join(words)


def check_subject(subject: str, field: str) -> str:
    """`subject`, checked to be a NATS subject one can publish to."""
    if not all(_plain_token(word) for word in subject.split(".")):
        raise InvalidArgument(
            f"{field} is not a valid NATS subject: no spaces, no empty words and no word "
            "that is '*' or '>'",
            reason="INVALID_REQUEST",
            metadata={"field": field},
        )
    return subject


def split_headers(
    msg: Msg, received_at: float, *, own: frozenset[str] = frozenset()
) -> tuple[Mapping[str, str], float]:
    """(read-only metadata, published_at) of an arrived message: its headers except the
    sidecar's own; the time of receipt when it carries no publish time."""
    metadata: dict[str, str] = {}
    published_at = received_at
    for key, value in (msg.headers or {}).items():
        if key == PUBLISHED_AT:
            with contextlib.suppress(ValueError):  # not the sidecar's: the time of receipt
                published_at = float(value)
        elif key not in own and not key.startswith("Nats-"):
            metadata[key] = value
    return MappingProxyType(metadata), published_at


class NatsBroker(PubSubBackend):
    """Plain pub/sub on core NATS; see the module docstring.

    Args:
        connection: the nats connection the service names (shared; closed by its owner).
        name: the service name, reported as `target` in errors.
        key_prefix: prepended to every subject.
        clock_wall: wall-clock seconds, for `published_at`.
    """

    def __init__(
        self,
        connection: NatsConnection,
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
            lambda is_pattern, key: nats_subject(is_pattern, key_prefix + key)
        )
        self._wire: dict[str, asyncio.Future[NatsSubscription]] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._closed = False

    async def publish(
        self, channel: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> int:
        self._check_open()
        subject = check_subject(self._prefix + channel, "channel")
        client = await self._connection.client()
        self._check_link()
        local = self._fanout.count(channel)
        headers = {**(metadata or {}), PUBLISHED_AT: repr(self._clock_wall())}
        with self._connection.errors:
            await client.publish(subject, bytes(payload), headers=headers)
        return local

    async def subscribe(
        self, channels: Sequence[str], patterns: Sequence[str], *, buffer_size: int
    ) -> Subscription:
        self._check_open()
        unique_channels, unique_patterns = subscription_targets(channels, patterns, buffer_size)
        for i, channel in enumerate(unique_channels):
            check_subject(self._prefix + channel, f"channels[{i}]")
        client = await self._connection.client()
        self._check_link()
        subscription = BufferedSubscription(
            unique_channels,
            tuple(compile_glob(pattern) for pattern in unique_patterns),
            buffer_size,
            self._unregister,
        )
        try:
            for subject in self._fanout.add(subscription):
                self._wire[subject] = asyncio.ensure_future(
                    client.subscribe(subject, cb=self._arrived_on(subject))
                )
            waits = [self._wire[s] for s in self._fanout.wires_of(subscription) if s in self._wire]
            with self._connection.errors:
                await asyncio.gather(*(asyncio.shield(w) for w in waits))
                await client.flush()
        except BaseException:
            subscription.close_now()
            raise
        return subscription

    async def ping(self) -> None:
        self._check_open()
        await self._connection.ping()

    async def sync(self) -> None:
        """Wait until every message this broker published before is in the local buffers.

        A marker published after them on a subject of its own comes back after them (one
        connection: the server keeps the order; a flush alone returns before they arrive),
        then nats-py's per-subscription queues are drained. For tests and hand-offs.
        """
        self._check_open()
        client = await self._connection.client()
        with self._connection.errors:
            marker = await client.subscribe(client.new_inbox(), max_msgs=1)
            await client.flush()
            await client.publish(marker.subject, b"")
            await marker.next_msg(timeout=10)
        wires = [w.result() for w in self._wire.values() if w.done() and not w.exception()]
        while any(wire.pending_msgs for wire in wires):  # noqa: ASYNC110 - nats-py gives a count
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fanout.close_all()
        for wire in list(self._wire.values()):
            await self._drop(wire)
        self._wire.clear()

    def subscriber_count(self) -> int:
        return len(self._fanout.subscriptions)

    # -- internals ---------------------------------------------------------------------------

    def _check_link(self) -> None:
        if not self._connection.connected:
            raise Unavailable(
                "the connection to NATS is down; it is reconnecting",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self._name},
            )

    def _arrived_on(self, subject: str) -> Callable[[Msg], Awaitable[None]]:
        async def arrived(msg: Msg) -> None:
            if not msg.subject.startswith(self._prefix):
                return
            metadata, published_at = split_headers(msg, self._clock_wall())
            channel = msg.subject[len(self._prefix) :]
            self._fanout.dispatch(channel, msg.data, metadata, published_at, wire=subject)

        return arrived

    @staticmethod
    async def _drop(wire: asyncio.Future[NatsSubscription]) -> None:
        try:
            subscribed = await wire
            await subscribed.unsubscribe()
        except Exception:  # a closed client has dropped it already
            return

    def _unregister(self, subscription: BufferedSubscription) -> None:
        for subject in self._fanout.remove(subscription):
            wire = self._wire.pop(subject, None)
            if wire is not None and not self._closed:
                # Synchronous callers (the iterator's finally): unsubscribe in the background.
                task = asyncio.ensure_future(self._drop(wire))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                "the NATS broker is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )


def _build(context: BuildContext[PubSubServiceConfig]) -> PubSubBackend:
    connection = context.connection
    assert isinstance(connection, NatsConnection)
    settings = context.settings
    broker = NatsBroker(connection, name=context.name, key_prefix=settings.key_prefix)
    if not settings.reliable_topics:
        return broker
    from sidecar.backends.pubsub._nats_reliable import NatsReliable
    from sidecar.backends.pubsub.joined import ReliableBroker
    from sidecar.backends.pubsub.reliable import ReliableOptions

    reliable = NatsReliable(connection, ReliableOptions.of(context.name, settings))
    return ReliableBroker(broker, reliable)


SPEC = BackendSpec(
    type="pubsub",
    backend="nats",
    settings=PubSubServiceConfig,
    build=_build,
    connection_type="nats",
    features=frozenset({"reliable", "patterns"}),
)
