"""The `connections:` section: one configured upstream endpoint each, shared by every service
that names it (`connection: <name>`).

    connections:
      main-redis:
        type: redis
        host: redis.internal
        password: ${REDIS_PASSWORD}
        connection_pool: {max_connections: 20}
    services:
      cache: {type: cache, backend: redis, connection: main-redis}
      events: {type: pubsub, backend: redis, connection: main-redis}

A service with inline settings (`host:`, `port:` ... on the service) keeps working: it gets
an implicit connection of its own, named like the service.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._common import ConfigModel
from .policies import ConnectionPoolOverride, TimeoutsOverride
from .services.redis import RedisEndpoint

__all__ = [
    "CONNECTION_TYPES",
    "ConnectionConfig",
    "ConnectionSettingsBase",
    "RedisConnectionConfig",
]


class ConnectionSettingsBase(ConfigModel):
    """What every connection type shares: its pool and its network timeouts."""

    connection_pool: ConnectionPoolOverride | None = Field(
        default=None,
        description="Partial override of integration.connection_pools.default for this "
        "connection's pool (one pool, shared by every service on the connection).",
    )
    timeouts: TimeoutsOverride | None = Field(
        default=None,
        description="Partial override of integration.timeouts; connect and read apply to "
        "the connection (request stays per service).",
    )


class RedisConnectionConfig(RedisEndpoint, ConnectionSettingsBase):
    """A Redis server: one pool, one multiplexed command link and one subscriber link."""

    type: Literal["redis"] = Field(description="Connection type. Required.")


ConnectionConfig = RedisConnectionConfig
"""Any connection; more types join it as their backends move onto connections."""

CONNECTION_TYPES: tuple[str, ...] = ("redis",)
"""Every supported connection `type`."""
