"""`MqttBroker`: plain pub/sub on an MQTT broker (no reliable topics).

Channels are MQTT topics under the connection's `topic_prefix`. A glob is subscribed as the
widest MQTT filter that covers it and matched again locally, exactly, with `compile_glob`
(`LocalFanout`): the glob's literal start up to its last '/' followed by `#` (`orders/*` ->
`orders/#`, `news.*` -> `#`), since MQTT's `+` and `#` only match whole levels while a glob's
`*` also crosses '/'. A channel holding '+', '#' or NUL is refused (INVALID_ARGUMENT).

`publish` returns after the write (QoS 0) or the broker's PUBACK (QoS 1) and counts this
sidecar's own matching subscriptions: the broker does not say who else receives it. With
`retain: true` on the connection the broker keeps the last message of each topic for new
subscribers (so a new subscription may receive one message published before it).
Metadata and the publish time travel as MQTT 5 user properties.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

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
from sidecar.connections.mqtt import MqttConnection
from sidecar.errors import InvalidArgument, Unavailable

__all__ = ["SPEC", "MqttBroker", "mqtt_filter"]

_GLOB_SPECIAL = re.compile(r"[*?\[\\]")
_SYNC = "_sidecar_sync/"


def mqtt_filter(prefix: str, glob: str) -> str:
    """The MQTT topic filter covering every channel `glob` matches (see the docstring)."""
    literal = glob[: m.start()] if (m := _GLOB_SPECIAL.search(glob)) else glob
    if literal == glob:  # no wildcard at all: the channel itself
        return prefix + glob
    cut = literal.rfind("/")
    head = literal[: cut + 1] if cut >= 0 else ""
    if any(c in head for c in "+#"):
        head = ""
    return prefix + head + "#"


def _check_channel(channel: str) -> None:
    if not channel or any(c in channel for c in "+#\x00"):
        raise InvalidArgument(
            f"MQTT channel {channel[:64]!r} must be non-empty, without '+', '#' or NUL",
            reason="INVALID_REQUEST",
        )


def _check_prefix(prefix: str) -> None:
    if any(c in prefix for c in "+#\x00"):
        raise ValueError("an MQTT key_prefix may not hold '+', '#' or NUL")


class MqttBroker(PubSubBackend):
    """A `PubSubBackend` on one shared MQTT session.

    Args:
        connection: the MQTT connection the service names (shared; closed by its owner).
        name: the service name, reported as `target` in errors.
        key_prefix: the service's topic prefix, after the connection's `topic_prefix`.
        clock_wall: wall-clock seconds, for `published_at`.
    """

    def __init__(
        self,
        connection: MqttConnection,
        *,
        name: str,
        key_prefix: str = "",
        clock_wall: Callable[[], float] = time.time,
    ) -> None:
        _check_prefix(key_prefix)
        self._connection = connection
        self._name = name
        self._clock_wall = clock_wall
        self._prefix = connection.endpoint.topic_prefix + key_prefix
        self._fanout = LocalFanout(
            lambda is_pattern, key: (
                mqtt_filter(self._prefix, key) if is_pattern else self._prefix + key
            )
        )
        self._stop_listening = connection.listen(self._dispatch)
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._closed = False

    async def publish(
        self, channel: str, payload: bytes, metadata: Mapping[str, str] | None = None
    ) -> int:
        self._check_open()
        _check_channel(channel)
        await self._connection.publish(
            self._prefix + channel, bytes(payload), metadata, self._clock_wall()
        )
        return self._fanout.count(channel)

    async def subscribe(
        self, channels: Sequence[str], patterns: Sequence[str], *, buffer_size: int
    ) -> Subscription:
        self._check_open()
        unique_channels, unique_patterns = subscription_targets(channels, patterns, buffer_size)
        for channel in unique_channels:
            _check_channel(channel)
        subscription = BufferedSubscription(
            unique_channels,
            tuple(compile_glob(pattern) for pattern in unique_patterns),
            buffer_size,
            self._unregister,
        )
        added = self._fanout.add(subscription)
        try:
            for topic_filter in added:
                await self._connection.subscribe(topic_filter)
        except BaseException:
            subscription.close_now()
            raise
        return subscription

    async def sync(self) -> None:
        """Wait until what this sidecar published before has come back to it: a marker on
        a private topic makes the round trip (the broker keeps one session's order)."""
        self._check_open()
        topic = f"{self._prefix}{_SYNC}{uuid.uuid4().hex}"
        done = self._syncs[topic] = asyncio.get_running_loop().create_future()
        await self._connection.subscribe(topic)
        try:
            await self._connection.publish(topic, b"", None, self._clock_wall(), retain=False)
            await asyncio.wait_for(done, 5)
        finally:
            self._syncs.pop(topic, None)
            await self._connection.unsubscribe(topic)

    async def ping(self) -> None:
        self._check_open()
        await self._connection.ping()

    def subscriber_count(self) -> int:
        return len(self._fanout.subscriptions)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_listening()
        wire = self._fanout.wire_keys
        self._fanout.close_all()
        for topic_filter in wire:
            with contextlib.suppress(Exception):
                await self._connection.unsubscribe(topic_filter)

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                "the MQTT broker is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self._name},
            )

    def _unregister(self, subscription: BufferedSubscription) -> None:
        for topic_filter in self._fanout.remove(subscription):
            if not self._closed:
                task = asyncio.ensure_future(self._connection.unsubscribe(topic_filter))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _dispatch(
        self,
        topic: str,
        payload: bytes,
        metadata: Mapping[str, str],
        published_at: float,
        filters: list[str],
    ) -> None:
        sync = self._syncs.get(topic)
        if sync is not None:
            if not sync.done():
                sync.set_result(None)
            return
        if not topic.startswith(self._prefix):
            return
        channel = topic[len(self._prefix) :]
        for topic_filter in filters:
            self._fanout.dispatch(channel, payload, metadata, published_at, wire=topic_filter)


def _build(context: BuildContext[PubSubServiceConfig]) -> MqttBroker:
    connection = context.connection
    assert isinstance(connection, MqttConnection)
    return MqttBroker(connection, name=context.name, key_prefix=context.settings.key_prefix)


SPEC = BackendSpec(
    type="pubsub",
    backend="mqtt",
    settings=PubSubServiceConfig,
    build=_build,
    connection_type="mqtt",
    features=frozenset({"patterns", "retained"}),
)
