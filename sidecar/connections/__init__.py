"""Connections: one configured upstream endpoint each, and the client-library objects that
talk to it (pools, multiplexed links, subscriber links), shared by every service naming it.

A connection owns its client library: it opens lazily, answers a health `ping`, maps the
library's exceptions to `sidecar.errors`, and `close`s in order once the services on it have
closed. Resilience policies stay per service.

    connections = build_connections(config)
    redis = connections.get("main-redis")     # a RedisConnection
    await connections.close()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from sidecar.config import AwsEndpoint, Config, RedisEndpoint

__all__ = ["Connection", "ConnectionEntry", "Connections", "build_connections"]

_log = logging.getLogger("sidecar.connections")


class Connection(Protocol):
    """What every connection type offers its owner."""

    name: str
    type: str
    probed: bool
    """Whether health checks ping it (False: its health is unknown, shown as such)."""

    async def ping(self) -> None:
        """One cheap round trip; raises a `sidecar.errors` error when the upstream is down."""

    async def close(self) -> None:
        """Release every client object. Idempotent."""


@dataclass(eq=False)
class ConnectionEntry:
    """One connection and what the config says of it."""

    connection: Connection
    implicit: bool
    """Made from a service's inline settings rather than named under `connections:`."""
    users: list[str] = field(default_factory=list)
    """The services (and rate limiters, as `<service>.rate_limit`) that use it."""
    healthy: bool = True
    """The last probed health; every service on the connection shares it."""


class Connections:
    """The live connections by name."""

    def __init__(self, entries: dict[str, ConnectionEntry] | None = None) -> None:
        self._entries = dict(entries or {})

    def get(self, name: str) -> Connection:
        """The connection called `name`.

        Raises:
            KeyError: none has that name.
        """
        return self._entries[name].connection

    def entry(self, name: str) -> ConnectionEntry:
        return self._entries[name]

    def __iter__(self) -> Iterator[tuple[str, ConnectionEntry]]:
        return iter(sorted(self._entries.items()))

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        """Close every connection; one failing close does not stop the others."""
        entries = list(self._entries.items())
        results = await asyncio.gather(
            *(entry.connection.close() for _, entry in entries), return_exceptions=True
        )
        for (name, _), result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                _log.warning(
                    "closing connection failed", extra={"connection": name, "error": repr(result)}
                )


def build_connections(config: Config) -> Connections:
    """Every connection the config names or implies (no network I/O happens here)."""
    entries: dict[str, ConnectionEntry] = {}
    for name, settings in config.connections.items():
        entries[name] = ConnectionEntry(_open(config, name, settings), implicit=False)
    for service_name, service in config.services.items():
        used = config.connection_of(service_name)
        if used is None:
            continue
        if used not in entries:  # inline settings: the service's own connection
            assert isinstance(service, RedisEndpoint | AwsEndpoint)
            entries[used] = ConnectionEntry(_open(config, used, service), implicit=True)
        entries[used].users.append(service_name)
    for service_name in config.services:
        limit = config.policies_for(service_name).rate_limit
        if limit is None or limit.store != "redis":
            continue
        target = limit.redis_target
        limiter_on = limit.connection or (
            config.connection_of(target) if target is not None else None
        )
        if limiter_on is not None and limiter_on in entries:
            entries[limiter_on].users.append(f"{service_name}.rate_limit")
    return Connections(entries)


def _open(config: Config, name: str, endpoint: RedisEndpoint | AwsEndpoint) -> Connection:
    """The connection of one endpoint's settings (a client library is imported only here)."""
    if isinstance(endpoint, AwsEndpoint):
        from sidecar.connections.aws import AwsConnection

        return AwsConnection(name, endpoint)
    from sidecar.connections.redis import RedisConnection, create_client

    pool, timeouts = config.connection_policies(name)
    client = create_client(
        endpoint,
        max_connections=pool.max_connections,
        acquire_timeout=pool.acquire_timeout,
        connect_timeout=timeouts.connect,
        socket_timeout=timeouts.read,
        client_name=f"sidecar:{name}",
    )
    return RedisConnection(name, client)
