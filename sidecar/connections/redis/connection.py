"""`RedisConnection`: one configured Redis endpoint and every client object that talks to it.

Every service naming the connection shares them: one pool (batches, transactions, Lua
scripts that need their own connection), one auto-pipelined `Multiplexer` (single commands of
every cache, broker and global rate limiter on it) and one `SubscriberLink` (the broker's
subscriptions and the near cache's invalidations). Backends borrow these; only the
connection closes them, after every service that used them is closed.

Usage:

    connection = RedisConnection("main-redis", create_client(settings))
    await connection.ping()
    value = await connection.mux.call("GET", "k")
    await connection.close()
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from redis.asyncio import Redis

from sidecar.connections.redis.client import redis_errors
from sidecar.connections.redis.mux import Multiplexer
from sidecar.connections.redis.subscriber import SubscriberLink

__all__ = ["RedisConnection"]


class RedisConnection:
    """The shared client objects of one Redis endpoint.

    Args:
        name: the connection's name (CLIENT SETNAME of the subscriber: `sidecar-sub:<name>:…`).
        client: its client (see `create_client`); the pool's settings make every connection.
        subscriber_keepalive: seconds of silence before the subscriber is PINGed; three
            silent periods mean it is dead (a near cache then stops serving until it is back).
        reconnect_delays: (first, most) seconds between the subscriber's reconnections.
    """

    type = "redis"
    probed = True

    def __init__(
        self,
        name: str,
        client: Redis,
        *,
        subscriber_keepalive: float = 1.0,
        reconnect_delays: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        self.name = name
        self.client = client
        self._watchers: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self.mux = Multiplexer(client, on_up=self._data_up, on_down=self._data_down)
        self.subscriber = SubscriberLink(
            client,
            name=name,
            connection_name=f"sidecar-sub:{name}:{uuid.uuid4().hex[:8]}",
            keepalive=subscriber_keepalive,
            delays=reconnect_delays,
        )
        self._errors = redis_errors(name)
        self._closed = False

    def watch_data_link(
        self, on_up: Callable[[], None], on_down: Callable[[], None]
    ) -> Callable[[], None]:
        """Be told when the multiplexed data connection comes up (past its handshake) and
        when it is lost; returns the function that stops it."""
        watcher = (on_up, on_down)
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    def pool_usage(self) -> tuple[int, int] | None:
        """(connections in use, idle ones) of redis-py's pool (blocking commands, pipelines,
        the subscriber; the multiplexed link is its own), for metrics. redis-py keeps the
        counts in private attributes: None if a release renames them."""
        pool = self.client.connection_pool
        in_use = getattr(pool, "_in_use_connections", None)
        idle = getattr(pool, "_available_connections", None)
        if in_use is None or idle is None:
            return None
        return len(in_use), len(idle)

    async def ping(self) -> None:
        """One PING on the multiplexed connection (connecting first if needed).

        Raises:
            Unavailable, DeadlineExceeded: mapped from redis-py, with `target` the connection.
        """
        with self._errors:
            await self.mux.call("PING")

    async def close(self) -> None:
        """Close the subscriber, the multiplexer and the pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.subscriber.close()
            await self.mux.aclose()
        finally:
            await self.client.aclose()

    def _data_up(self) -> None:
        for on_up, _ in list(self._watchers):
            on_up()

    def _data_down(self) -> None:
        for _, on_down in list(self._watchers):
            on_down()
