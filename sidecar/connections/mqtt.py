"""MQTT connections: one configured MQTT broker and the one aiomqtt session (MQTT 5) every
service naming it shares.

A background task keeps the session up: it connects, re-subscribes every topic filter its
listeners want, and hands each arriving message to them; when the link drops (broker
restarted, network cut, keep-alive missed) it reconnects every `reconnect_interval`, so open
subscriptions resume by themselves (missing what was published meanwhile with QoS 0).
While it is down, publish and subscribe fail at once with Unavailable.

    connection = MqttConnection("devices", endpoint, timeouts)
    await connection.subscribe("app/orders/#")
    await connection.publish("app/orders/1", b"...", {"k": "v"})
    await connection.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sidecar.config import ConnectionPoolConfig, ServiceBase, TimeoutsConfig
from sidecar.config.mqtt import MqttEndpoint
from sidecar.connections._tls import client_ssl_context
from sidecar.errors import Unavailable

if TYPE_CHECKING:
    import aiomqtt

__all__ = ["PUBLISHED_AT", "MqttConnection", "open_connection"]

_log = logging.getLogger("sidecar.connections.mqtt")

PUBLISHED_AT = "sidecar-published-at"
"""The MQTT 5 user property carrying a message's publish time."""

Listener = Callable[[str, bytes, Mapping[str, str], float, list[str]], None]
"""(topic, payload, metadata, published_at, the topic filters it arrived for) of every
arriving message. Each filter is subscribed with its own MQTT 5 subscription identifier, so
the filters are known exactly whether the broker sends one copy per matching subscription
or one copy for all."""


def open_connection(
    name: str,
    settings: MqttEndpoint | ServiceBase,
    pool: ConnectionPoolConfig,
    timeouts: TimeoutsConfig,
) -> MqttConnection:
    """The mqtt connection of a `connections:` entry, or of a pub/sub service without one
    (its own: its inline `url:`, else mqtt://127.0.0.1:1883). No I/O."""
    if not isinstance(settings, MqttEndpoint):
        url = getattr(settings, "url", None)
        settings = MqttEndpoint() if url is None else MqttEndpoint(url=url)
    return MqttConnection(name, settings, timeouts)


