"""NATS connections: one configured NATS server (or cluster) and the one nats-py client
every service naming it shares, with its JetStream context.

The client connects on first use (`client()`). When the link is lost afterwards nats-py
reconnects every `reconnect_interval`, forever, and re-sends every core subscription, so
open plain subscriptions resume by themselves (missing what was published meanwhile, as
core NATS is at-most-once). JetStream state (streams, durable consumers, what is acked)
lives in the server: pull consumers simply fetch again once the link is back.

Every call into nats-py goes through `errors` (a `MappedErrors`): link failures, timeouts
of requests and "no responders" (JetStream not enabled) -> Unavailable
(UPSTREAM_UNAVAILABLE), refused credentials -> Unauthenticated, a JetStream "not found" ->
NotFound, other JetStream API refusals -> FailedPrecondition (UPSTREAM_REJECTED).

    connection = NatsConnection("events-nats", endpoint, timeouts)
    client = await connection.client()
    with connection.errors:
        await client.publish("orders", b"...")
    await connection.close()
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import nats
import nats.errors as core
import nats.js.errors as js

from sidecar.config import ConnectionPoolConfig, ServiceBase, TimeoutsConfig
from sidecar.config.nats import NatsEndpoint
from sidecar.connections._mapped_errors import MappedErrors
from sidecar.connections._tls import client_ssl_context
from sidecar.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SidecarError,
    Unauthenticated,
    Unavailable,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = ["NatsConnection", "nats_error", "open_connection"]


def open_connection(
    name: str,
    settings: NatsEndpoint | ServiceBase,
    pool: ConnectionPoolConfig,
    timeouts: TimeoutsConfig,
) -> NatsConnection:
    """The nats connection of a `connections:` entry, or of a pub/sub service with an inline
    `url:` (its own, with the endpoint's defaults). No I/O; `pool` does not apply (NATS
    multiplexes everything on one socket)."""
    if not isinstance(settings, NatsEndpoint):
        url = getattr(settings, "url", None)
        settings = NatsEndpoint() if url is None else NatsEndpoint(url=url)
    return NatsConnection(name, settings, timeouts)


def nats_error(error: BaseException, target: str) -> SidecarError | None:
    """The sidecar error for a nats-py exception (None: not the library's)."""
    metadata = {"target": target}
    text = f"NATS ({target}): {str(error) or type(error).__name__}"
    if isinstance(error, core.AuthorizationError):
        return Unauthenticated(text, reason="UPSTREAM_AUTH_FAILED", metadata=metadata)
    if isinstance(error, core.BadSubjectError | core.MaxPayloadError):
        return InvalidArgument(text, reason="INVALID_REQUEST", metadata=metadata)
    if isinstance(error, js.NotFoundError):
        return NotFound(text, reason="UPSTREAM_NOT_FOUND", metadata=metadata)
    if isinstance(error, js.ServiceUnavailableError | js.NoStreamResponseError):
        return Unavailable(text, reason="UPSTREAM_UNAVAILABLE", metadata=metadata)
    if isinstance(error, js.APIError):
        return FailedPrecondition(text, reason="UPSTREAM_REJECTED", metadata=metadata)
    if isinstance(error, core.Error | TimeoutError | OSError):
        return Unavailable(text, reason="UPSTREAM_UNAVAILABLE", metadata=metadata)
    return None


class NatsConnection:
    """The client of one NATS server or cluster; see the module docstring.

    Args:
        name: the connection's name (errors report it as `target`; the client's name).
        endpoint: where the servers are and how to sign in.
        timeouts: `connect` bounds connecting; `request` each JetStream API call.
    """

    type = "nats"
    probed = True

    def __init__(self, name: str, endpoint: NatsEndpoint, timeouts: TimeoutsConfig) -> None:
        self.name = name
        self.endpoint = endpoint
        self.errors = MappedErrors(name, nats_error)
        self.request_timeout = timeouts.request
        self._connect_timeout = timeouts.connect
        self._client: Client | None = None
        self._jetstream: JetStreamContext | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def client(self) -> Client:
        """The shared client, connected on first use.

        Raises:
            Unavailable: closed, or no server can be reached now.
        """
        if self._closed:
            raise Unavailable(
                f"the nats connection {self.name} is closed",
                reason="BACKEND_CLOSED",
                metadata={"target": self.name},
            )
        if self._client is not None:
            return self._client
        async with self._opening:
            if self._client is None:
                self._client = await self._connect()
        return self._client

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context on the shared client."""
        client = await self.client()
        if self._jetstream is None:
            self._jetstream = client.jetstream(timeout=self.request_timeout)
        return self._jetstream

    @property
    def connected(self) -> bool:
        """Whether the link is up right now."""
        return self._client is not None and self._client.is_connected

    async def ping(self) -> None:
        """One PING/PONG round trip (connecting first if needed).

        Raises:
            Unavailable: no server answers (the client may be reconnecting).
        """
        client = await self.client()
        with self.errors:
            await client.flush(timeout=max(1, round(self._connect_timeout)))

    async def close(self) -> None:
        """Close the client (its subscriptions end). Idempotent."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            with self.errors:
                await client.close()

    async def _connect(self) -> Client:
        endpoint = self.endpoint
        servers = endpoint.servers()
        tls = None
        if any(server.startswith("tls:") for server in servers):
            tls = client_ssl_context(endpoint.tls.model_copy(update={"enabled": True}))
        with self.errors:
            return await asyncio.wait_for(
                nats.connect(
                    servers,
                    name=f"sidecar:{self.name}",
                    connect_timeout=max(1, round(self._connect_timeout)),
                    reconnect_time_wait=endpoint.reconnect_interval,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    tls=tls,
                    tls_hostname=endpoint.tls.server_name,
                    user=endpoint.username,
                    password=endpoint.password.get_secret_value() if endpoint.password else None,
                    token=endpoint.token.get_secret_value() if endpoint.token else None,
                    error_cb=_ignore,
                ),
                self._connect_timeout,
            )


async def _ignore(error: Exception) -> None:
    """nats-py reports link errors here as well as to the failing call; the calls map them."""
