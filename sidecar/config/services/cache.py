"""`CacheServiceConfig`: a key-value cache (`type: cache`), served by the KV service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._common import AtLeastOne
from .._units import Bytes, MiB
from .base import ServiceBase
from .redis import RedisConnectionSettings

__all__ = ["CacheServiceConfig"]


class CacheServiceConfig(RedisConnectionSettings, ServiceBase):
    """A key-value cache (KV service).

    With `backend: redis` the connection settings of `RedisConnectionSettings` apply; the
    memory backend ignores them.
    """

    type: Literal["cache"] = Field(default="cache", description="Service type.")
    backend: Literal["memory", "redis"] = Field(
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
