"""`NearCache`: a cache backend that decorates another, answering repeated Gets locally.

The decorator keeps a local copy (`HeldValues`) of the strings `get` read, which a tracking
(`RedisTracking`: Redis's client-side caching) keeps valid; it implements the same
`CacheBackend` interface as the backend it wraps, so nothing above it (the servicer, the
resilience pipeline) knows it is there. `near_cached` composes it when a backend is built
(the Redis cache's build function, when `near_cache.enabled`).

- `get` answers a held value without any I/O; a miss reads through the inner backend's
  `get_with_ttl` (GET and PTTL together, so the reply can be held until the key's own
  expiry) under a fill ticket (see `HeldValues`), or its plain `get` while tracking is not
  in place, starting it.
- Every write drops its keys from the copy before it is delegated, so a read after the
  reply sees the write (Redis's invalidation comes later). `set_many` and `batch` drop them
  after the reply too: the inner backend may send them on another connection than its reads
  (a pool), so a read sent meanwhile may have run before the write.
- Everything else is delegated unchanged, the optional families included: the decorator is
  a `HashFamily`, `ListFamily` or `SetFamily` exactly when the inner backend is, so the
  servicer's `hashes_of(...)` answers UNSUPPORTED_OPERATION only when the inner lacks them.
- `features()` is the inner backend's plus `near_cache`.

Keys are held by their full name (the inner backend's `key_prefix` included): that is how
Redis names them in its invalidations.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol, cast

from sidecar.backends.cache._held_values import HeldValues
from sidecar.backends.cache.base import (
    MISS,
    CacheBackend,
    CacheOp,
    DeleteOp,
    HashFamily,
    ListEnd,
    ListFamily,
    Miss,
    OpResult,
    SetCondition,
    SetFamily,
)
from sidecar.resilience import Answered

__all__ = ["NearCache", "NearCacheable", "Tracking", "near_cached"]


class NearCacheable(CacheBackend, Protocol):
    """What a backend offers to be near-cached: the core, its key prefix, and a read that
    also says how long the key lives."""

    @property
    def key_prefix(self) -> str:
        """Prepended to every key: the keys the tracking names are full keys."""
        ...

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, int]:
        """`get(key)`, and the key's TTL in milliseconds read right after it (-1 no expiry,
        -2 no key)."""
        ...


class Tracking(Protocol):
    """What keeps the held values valid (`RedisTracking`)."""

    @property
    def active(self) -> bool:
        """Whether reads fill the held values right now."""
        ...

    def start(self) -> None:
        """Begin keeping the values valid (idempotent); they fill once it is in place."""
        ...

    async def sync(self) -> None:
        """Wait until every invalidation sent before now has been applied."""
        ...

    async def close(self) -> None:
        """Stop; the held values are emptied and fill no more."""
        ...


class NearCache(CacheBackend):
    """`inner` with a local copy of what `get` read, kept valid by `tracking`.

    Args:
        inner: the backend decorated; the decorator owns it (`close` closes it).
        held: the local copy, fed invalidations by `tracking`.
        tracking: started by the first read; closed with the decorator.

    Build one with `near_cached`, which also gives it the inner backend's optional families.
    """

    _hashes: HashFamily  # set only when the inner backend has them (see `near_cached`)
    _lists: ListFamily
    _sets: SetFamily

    def __init__(self, inner: NearCacheable, held: HeldValues, tracking: Tracking) -> None:
        self._inner = inner
        self._held = held
        self._tracking = tracking
        self._prefix = inner.key_prefix
        self._closed = False
        if isinstance(inner, HashFamily):
            self._hashes = inner
        if isinstance(inner, ListFamily):
            self._lists = inner
        if isinstance(inner, SetFamily):
            self._sets = inner

    @property
    def inner(self) -> NearCacheable:
        """The backend decorated."""
        return self._inner

    @property
    def tracking(self) -> Tracking:
        """What keeps the held values valid."""
        return self._tracking

    def held(self, key: str) -> bytes | Miss | None:
        """The held value of `key` (None: held as absent), or MISS; no I/O. For tests and
        diagnostics: `get` is what serves it."""
        if self._closed:
            return MISS
        return self._held.lookup(self._prefix + key)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Awaitable[bytes | None]:
        full_key = self._prefix + key
        held = self._held.lookup(full_key)
        if held is not MISS:
            return Answered(held)  # type: ignore[arg-type]
        return self._read_through(key, full_key)

    async def _read_through(self, key: str, full_key: str) -> bytes | None:
        """Read `key` from the inner backend and, when the copy may fill, hold the reply."""
        held = self._held
        ticket = held.ticket(full_key)
        if ticket is None:  # tracking not (yet) in place
            if not self._closed:
                self._tracking.start()
            return await self._inner.get(key)
        try:
            value, ttl_ms = await self._inner.get_with_ttl(key)
        except BaseException:
            held.drop_ticket(full_key, ticket)
            raise
        held.fill(full_key, ticket, value, ttl_ms)
        return value

    async def exists(self, key: str) -> bool:
        return await self._inner.exists(key)

    async def ttl(self, key: str) -> float | None:
        return await self._inner.ttl(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._inner.get_many(keys)

    # -- writes: the keys are forgotten before the write is sent ----------------------------

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        condition: SetCondition = SetCondition.ALWAYS,
    ) -> bool:
        self._held.invalidate((self._prefix + key,))
        return await self._inner.set(key, value, ttl=ttl, condition=condition)

    async def delete(self, keys: Sequence[str]) -> int:
        self._forget_all(keys)
        return await self._inner.delete(keys)

    async def expire(self, key: str, ttl: float) -> bool:
        self._held.invalidate((self._prefix + key,))
        return await self._inner.expire(key, ttl)

    async def increment(self, key: str, delta: int) -> int:
        self._held.invalidate((self._prefix + key,))
        return await self._inner.increment(key, delta)

    async def set_many(
        self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None
    ) -> None:
        keys = [key for key, _ in items]
        self._forget_all(keys)
        try:
            await self._inner.set_many(items, ttl=ttl)
        finally:
            self._forget_all(keys)  # it may have gone on a connection of its own

    async def batch(self, ops: Sequence[CacheOp], *, atomic: bool) -> list[OpResult]:
        keys = [key for op in ops for key in (op.keys if isinstance(op, DeleteOp) else (op.key,))]
        self._forget_all(keys)
        try:
            return await self._inner.batch(ops, atomic=atomic)
        finally:
            self._forget_all(keys)  # it may have gone on a connection of its own

    def _forget_all(self, keys: Sequence[str]) -> None:
        """Drop `keys` from the copy and cancel reads of them in flight."""
        prefix = self._prefix
        self._held.invalidate(prefix + key for key in keys)

    # -- lifecycle ---------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._inner.ping()

    def features(self) -> frozenset[str]:
        return self._inner.features() | {"near_cache"}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._tracking.close()  # empties the copy: later Gets reach the inner
        finally:
            await self._inner.close()


# -- the optional families: present on the decorator exactly when the inner has them ---------


class _NearHashes(NearCache):
    async def hash_get(self, key: str, field: str) -> bytes | None:
        return await self._hashes.hash_get(key, field)

    async def hash_set(self, key: str, fields: Mapping[str, bytes]) -> int:
        self._held.invalidate((self._prefix + key,))
        return await self._hashes.hash_set(key, fields)

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        return await self._hashes.hash_get_all(key)


class _NearLists(NearCache):
    async def list_push(self, key: str, values: Sequence[bytes], end: ListEnd) -> int:
        self._held.invalidate((self._prefix + key,))
        return await self._lists.list_push(key, values, end)

    async def list_pop(self, key: str, end: ListEnd, count: int = 1) -> list[bytes]:
        self._held.invalidate((self._prefix + key,))
        return await self._lists.list_pop(key, end, count)


class _NearSets(NearCache):
    async def set_add(self, key: str, members: Sequence[bytes]) -> int:
        self._held.invalidate((self._prefix + key,))
        return await self._sets.set_add(key, members)

    async def set_members(self, key: str) -> list[bytes]:
        return await self._sets.set_members(key)


_FAMILIES: tuple[tuple[type, type[NearCache]], ...] = (
    (HashFamily, _NearHashes),
    (ListFamily, _NearLists),
    (SetFamily, _NearSets),
)


@functools.cache
def _near_cache_class(families: tuple[type[NearCache], ...]) -> type[NearCache]:
    if not families:
        return NearCache
    return cast(type[NearCache], type("NearCache", families, {}))


def near_cached(inner: NearCacheable, held: HeldValues, tracking: Tracking) -> NearCache:
    """`inner` decorated with a near cache, offering exactly the optional families it does."""
    families = tuple(mixin for family, mixin in _FAMILIES if isinstance(inner, family))
    return _near_cache_class(families)(inner, held, tracking)
