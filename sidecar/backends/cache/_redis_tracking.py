"""`RedisTracking`: keeps a `NearCache` valid with Redis's client-side caching (RESP2 mode).

Two connections take part: the multiplexed data connection, told `CLIENT TRACKING ON
REDIRECT <id>`, and a subscriber connection to `__redis__:invalidate` whose CLIENT ID that
`<id>` is. Redis then publishes every key the data connection read once the key changes,
expires or is evicted; a null key list means FLUSHDB or FLUSHALL.

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
from redis.asyncio import Redis

from sidecar.backends._redis_link import Key, SubscriberLink
from sidecar.backends._redis_mux import Multiplexer
from sidecar.backends.cache._near_cache import NearCache

__all__ = ["RedisTracking"]

_log = logging.getLogger("sidecar.backends.redis")
_CHANNEL: Key = (False, "__redis__:invalidate")


class RedisTracking:
    """Points `mux`'s tracking at an invalidation subscriber and feeds `near` from it.

    Args:
        client: the cache's client; the subscriber connects with its settings.
        near: the cache to keep valid.
        name: the service name, for logs and the connection's name.
        keepalive: seconds of subscriber silence before a PING.

    Build the `Multiplexer` with `on_up=tracking.link_up, on_down=tracking.link_down`, then
    `attach` it; `start` once a loop runs.
    """

    def __init__(
        self, client: Redis, near: NearCache, *, name: str, keepalive: float = 1.0
    ) -> None:
        self._near = near
        self._name = name
        self._mux: Multiplexer | None = None
        self._subscriber = SubscriberLink(
            client,
            name=name,
            connection_name=f"sidecar:{name}:invalidations",
            prefixes=("", ""),
            wanted=lambda: (_CHANNEL,),
            on_message=self._on_invalidation,
            keepalive=keepalive,
            delays=(0.05, 2.0),
            on_change=self._on_subscriber_change,
        )
        self._generation = 0  # of the data connection: bumped when it comes up or goes down
        self._pointed_at: int | None = None  # the subscriber id the data connection tracks to
        self._pointing: set[asyncio.Task[None]] = set()

    def attach(self, mux: Multiplexer) -> None:
        self._mux = mux

    def start(self) -> None:
        """Connect the subscriber in the background (once)."""
        self._subscriber.start()

    @property
    def active(self) -> bool:
        """Whether reads fill the near cache right now."""
        return self._near.active

    async def sync(self) -> None:
        """Wait until every invalidation Redis sent before now has been applied (one PING
        round trip on the subscriber connection; nothing when it is down)."""
        await self._subscriber.sync()

    async def close(self) -> None:
        for task in self._pointing:
            task.cancel()
        await self._subscriber.close()
        self._near.deactivate()

    # -- the data connection (Multiplexer hooks) ---------------------------------------------

    def link_up(self) -> None:
        self._generation += 1
        self._pointed_at = None
        self._point()

    def link_down(self) -> None:
        self._generation += 1
        self._pointed_at = None
        self._near.deactivate()

    # -- the subscriber ------------------------------------------------------------------------

    def _on_subscriber_change(self) -> None:
        listening = self._listening()
        if listening is None:
            self._near.deactivate()
        elif listening != self._pointed_at and self._mux is not None and self._mux.connected:
            self._point()

    def _on_invalidation(self, _key: Key, _channel: str, keys: Any) -> None:
        if keys is None:  # FLUSHDB / FLUSHALL
            self._near.clear()
        else:
            self._near.invalidate(key.decode("utf-8", "surrogateescape") for key in keys)

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
        assert self._mux is not None
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
            self._near.activate()
