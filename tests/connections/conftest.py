"""Fixtures of the connection tests: the Redis server, a per-test prefix, a plain client."""

from redis_server import key_prefix, redis_address, redis_client

__all__ = ["key_prefix", "redis_address", "redis_client"]
