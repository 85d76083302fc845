"""Redis connections: the client (pool), the multiplexer, the subscriber link, and the
mapping of redis-py's exceptions to `sidecar.errors`."""

from sidecar.config import ConnectionPoolConfig, RedisEndpoint, TimeoutsConfig
from sidecar.connections.redis.client import create_client, glob_escape, redis_errors
from sidecar.connections.redis.connection import RedisConnection

__all__ = ["RedisConnection", "create_client", "glob_escape", "open_connection", "redis_errors"]


def open_connection(
    name: str, endpoint: RedisEndpoint, pool: ConnectionPoolConfig, timeouts: TimeoutsConfig
) -> RedisConnection:
    """The Redis connection of one endpoint's settings (no I/O: links open on first use)."""
    client = create_client(
        endpoint,
        max_connections=pool.max_connections,
        acquire_timeout=pool.acquire_timeout,
        connect_timeout=timeouts.connect,
        socket_timeout=timeouts.read,
        client_name=f"sidecar:{name}",
    )
    return RedisConnection(name, client)
