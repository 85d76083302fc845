"""Redis connections: the client (pool), the multiplexer, the subscriber link, and the
mapping of redis-py's exceptions to `sidecar.errors`."""

from sidecar.connections.redis.client import create_client, glob_escape, redis_errors
from sidecar.connections.redis.connection import RedisConnection

__all__ = ["RedisConnection", "create_client", "glob_escape", "redis_errors"]
