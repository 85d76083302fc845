"""RabbitMQ connections: one configured broker and the one robust AMQP connection (aio-pika)
every service naming it shares, with channels opened per use.

The AMQP connection opens on first use (`connection()`); when the link is lost afterwards
(broker restart, network cut, missed heartbeats) aio-pika reconnects every
`reconnect_interval` and restores, on each robust channel, the exchanges, queues, bindings
and consumers declared through it, so open subscriptions resume by themselves. Deliveries
that were unacknowledged when the link died go back to their queues (the broker's rule);
their delivery tags die with the old channel.

Every call into aio-pika goes through `errors` (a `MappedErrors`), which maps the library's
exceptions to `sidecar.errors`: link failures -> Unavailable (UPSTREAM_UNAVAILABLE), refused
credentials -> Unauthenticated, 403 -> PermissionDenied, 404 -> NotFound, 406 (a queue
declared with other arguments, a nack from the broker) -> FailedPrecondition.

    connection = RabbitMqConnection("events-mq", endpoint, timeouts)
    channel = await connection.channel(confirms=True)
    with connection.errors:
        await channel.default_exchange.publish(...)
    await connection.close()
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aio_pika
import aiormq.exceptions as amqp

from sidecar.config import ConnectionPoolConfig, ServiceBase, TimeoutsConfig
from sidecar.config.rabbitmq import RabbitMqEndpoint
from sidecar.connections._mapped_errors import MappedErrors
from sidecar.connections._tls import client_ssl_context
from sidecar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    SidecarError,
    Unauthenticated,
    Unavailable,
)

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

__all__ = ["RabbitMqConnection", "amqp_error", "open_connection"]


def open_connection(
    name: str,
    settings: RabbitMqEndpoint | ServiceBase,
    pool: ConnectionPoolConfig,
    timeouts: TimeoutsConfig,
) -> RabbitMqConnection:
    """The rabbitmq connection of a `connections:` entry, or of a pub/sub service with an
    inline `url:` (its own, with the endpoint's defaults). No I/O; `pool` does not apply
    (AMQP multiplexes channels on one socket)."""
    if not isinstance(settings, RabbitMqEndpoint):
        url = getattr(settings, "url", None)
        settings = RabbitMqEndpoint() if url is None else RabbitMqEndpoint(url=url)
    return RabbitMqConnection(name, settings, timeouts)


def amqp_error(error: BaseException, target: str) -> SidecarError | None:
    """The sidecar error for an aio-pika / aiormq exception (None: not the library's)."""
    metadata = {"target": target}
    text = f"RabbitMQ ({target}): {str(error) or type(error).__name__}"
    if isinstance(error, amqp.ProbableAuthenticationError):
        return Unauthenticated(text, reason="UPSTREAM_AUTH_FAILED", metadata=metadata)
    if isinstance(error, amqp.ChannelAccessRefused):
        return PermissionDenied(text, reason="UPSTREAM_AUTH_FAILED", metadata=metadata)
    if isinstance(error, amqp.ChannelNotFoundEntity):
        return NotFound(text, reason="UPSTREAM_NOT_FOUND", metadata=metadata)
    if isinstance(error, amqp.ChannelPreconditionFailed):
        return FailedPrecondition(text, reason="UPSTREAM_REJECTED", metadata=metadata)
    if isinstance(error, TimeoutError):
        return DeadlineExceeded(text, reason="DEADLINE_EXCEEDED", metadata=metadata)
    if isinstance(error, amqp.AMQPError | ConnectionError | OSError | RuntimeError):
        # RuntimeError: aio-pika's "channel/connection closed" states while reconnecting.
        return Unavailable(text, reason="UPSTREAM_UNAVAILABLE", metadata=metadata)
    return None


class RabbitMqConnection:
    """The robust AMQP connection of one broker; see the module docstring.

    Args:
        name: the connection's name (errors report it as `target`).
        endpoint: where the broker is and how to sign in.
        timeouts: `connect` bounds opening the link and each channel.
    """

    type = "rabbitmq"
    probed = True

    def __init__(self, name: str, endpoint: RabbitMqEndpoint, timeouts: TimeoutsConfig) -> None:
        self.name = name
        self.endpoint = endpoint
        self.errors = MappedErrors(name, amqp_error)
        self._connect_timeout = timeouts.connect
        self._connection: AbstractRobustConnection | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def connection(self) -> AbstractRobustConnection:
        """The shared robust connection, opened on first use.

        Raises:
            Unavailable: closed, or the broker cannot be reached now.
        """
        self._check_open()
        if self._connection is not None:
            return self._connection
        async with self._opening:
            if self._connection is None:
                self._connection = await self._connect()
        return self._connection

    async def channel(self, *, confirms: bool = True, prefetch: int = 0) -> AbstractRobustChannel:
        """A new robust channel (restored after a reconnection); the caller closes it.

        `confirms`: publisher confirms (a publish returns once the broker has the message);
        `prefetch`: unacknowledged deliveries at most on it (0: unbounded).
        """
        connection = await self.connection()
        with self.errors:
            channel = await asyncio.wait_for(
                connection.channel(publisher_confirms=confirms), self._connect_timeout
            )
            if prefetch:
                await channel.set_qos(prefetch_count=prefetch)
        return channel

    @property
    def connected(self) -> bool:
        """Whether the link is up right now."""
        return self._connection is not None and self._connection.connected.is_set()

    async def ping(self) -> None:
        """Open (if needed) and check the link; a channel open/close is the round trip.

        Raises:
            Unavailable: the link is down (it is reconnecting) or closed.
        """
        channel = await self.channel(confirms=False)
        with self.errors:
            await channel.close()

    async def close(self) -> None:
        """Close the connection and every channel on it. Idempotent."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            with self.errors:
                await connection.close()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable(
                f"the rabbitmq connection {self.name} is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self.name},
            )

    async def _connect(self) -> AbstractRobustConnection:
        endpoint = self.endpoint
        parts = urlsplit(endpoint.url)
        tls = None
        if parts.scheme == "amqps":  # TLS even when `tls:` is not written out (amqps says so)
            tls = client_ssl_context(endpoint.tls.model_copy(update={"enabled": True}))
        vhost = parts.path[1:] if len(parts.path) > 1 else "/"
        options: dict[str, Any] = {
            "host": parts.hostname,
            "port": parts.port or (5671 if tls is not None else 5672),
            "login": endpoint.username,
            "password": endpoint.password.get_secret_value(),
            "virtualhost": vhost,
            "ssl": tls is not None,
            "ssl_context": tls,
            "timeout": self._connect_timeout,
            "heartbeat": max(1, round(endpoint.heartbeat)),
            "reconnect_interval": endpoint.reconnect_interval,
            "client_properties": {"connection_name": f"sidecar:{self.name}"},
        }
        with self.errors:
            connection: AbstractRobustConnection = await asyncio.wait_for(
                aio_pika.connect_robust(**options), self._connect_timeout
            )
        return connection
