"""Fixtures of the Redis-specific tests: the server, a per-test prefix, a plain client.

Every test gets its own key/channel prefix, and its keys are deleted afterwards, so tests
never see each other's data on the shared server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis_server import redis_address, unique_prefix

from sidecar.config import CacheServiceConfig, PubSubServiceConfig

__all__ = ["redis_address"]


@pytest.fixture
def key_prefix() -> str:
    return unique_prefix()


@pytest.fixture
async def redis_client(
    redis_address: tuple[str, int], key_prefix: str
) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client on the test server, for looking behind the sidecar's back."""
    client = aioredis.Redis(host=redis_address[0], port=redis_address[1])
    yield client
    keys = await client.keys(key_prefix + "*")
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def cache_settings(redis_address: tuple[str, int], key_prefix: str) -> CacheServiceConfig:
    host, port = redis_address
    return CacheServiceConfig(backend="redis", host=host, port=port, key_prefix=key_prefix)


@pytest.fixture
def pubsub_settings(redis_address: tuple[str, int], key_prefix: str) -> PubSubServiceConfig:
    host, port = redis_address
    return PubSubServiceConfig(backend="redis", host=host, port=port, key_prefix=key_prefix)
