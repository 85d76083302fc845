"""`MemoryCache`: the cache capability in process memory, with Redis semantics.

It serves tests and the no-config start-up, and is the reference the conformance suite holds
every other cache backend to. No method awaits anything, so each operation (and each batch) is
atomic with respect to other asyncio tasks.

Expiry works without a timer task. A key past its expiry is treated as missing by every
operation (lazy expiry), and a min-heap of expiry instants lets each operation also remove a
few keys that have expired, so the memory of expired keys is reclaimed even when nobody reads
them again. When `max_keys` is reached, every expired key is removed before a new key is
refused with `ResourceExhausted(reason="CACHE_FULL")`.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar, assert_never

from sidecar.backends.cache.base import (
    INT64_MAX,
    INT64_MIN,
    CacheBackend,
    CacheOp,
    DeleteOp,
    ExistsOp,
    ExpireOp,
    GetOp,
    HashFamily,
    IncrementOp,
    ListEnd,
    ListFamily,
    OpResult,
    SetCondition,
    SetFamily,
    SetOp,
    check_ttl,
    family_features,
    run_batch_sequentially,
)
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import CacheServiceConfig
from sidecar.errors import FailedPrecondition, ResourceExhausted, Unavailable

__all__ = ["SPEC", "MemoryCache"]

# What Redis's string2ll accepts: no sign but '-', no leading zeros, no "-0", no spaces; at
# most 19 digits, which also keeps int() away from huge inputs.
_INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")

# Expired keys removed by each operation on top of the ones it touches; small, so that one call
# never stalls the event loop when many keys expire at the same instant.
_SWEEP_BUDGET = 32
# Stale heap items (from keys whose expiry changed or that were deleted) are tolerated up to
# twice the number of keys plus this slack before the heap is rebuilt: amortised O(1).
_HEAP_SLACK = 64

_Value: TypeAlias = bytes | dict[str, bytes] | deque[bytes] | set[bytes]
_V = TypeVar("_V", bytes, dict[str, bytes], deque[bytes], set[bytes])

_TYPE_NAMES: dict[type, str] = {bytes: "string", dict: "hash", deque: "list", set: "set"}


@dataclass(slots=True)
class _Entry:
    value: _Value
    expires_at: float | None = None

    def copy(self) -> _Entry:
        value = self.value
        return _Entry(value if isinstance(value, bytes) else value.copy(), self.expires_at)


def _wrong_type(value: _Value, expected: type) -> FailedPrecondition:
    return FailedPrecondition(
        f"the key holds a {_TYPE_NAMES[type(value)]} value, "
        f"the operation needs a {_TYPE_NAMES[expected]}",
        reason="WRONG_TYPE",
    )


def _parse_int64(value: bytes) -> int:
    if _INTEGER.fullmatch(value):
        number = int(value)
        if INT64_MIN <= number <= INT64_MAX:
            return number
    raise FailedPrecondition(
        "the value is not an integer or out of the int64 range", reason="NOT_AN_INTEGER"
    )


def _keys_of(op: CacheOp) -> tuple[str, ...]:
    return op.keys if isinstance(op, DeleteOp) else (op.key,)


class MemoryCache(CacheBackend, HashFamily, ListFamily, SetFamily):
    """A `CacheBackend` held in a dict.

    Args:
        max_keys: most keys held at once (of any type, expired ones not counted); a new key
            beyond it raises `ResourceExhausted(reason="CACHE_FULL")`. Default 100 000.
        clock: monotonic seconds, for TTLs; tests inject a fake. Default `time.monotonic`.

    Usage:

        cache = MemoryCache(max_keys=10_000)
        await cache.set("k", b"v", ttl=5.0)
    """

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self._max_keys = max_keys
        self._clock = clock
        self._store: dict[str, _Entry] = {}
        self._expiries: list[tuple[float, str]] = []  # min-heap of (expires_at, key)
        self._closed = False

    def stored_key_count(self) -> int:
        """Keys held in memory, including expired ones not yet reclaimed (for tests, metrics)."""
        return len(self._store)

    # -- strings and keys --------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        return self._get(key, self._begin())

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        condition: SetCondition = SetCondition.ALWAYS,
    ) -> bool:
        return self._set(key, value, ttl, condition, self._begin())

    async def delete(self, keys: Sequence[str]) -> int:
        return self._delete(keys, self._begin())

    async def exists(self, key: str) -> bool:
        return self._lookup(key, self._begin()) is not None

    async def expire(self, key: str, ttl: float) -> bool:
        return self._expire(key, ttl, self._begin())

    async def ttl(self, key: str) -> float | None:
        now = self._begin()
        entry = self._lookup(key, now)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - now

    async def increment(self, key: str, delta: int) -> int:
        return self._increment(key, delta, self._begin())

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._begin()
        values: list[bytes | None] = []
        for key in keys:
            entry = self._lookup(key, now)
            # Like MGET: a key of another type reads as missing rather than failing the call.
            values.append(entry.value if entry and isinstance(entry.value, bytes) else None)
        return values

    async def set_many(
        self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None
    ) -> None:
        if ttl is not None:
            check_ttl(ttl)
        now = self._begin()
        latest = dict(items)
        # Room is checked for all new keys before writing any, so the call is all or nothing.
        self._ensure_room(now, sum(1 for key in latest if self._lookup(key, now) is None))
        for key, value in latest.items():
            entry = self._store[key] = _Entry(bytes(value))
            if ttl is not None:
                self._expire_at(key, entry, now + ttl)

    # -- hashes, lists, sets -----------------------------------------------------------------

    async def hash_get(self, key: str, field: str) -> bytes | None:
        fields = self._typed(key, self._begin(), dict)
        return None if fields is None else fields.get(field)

    async def hash_set(self, key: str, fields: Mapping[str, bytes]) -> int:
        now = self._begin()
        if not fields:
            return 0
        current = self._typed(key, now, dict)
        if current is None:
            current = self._create(key, {}, now)
        added = sum(1 for field in fields if field not in current)
        current.update((field, bytes(value)) for field, value in fields.items())
        return added

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        fields = self._typed(key, self._begin(), dict)
        return {} if fields is None else dict(fields)

    async def list_push(self, key: str, values: Sequence[bytes], end: ListEnd) -> int:
        now = self._begin()
        current = self._typed(key, now, deque)
        if not values:
            return 0 if current is None else len(current)
        if current is None:
            current = self._create(key, deque(), now)
        if end is ListEnd.LEFT:
            current.extendleft(bytes(value) for value in values)
        else:
            current.extend(bytes(value) for value in values)
        return len(current)

    async def list_pop(self, key: str, end: ListEnd, count: int = 1) -> list[bytes]:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        now = self._begin()
        current = self._typed(key, now, deque)
        if current is None:
            return []
        pop = current.popleft if end is ListEnd.LEFT else current.pop
        popped = [pop() for _ in range(min(count, len(current)))]
        if not current:
            del self._store[key]
        return popped

    async def set_add(self, key: str, members: Sequence[bytes]) -> int:
        now = self._begin()
        if not members:
            return 0
        current = self._typed(key, now, set)
        if current is None:
            current = self._create(key, set(), now)
        before = len(current)
        current.update(bytes(member) for member in members)
        return len(current) - before

    async def set_members(self, key: str) -> list[bytes]:
        members = self._typed(key, self._begin(), set)
        return [] if members is None else sorted(members)

    # -- batch, lifecycle --------------------------------------------------------------------

    async def batch(self, ops: Sequence[CacheOp], *, atomic: bool) -> list[OpResult]:
        if not atomic:
            return await run_batch_sequentially(self, ops)
        now = self._begin()
        saved = {key: self._saved(key) for op in ops for key in _keys_of(op)}
        try:
            return [self._apply(op, now) for op in ops]
        except BaseException:
            self._restore(saved)
            raise

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        self._store.clear()
        self._expiries.clear()

    def features(self) -> frozenset[str]:
        return frozenset()

    # -- the operations, synchronous, at one instant `now` -----------------------------------

    def _apply(self, op: CacheOp, now: float) -> OpResult:
        match op:
            case GetOp():
                return self._get(op.key, now)
            case SetOp():
                return self._set(op.key, op.value, op.ttl, op.condition, now)
            case DeleteOp():
                return self._delete(op.keys, now)
            case ExistsOp():
                return self._lookup(op.key, now) is not None
            case IncrementOp():
                return self._increment(op.key, op.delta, now)
            case ExpireOp():
                return self._expire(op.key, op.ttl, now)
            case _:
                assert_never(op)

    def _get(self, key: str, now: float) -> bytes | None:
        return self._typed(key, now, bytes)

    def _set(
        self, key: str, value: bytes, ttl: float | None, condition: SetCondition, now: float
    ) -> bool:
        if ttl is not None:
            check_ttl(ttl)
        exists = self._lookup(key, now) is not None
        if (condition is SetCondition.IF_ABSENT and exists) or (
            condition is SetCondition.IF_PRESENT and not exists
        ):
            return False
        if not exists:
            self._ensure_room(now, 1)
        # A fresh entry: like Redis SET, the old value's type and TTL do not survive.
        entry = self._store[key] = _Entry(bytes(value))
        if ttl is not None:
            self._expire_at(key, entry, now + ttl)
        return True

    def _delete(self, keys: Sequence[str], now: float) -> int:
        deleted = 0
        for key in keys:
            if self._lookup(key, now) is not None:
                del self._store[key]
                deleted += 1
        return deleted

    def _expire(self, key: str, ttl: float, now: float) -> bool:
        check_ttl(ttl)
        entry = self._lookup(key, now)
        if entry is None:
            return False
        self._expire_at(key, entry, now + ttl)
        return True

    def _increment(self, key: str, delta: int, now: float) -> int:
        current = self._typed(key, now, bytes)
        result = (0 if current is None else _parse_int64(current)) + delta
        if not INT64_MIN <= result <= INT64_MAX:
            raise FailedPrecondition(
                "the increment would overflow the int64 range", reason="INTEGER_OVERFLOW"
            )
        encoded = str(result).encode()
        if current is None:
            self._create(key, encoded, now)
        else:
            self._store[key].value = encoded  # in place: INCRBY keeps the key's TTL
        return result

    # -- storage helpers ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the in-memory cache is closed", reason="BACKEND_CLOSED")

    def _begin(self) -> float:
        """Check the cache is open, reclaim a few expired keys, and return the instant."""
        self._check_open()
        now = self._clock()
        self._sweep(now, _SWEEP_BUDGET)
        return now

    def _lookup(self, key: str, now: float) -> _Entry | None:
        entry = self._store.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            del self._store[key]
            return None
        return entry

    def _typed(self, key: str, now: float, kind: type[_V]) -> _V | None:
        entry = self._lookup(key, now)
        if entry is None:
            return None
        if not isinstance(entry.value, kind):
            raise _wrong_type(entry.value, kind)
        return entry.value

    def _create(self, key: str, value: _V, now: float) -> _V:
        self._ensure_room(now, 1)
        self._store[key] = _Entry(value)
        return value

    def _ensure_room(self, now: float, new_keys: int) -> None:
        if len(self._store) + new_keys <= self._max_keys:
            return
        self._sweep(now, budget=None)
        if len(self._store) + new_keys > self._max_keys:
            raise ResourceExhausted(
                f"the in-memory cache holds its maximum of {self._max_keys} keys",
                reason="CACHE_FULL",
                metadata={"max_keys": str(self._max_keys)},
            )

    def _expire_at(self, key: str, entry: _Entry, when: float) -> None:
        entry.expires_at = when
        heapq.heappush(self._expiries, (when, key))
        if len(self._expiries) > 2 * len(self._store) + _HEAP_SLACK:
            self._expiries = [
                (item.expires_at, item_key)
                for item_key, item in self._store.items()
                if item.expires_at is not None
            ]
            heapq.heapify(self._expiries)

    def _sweep(self, now: float, budget: int | None) -> None:
        """Remove keys whose expiry has passed, at most `budget` heap items (None: all)."""
        heap = self._expiries
        while heap and heap[0][0] <= now:
            if budget is not None:
                if budget == 0:
                    return
                budget -= 1
            _, key = heapq.heappop(heap)
            # The item may be stale (key deleted, or its expiry changed since); recheck.
            entry = self._store.get(key)
            if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
                del self._store[key]

    def _saved(self, key: str) -> _Entry | None:
        entry = self._store.get(key)
        return None if entry is None else entry.copy()

    def _restore(self, saved: Mapping[str, _Entry | None]) -> None:
        for key, entry in saved.items():
            if entry is None:
                self._store.pop(key, None)
                continue
            self._store[key] = entry
            if entry.expires_at is not None:
                heapq.heappush(self._expiries, (entry.expires_at, key))


def _build(context: BuildContext[CacheServiceConfig]) -> MemoryCache:
    return MemoryCache(max_keys=context.settings.max_keys, clock=context.clock.monotonic)


SPEC = BackendSpec(
    type="cache",
    backend="memory",
    settings=CacheServiceConfig,
    build=_build,
    features=family_features(MemoryCache),
)
