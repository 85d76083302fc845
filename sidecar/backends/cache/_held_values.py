"""`HeldValues`: the near cache's local copy of Redis string values, kept honest by Redis.

Redis's client-side caching (CLIENT TRACKING) remembers which keys a connection read and
sends an invalidation when any client changes one of them, or it expires or is evicted.
This class is the bookkeeping half of that: which values are held, for how long, and which
reads may still fill the cache. It does no I/O: `RedisTracking` feeds it invalidations, and
the `NearCache` decorator (`near_cache.py`) looks values up, fills and invalidates it.

The race it closes (the one Redis's documentation warns of): a GET's reply and an
invalidation of the same key travel on different connections, so the reply can arrive
after the invalidation that made it stale. A read therefore takes a fill ticket before it
sends its GET, an invalidation of the key cancels every ticket taken so far, and only a
reply whose ticket survived is kept.

Bounds: at most `max_entries` values (least recently used evicted first), values larger
than `max_value_size` are never held, and no value is held longer than `max_ttl` or the
key's own TTL in Redis.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sidecar.backends.cache.base import MISS, Miss
from sidecar.resilience import SYSTEM_CLOCK, Clock

__all__ = ["HeldValues"]


class HeldValues:
    """Values of Redis keys (full keys, prefix included), valid until invalidated.

    Args:
        max_entries: values held at most; the least recently used goes first.
        max_value_size: larger values are read from Redis every time.
        max_ttl: seconds a value is held at most, even without an invalidation.
        clock: where expiry times come from.

    Inactive until `activate()`: Redis tracks a connection only once told to, so until
    then lookups miss and fills are dropped; `deactivate()` (a connection lost) empties it.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        max_value_size: int,
        max_ttl: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._entries: OrderedDict[str, tuple[bytes | None, float]] = OrderedDict()
        self._tickets: dict[str, int] = {}
        self._next_ticket = 0
        self._max_entries = max_entries
        self._max_value_size = max_value_size
        self._max_ttl = max_ttl
        self._clock = clock
        self.active = False

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> bytes | Miss | None:
        """The held value of `key` (None: held as absent), or `MISS`."""
        entry = self._entries.get(key)
        if entry is None:
            return MISS
        if entry[1] <= self._clock.monotonic():
            del self._entries[key]
            return MISS
        self._entries.move_to_end(key)
        return entry[0]

    def ticket(self, key: str) -> int | None:
        """A fill ticket for a GET of `key` about to be sent; None when inactive."""
        if not self.active:
            return None
        self._next_ticket += 1
        self._tickets[key] = self._next_ticket
        return self._next_ticket

    def fill(self, key: str, ticket: int, value: bytes | None, ttl_ms: int) -> None:
        """Hold the GET reply `value` if no invalidation of `key` came since `ticket`.

        `ttl_ms` is the key's PTTL read right after the GET: -1 no expiry, -2 no key. A
        PTTL that disagrees with the GET (a write came between them) keeps nothing.
        """
        if self._tickets.get(key) != ticket:
            return  # invalidated (or a newer read of the key owns the ticket)
        del self._tickets[key]
        if ttl_ms == 0 or (ttl_ms == -2) != (value is None):
            return
        if value is not None and len(value) > self._max_value_size:
            return
        seconds = self._max_ttl if ttl_ms < 0 else min(self._max_ttl, ttl_ms / 1000)
        entries = self._entries
        entries[key] = (value, self._clock.monotonic() + seconds)
        entries.move_to_end(key)
        if len(entries) > self._max_entries:
            entries.popitem(last=False)

    def drop_ticket(self, key: str, ticket: int) -> None:
        """Give `ticket` back unused (its GET failed)."""
        if self._tickets.get(key) == ticket:
            del self._tickets[key]

    def invalidate(self, keys: Iterable[str]) -> None:
        """Forget `keys` and cancel their fill tickets (they changed, or are about to)."""
        entries, tickets = self._entries, self._tickets
        for key in keys:
            entries.pop(key, None)
            tickets.pop(key, None)

    def clear(self) -> None:
        """Forget everything (FLUSHDB, FLUSHALL, or tracking state lost)."""
        self._entries.clear()
        self._tickets.clear()

    def activate(self) -> None:
        """Redis tracks the connection now: reads may fill the cache."""
        self.active = True

    def deactivate(self) -> None:
        """Tracking is not (or no longer) certain: forget everything and stop filling."""
        self.active = False
        self.clear()
