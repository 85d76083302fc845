"""`RedisConnectionSettings`: where a `backend: redis` service finds its Redis server.

The keys sit directly on the service, as in the specification's example:

    services:
      redis:
        type: cache
        backend: redis
        host: localhost
        port: 6379
        database: 0
        password: ${REDIS_PASSWORD}

The cache and pub/sub models both inherit these fields; setting one with another backend
is an error, so a forgotten `backend: redis` never silently runs in memory.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastZero, ConfigModel, ServiceName
from ..tls import TlsConfig

__all__ = ["RedisConnectionSettings", "RedisEndpoint"]


class RedisEndpoint(ConfigModel):
    """Where a Redis server is and how to sign in: a `type: redis` connection, or the inline
    settings of a `backend: redis` service (which make an implicit connection of its own)."""

    """How to connect to Redis, for services with `backend: redis`.

    The connection pool is not configured here: its size is the service's
    `connection_pool.max_connections`, merged over `integration.connection_pools.default` and
    read from `Config.policies_for(name).connection_pool`, like every other upstream's pool.
    """

    host: str = Field(
        default="127.0.0.1",
        description="Redis host name or IP address (backend: redis only). The client's pool "
        "size is the service's connection_pool.max_connections. Default 127.0.0.1.",
    )
    port: int = Field(
        default=6379,
        ge=1,
        le=65535,
        description="Redis TCP port, 1-65535 (backend: redis only). Default 6379.",
    )
    database: AtLeastZero = Field(
        default=0,
        description="Redis logical database number, SELECTed on connect (backend: redis "
        "only). Default 0.",
    )
    username: str | None = Field(
        default=None,
        description="Redis ACL user name (Redis 6+); null authenticates with the password "
        "alone, as the default user (backend: redis only). Default null.",
    )
    password: SecretStr | None = Field(
        default=None,
        description="Redis password; write it as a ${ENV} reference, never in the file. It "
        "never appears in repr, logs or dumps. Null means no AUTH (backend: redis only). "
        "Default null.",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS to Redis (rediss://): true, or a section with ca_file, cert_file, "
        "key_file and verify (backend: redis only). Default false.",
    )


class RedisConnectionSettings(RedisEndpoint):
    """How a `backend: redis` service reaches Redis: a named connection, or inline settings."""

    connection: ServiceName | None = Field(
        default=None,
        description="The name of a redis connection (under connections:) to use; services "
        "naming one connection share its client, pool and links. Without it, the inline "
        "host/port/... settings make a connection of this service's own (backend: redis "
        "only). Default null.",
    )
    key_prefix: str = Field(
        default="",
        description="Prepended to every key and channel this service uses, so several apps can "
        "share one Redis without clashing (backend: redis only). Default '' (no prefix).",
    )

    @model_validator(mode="before")
    @classmethod
    def _endpoint_means_redis(cls, data: Any) -> Any:
        """Redis settings with no `backend:` mean Redis, as the specification writes a
        cache (`type: cache, host: ..., port: ...`)."""
        named = isinstance(data, dict) and (_ENDPOINT_FIELDS | {"connection"}) & data.keys()
        if named and "backend" not in data and "backend" in cls.model_fields:
            return {**data, "backend": "redis"}
        return data

    @model_validator(mode="after")
    def _only_with_redis(self) -> RedisConnectionSettings:
        if getattr(self, "backend", "redis") == "redis":
            if self.connection is None:
                return self
            inline = sorted(_ENDPOINT_FIELDS & self.model_fields_set)
            if inline:
                raise PydanticCustomError(
                    "inline_redis_with_connection",
                    "{names} {verb} set by connection {connection}; remove {them} here",
                    {
                        "names": ", ".join(inline),
                        "verb": "is" if len(inline) == 1 else "are",
                        "connection": repr(self.connection),
                        "them": "it" if len(inline) == 1 else "them",
                    },
                )
            return self
        misplaced = sorted(_REDIS_FIELDS & self.model_fields_set)
        if misplaced:
            raise PydanticCustomError(
                "redis_setting_without_redis",
                "{names} {verb} only for backend: redis",
                {"names": ", ".join(misplaced), "verb": "is" if len(misplaced) == 1 else "are"},
            )
        return self


_REDIS_FIELDS = frozenset(RedisConnectionSettings.model_fields)
_ENDPOINT_FIELDS = frozenset(RedisEndpoint.model_fields)
