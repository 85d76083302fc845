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

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ._by_type import ByType
from ._common import ConfigModel
from .aws import AwsEndpoint, region_required
from .http import HttpEndpoint
from .kafka import KafkaEndpoint
from .mqtt import MqttEndpoint
from .nats import NatsEndpoint
from .policies import ConnectionPoolOverride, TimeoutsOverride
from .postgres import PostgresEndpoint, check_postgres_endpoint
from .rabbitmq import RabbitMqEndpoint
from .services.redis import RedisEndpoint
from .sqlite import SqliteEndpoint
from .websocket import WebSocketEndpoint

__all__ = [
    "CONNECTION_TYPES",
    "AwsConnectionConfig",
    "ConnectionConfig",
    "ConnectionModel",
    "ConnectionSettingsBase",
    "HttpConnectionConfig",
    "KafkaConnectionConfig",
    "MqttConnectionConfig",
    "NatsConnectionConfig",
    "PostgresConnectionConfig",
    "RabbitMqConnectionConfig",
    "RedisConnectionConfig",
    "SqliteConnectionConfig",
    "WebSocketConnectionConfig",
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


class AwsConnectionConfig(AwsEndpoint, ConnectionSettingsBase):
    """An AWS account in one region, shared by the AWS services naming it."""

    type: Literal["aws"] = Field(description="Connection type. Required.")

    @model_validator(mode="after")
    def _has_region(self) -> AwsConnectionConfig:
        region_required(self)
        return self


class HttpConnectionConfig(HttpEndpoint, ConnectionSettingsBase):
    """An HTTP(S) API: one pooled client (base URL, headers, TLS), shared by the services
    naming it (ai_model services today)."""

    type: Literal["http"] = Field(description="Connection type. Required.")
    base_url: str = Field(  # required here; a service's inline settings may omit it
        max_length=2048,
        description="Where requests go: scheme://host[:port][/path] (https:// speaks TLS). "
        "Required.",
    )


class PostgresConnectionConfig(PostgresEndpoint, ConnectionSettingsBase):
    """A PostgreSQL database: one asyncpg pool, shared by the sql services naming it."""

    type: Literal["postgres"] = Field(description="Connection type. Required.")

    @model_validator(mode="after")
    def _dsn_alone(self) -> PostgresConnectionConfig:
        check_postgres_endpoint(self)
        return self


class SqliteConnectionConfig(SqliteEndpoint, ConnectionSettingsBase):
    """A SQLite database: one connection, shared (in turns) by the sql services naming it."""

    type: Literal["sqlite"] = Field(description="Connection type. Required.")


class WebSocketConnectionConfig(WebSocketEndpoint, ConnectionSettingsBase):
    """A WebSocket server: each session opens its own socket (URL, headers, TLS shared)."""

    type: Literal["websocket"] = Field(description="Connection type. Required.")
    url: str = Field(  # required here; a service's inline settings may omit it
        max_length=2048,
        description="Where sessions open: ws[s]://host[:port][/path][?query]. Required.",
    )


class RabbitMqConnectionConfig(RabbitMqEndpoint, ConnectionSettingsBase):
    """A RabbitMQ broker: one robust AMQP connection, channels per use (pub/sub services)."""

    type: Literal["rabbitmq"] = Field(description="Connection type. Required.")


class NatsConnectionConfig(NatsEndpoint, ConnectionSettingsBase):
    """A NATS server or cluster: one client connection, JetStream on it (pub/sub services)."""

    type: Literal["nats"] = Field(description="Connection type. Required.")


class KafkaConnectionConfig(KafkaEndpoint, ConnectionSettingsBase):
    """A Kafka-protocol cluster: one producer, group consumers per reliable subscription."""

    type: Literal["kafka"] = Field(description="Connection type. Required.")


class MqttConnectionConfig(MqttEndpoint, ConnectionSettingsBase):
    """An MQTT broker: one client session shared by the pub/sub services naming it."""

    type: Literal["mqtt"] = Field(description="Connection type. Required.")


ConnectionModel = (
    RedisConnectionConfig
    | AwsConnectionConfig
    | HttpConnectionConfig
    | PostgresConnectionConfig
    | SqliteConnectionConfig
    | WebSocketConnectionConfig
    | RabbitMqConnectionConfig
    | NatsConnectionConfig
    | KafkaConnectionConfig
    | MqttConnectionConfig
)
"""Every connection model, in the order error messages list their types."""

_BY_TYPE = ByType(ConnectionModel)

ConnectionConfig = Annotated[ConnectionModel, _BY_TYPE]
"""Any connection; the `type` key picks the model, and only that model is built (`ByType`)."""

CONNECTION_TYPES: tuple[str, ...] = _BY_TYPE.tags
"""Every supported connection `type`."""