class MqttConnection:
    """The shared MQTT session of one broker; see the module docstring."""

    type = "mqtt"
    probed = True

    def __init__(self, name: str, endpoint: MqttEndpoint, timeouts: TimeoutsConfig) -> None:
        self.name = name
        self.endpoint = endpoint
        self._connect_timeout = timeouts.connect
        self._request_timeout = timeouts.request
        self._client: aiomqtt.Client | None = None
        self._filters: dict[str, int] = {}  # topic filter -> subscribers on this connection
        self._ids: dict[str, int] = {}  # topic filter -> its subscription identifier
        self._by_id: dict[int, str] = {}
        self._next_id = 1
        self._listeners: list[Listener] = []
        self._up = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None  # resolves when this link drops
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Receive every arriving message; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def subscribe(self, topic_filter: str) -> None:
        """Subscribe (now, and again after every reconnection); returns after SUBACK."""
        client = await self._connected()
        self._filters[topic_filter] = self._filters.get(topic_filter, 0) + 1
        if self._filters[topic_filter] > 1:
            return
        if topic_filter not in self._ids:
            self._ids[topic_filter] = self._next_id
            self._by_id[self._next_id] = topic_filter
            self._next_id += 1
        try:
            await self._on_link(self._send_subscribe(client, topic_filter))
        except BaseException:
            self._drop(topic_filter)
            raise

    async def _send_subscribe(self, client: aiomqtt.Client, topic_filter: str) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        properties.SubscriptionIdentifier = self._ids[topic_filter]
        await client.subscribe(
            topic_filter,
            qos=self.endpoint.qos,
            properties=properties,
            timeout=self._request_timeout,
        )

    def _drop(self, topic_filter: str) -> bool:
        count = self._filters.get(topic_filter, 0) - 1
        if count > 0:
            self._filters[topic_filter] = count
            return False
        self._filters.pop(topic_filter, None)
        return True

    async def unsubscribe(self, topic_filter: str) -> None:
        """Drop one subscriber of a filter; the last one unsubscribes it at the broker."""
        if not self._drop(topic_filter):
            return
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                await client.unsubscribe(topic_filter, timeout=self._request_timeout)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        metadata: Mapping[str, str] | None,
        published_at: float,
        *,
        retain: bool | None = None,
    ) -> None:
        """Publish (QoS 1: returns after the broker's PUBACK)."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [(PUBLISHED_AT, repr(published_at)), *(metadata or {}).items()]
        client = await self._connected()
        await self._on_link(
            client.publish(
                topic,
                payload,
                qos=self.endpoint.qos,
                retain=self.endpoint.retain if retain is None else retain,
                properties=properties,
                timeout=self._request_timeout,
            )
        )

    async def _on_link(self, call: Awaitable[None]) -> None:
        """Run one call on the current link; fail it at once if the link drops meanwhile
        (a call on a dead link would otherwise wait for its whole timeout)."""
        lost = self._lost
        task = asyncio.ensure_future(call)
        waits: set[asyncio.Future[None]] = {task} if lost is None else {task, lost}
        try:
            with self._errors():
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()
                    return
        finally:
            if not task.done():
                task.cancel()
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise Unavailable(
            f"MQTT ({self.name}): the link dropped during the call; it is reconnecting",
            reason="UPSTREAM_UNAVAILABLE",
            metadata={"target": self.name},
        )

    async def ping(self) -> None:
        """Connected now (connecting first if needed), else Unavailable."""
        await self._connected()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _connected(self) -> aiomqtt.Client:
        if self._closed:
            raise Unavailable(
                f"the mqtt connection {self.name} is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self.name},
            )
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.name}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), self._connect_timeout)
        client = self._client
        if client is None or not self._up.is_set():
            detail = f": {self._failure}" if self._failure is not None else ""
            raise Unavailable(
                f"MQTT ({self.name}) is not connected; it is reconnecting{detail}",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self.name},
            )
        return client

    @contextlib.contextmanager
    def _errors(self) -> Any:
        import aiomqtt

        try:
            yield
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise Unavailable(
                f"MQTT ({self.name}): {exc}",
                reason="UPSTREAM_UNAVAILABLE",
                metadata={"target": self.name},
            ) from exc

    def _client_for(self) -> aiomqtt.Client:
        import aiomqtt

        endpoint = self.endpoint
        parts = urlsplit(endpoint.url)
        tls = client_ssl_context(endpoint.tls) if endpoint.tls_on else None
        if endpoint.tls_on and tls is None:
            import ssl

            tls = ssl.create_default_context()
        return aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if endpoint.tls_on else 1883),
            username=endpoint.username,
            password=endpoint.password.get_secret_value() if endpoint.password else None,
            identifier=f"sidecar-{self.name}-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=max(1, round(endpoint.keepalive)),
            timeout=self._connect_timeout,
            tls_context=tls,
        )

    async def _run(self) -> None:
        import aiomqtt

        while not self._closed:
            try:
                self._lost = asyncio.get_running_loop().create_future()
                async with self._client_for() as client:
                    for topic_filter in list(self._filters):
                        await self._send_subscribe(client, topic_filter)
                    self._client, self._failure = client, None
                    self._up.set()
                    async for message in client.messages:
                        self._dispatch(message)
            except aiomqtt.MqttError as exc:
                self._failure = exc
                _log.warning("mqtt %s link lost: %s", self.name, exc)
            finally:
                self._up.clear()
                self._client = None
                if self._lost is not None and not self._lost.done():
                    self._lost.set_result(None)
            await asyncio.sleep(self.endpoint.reconnect_interval)

    def _dispatch(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        metadata: dict[str, str] = {}
        published_at = time.time()
        for key, value in getattr(message.properties, "UserProperty", None) or ():
            if key == PUBLISHED_AT:
                with contextlib.suppress(ValueError):
                    published_at = float(value)
            else:
                metadata[key] = value
        ids = getattr(message.properties, "SubscriptionIdentifier", None) or []
        filters = [self._by_id[i] for i in ids if i in self._by_id]
        for listener in list(self._listeners):
            listener(message.topic.value, data, metadata, published_at, filters)
