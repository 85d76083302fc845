"""Fixtures of the Redis-specific tests: the server, a per-test prefix, a plain client.

Every test gets its own key/channel prefix, and its keys are deleted afterwards, so tests
never see each other's data on the shared server.
"""

from __future__ import annotations

import pytest
from redis_server import key_prefix, redis_address, redis_client

from sidecar.config import CacheServiceConfig, PubSubServiceConfig

__all__ = ["key_prefix", "redis_address", "redis_client"]


@pytest.fixture
def cache_settings(redis_address: tuple[str, int], key_prefix: str) -> CacheServiceConfig:
    host, port = redis_address
    return CacheServiceConfig(backend="redis", host=host, port=port, key_prefix=key_prefix)


@pytest.fixture
def pubsub_settings(redis_address: tuple[str, int], key_prefix: str) -> PubSubServiceConfig:
    host, port = redis_address
    return PubSubServiceConfig(backend="redis", host=host, port=port, key_prefix=key_prefix)
