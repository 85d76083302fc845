"""Fixtures of the connection conformance suite: the Redis server (`redis_address`)."""

from redis_server import redis_address

__all__ = ["redis_address"]
