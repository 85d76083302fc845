"""`CacheServiceConfig`: a key-value cache (`type: cache`), served by the KV service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from .._common import AtLeastOne, ConfigModel
from .._units import Bytes, DurationSeconds, KiB, MiB
from .base import ServiceBase
from .redis import RedisConnectionSettings

__all__ = ["CacheServiceConfig", "NearCacheSettings"]


class NearCacheSettings(ConfigModel):
    """A local copy of values read with Get, kept valid by Redis (client-side caching).

    Redis tells the sidecar when a key it read changes, expires or is evicted, and the
    copy is dropped; Gets of held keys never leave the process. The price: a write by
    another client becomes visible here only once its invalidation arrives (well under a
    millisecond on a LAN, up to 3 s if the invalidation connection dies silently, never
    more than `max_ttl`). Writes through this sidecar are always seen by its next read.
    """

    enabled: bool = Field(
        default=False,
        description="Serve repeated Gets from the local copy (CLIENT TRACKING, Redis 6+). "
        "Default false: every Get reads Redis.",
    )
    max_entries: AtLeastOne = Field(
        default=10_000,
        description="Values held at most; the least recently used goes first. Default 10000.",
    )
    max_value_size: Bytes = Field(
        default=64 * KiB,
        description="Larger values are never held locally. Default 64KiB.",
    )
    max_ttl: DurationSeconds = Field(
        default=10.0,
        description="Longest a value is held without being read again from Redis, even "
        "with no invalidation (a key's own TTL is honoured too). Default 10s.",
    )


class CacheServiceConfig(RedisConnectionSettings, ServiceBase):
    """A key-value cache (KV service).

    With `backend: redis` the connection settings of `RedisConnectionSettings` apply; the
    memory backend ignores them.
    """

    type: Literal["cache"] = Field(default="cache", description="Service type.")
    backend: str = Field(
        default="memory",
        description="Where data lives: memory is per-process and lost on restart; redis is "
        "shared and uses the Redis connection settings. Default memory.",
    )
    max_value_size: Bytes = Field(
        default=1 * MiB, description="Largest value accepted. Default 1MiB."
    )
    max_key_length: AtLeastOne = Field(
        default=1024, description="Longest key accepted, in bytes. Default 1024."
    )
    max_keys: AtLeastOne = Field(
        default=100_000,
        description="Keys the memory backend holds before evicting, so it cannot grow without "
        "bound. Default 100000.",
    )
    near_cache: NearCacheSettings = Field(
        default_factory=NearCacheSettings,
        description="Local copy of read values, invalidated by Redis (backend: redis only).",
    )

    @model_validator(mode="after")
    def _near_cache_needs_redis(self) -> CacheServiceConfig:
        if self.near_cache.enabled and self.backend != "redis":
            raise PydanticCustomError(
                "near_cache_without_redis", "near_cache is only for backend: redis"
            )
        return self
