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
import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from sidecar.config import Config, ServiceConfig
from sidecar.config.connections import ConnectionConfig, ConnectionSettingsBase
from sidecar.config.models import connection_type

__all__ = ["OPENERS", "Connection", "ConnectionEntry", "Connections", "build_connections"]

_log = logging.getLogger("sidecar.connections")


ConnectionSettings = ConnectionConfig | ServiceConfig
"""A named connection's settings, or the inline settings of a service (its implicit one)."""


def endpoint_type(settings: ConnectionSettings) -> str:
    """The connection type of a named connection, or of a service's inline settings."""
    if isinstance(settings, ConnectionSettingsBase):
        return str(settings.type)
    kind = connection_type(settings)
    assert kind is not None
    return kind


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
        if config.connection_of(service_name) == service_name not in config.connections:
            # inline settings: the service's own connection, which others may name too
            entries[service_name] = ConnectionEntry(
                _open(config, service_name, service), implicit=True
            )
    for service_name in config.services:
        used = config.connection_of(service_name)
        if used is not None:
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


# ==== OPENERS: one line per connection type -> the module whose `open_connection` opens it ====
OPENERS: dict[str, str] = {
    "redis": "sidecar.connections.redis",
    "aws": "sidecar.connections.aws",
    "postgres": "sidecar.connections.postgres",
    "sqlite": "sidecar.connections.sqlite",
    "http": "sidecar.connections.http",
    "websocket": "sidecar.connections.websocket",
    "rabbitmq": "sidecar.connections.rabbitmq",
    "nats": "sidecar.connections.nats",
    "kafka": "sidecar.connections.kafka",
    "mqtt": "sidecar.connections.mqtt",
}
# ==== end of OPENERS ========================================================================


def _open(config: Config, name: str, endpoint: ConnectionSettings) -> Connection:
    """The connection of one endpoint's settings; its type's module (and so its client
    library) is imported only here, when a service uses one."""
    pool, timeouts = config.connection_policies(name)
    module = importlib.import_module(OPENERS[endpoint_type(endpoint)])
    connection: Connection = module.open_connection(name, endpoint, pool, timeouts)
    return connection
