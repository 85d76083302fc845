"""`RedisTracking`: keeps a near cache valid with Redis's client-side caching (RESP2 mode).

Two connections of the service's `RedisConnection` take part: the multiplexed data
connection, told `CLIENT TRACKING ON REDIRECT <id>`, and the subscriber connection, listening
on `__redis__:invalidate`, whose CLIENT ID that `<id>` is. Both are shared with the other
services on the connection: keys they read are tracked too, and their invalidations are
dropped here as keys this cache does not hold. Redis publishes every key the data
connection read once the key changes, expires or is evicted; a null key list means FLUSHDB
or FLUSHALL.

The near cache is active only while both hold: the subscriber is confirmed on its channel
and the data connection's tracking points at that very subscriber. Losing either empties it
(Redis forgets the tracking state of a closed connection, and an invalidation sent to a
dead subscriber is lost), and it fills again once tracking is pointed anew. A subscriber
that goes silent is found dead after 3 keepalive periods; until then, and never longer than
the near cache's `max_ttl`, a value may be stale.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis import exceptions as rex

from sidecar.backends.cache._held_values import HeldValues
from sidecar.connections.redis import RedisConnection
from sidecar.connections.redis.subscriber import Key

__all__ = ["RedisTracking"]

_log = logging.getLogger("sidecar.backends.redis")
_CHANNEL: Key = (False, "__redis__:invalidate")


class RedisTracking:
    """Points the connection's data link's tracking at its subscriber, feeding `held`.

    Args:
        connection: the cache's connection.
        held: the near cache's values to keep valid.
        name: the service name, for logs.

    `start` once a loop runs; `close` before the connection closes.
    """

    def __init__(self, connection: RedisConnection, held: HeldValues, *, name: str) -> None:
        self._held = held
        self._name = name
        self._mux = connection.mux
        self._subscriber = connection.subscriber.view(
            wanted=lambda: (_CHANNEL,),
            on_message=self._on_invalidation,
            on_change=self._on_subscriber_change,
        )
        self._unwatch = connection.watch_data_link(self.link_up, self.link_down)
        self._generation = 0  # of the data connection: bumped when it comes up or goes down
        self._pointed_at: int | None = None  # the subscriber id the data connection tracks to
        self._pointing: set[asyncio.Task[None]] = set()
        self._started = False

    def start(self) -> None:
        """Listen for invalidations (once); tracking is pointed as soon as both are up."""
        if self._started:
            return
        self._started = True
        self._subscriber.start()
        self._subscriber.subscribe(_CHANNEL)  # the link may be up already
        if self._mux.connected:
            self._point()

    @property
    def active(self) -> bool:
        """Whether reads fill the near cache right now."""
        return self._held.active

    async def sync(self) -> None:
        """Wait until every invalidation Redis sent before now has been applied (one PING
        round trip on the subscriber connection; nothing when it is down)."""
        await self._subscriber.sync()

    async def close(self) -> None:
        for task in self._pointing:
            task.cancel()
        self._unwatch()
        self._subscriber.close()
        self._held.deactivate()

    # -- the data connection (Multiplexer hooks) ---------------------------------------------

    def link_up(self) -> None:
        self._generation += 1
        self._pointed_at = None
        self._point()

    def link_down(self) -> None:
        self._generation += 1
        self._pointed_at = None
        self._held.deactivate()

    # -- the subscriber ------------------------------------------------------------------------

    def _on_subscriber_change(self) -> None:
        listening = self._listening()
        if listening is None:
            self._held.deactivate()
        elif listening != self._pointed_at and self._mux.connected:
            self._point()

    def _on_invalidation(self, key: Key, _channel: str, keys: Any) -> None:
        if key != _CHANNEL:
            return  # a broker's message on the shared subscriber
        if keys is None:  # FLUSHDB / FLUSHALL
            self._held.clear()
        elif isinstance(keys, list):  # not a PUBLISH to the channel by some client
            self._held.invalidate(key.decode("utf-8", "surrogateescape") for key in keys)

    def _listening(self) -> int | None:
        """The subscriber's CLIENT ID while it is confirmed on the channel, else None."""
        subscriber = self._subscriber
        if subscriber.up and _CHANNEL in subscriber.confirmed:
            return subscriber.client_id
        return None

    # -- pointing tracking at the subscriber ---------------------------------------------------

    def _point(self) -> None:
        if self._listening() is None:
            return
        task = asyncio.get_running_loop().create_task(self._point_now())
        self._pointing.add(task)
        task.add_done_callback(self._pointing.discard)

    async def _point_now(self) -> None:
        """CLIENT TRACKING ON REDIRECT <subscriber>; activate the near cache if nothing
        changed meanwhile (neither connection was lost or replaced)."""
        generation, subscriber = self._generation, self._listening()
        if subscriber is None:
            return
        try:
            await self._mux.call("CLIENT", "TRACKING", "ON", "REDIRECT", subscriber)
        except rex.ResponseError as exc:  # refused: Redis < 6, or an ACL without it
            _log.warning(
                "redis client-side caching unavailable; reading through",
                extra={"integration": self._name, "error": repr(exc)},
            )
            return
        except rex.RedisError:
            return  # the connection went; `link_up` points the next one
        if generation == self._generation and subscriber == self._listening():
            self._pointed_at = subscriber
            self._held.activate()
