"""`RedisCache`: the cache capability on Redis, with the same semantics as `MemoryCache`.

Every operation is one Redis command (GET, SET ... PX NX|XX, DEL, INCRBY, HSET, LPOP key
count, ...), so the conformance suite holds it to exactly the memory backend's behaviour.
Where Redis alone would differ, this module bridges the gap:

- `set_many` is MSET, or SETs with PX inside MULTI/EXEC when there is a TTL (SET cannot fail
  once queued, so the transaction is all or nothing).
- An atomic `batch` is one Lua script that checks every op before writing anything (see
  `_redis_batch`); a non-atomic one is a pipeline without a transaction.
- TTLs are sent in milliseconds (rounded, at least 1 ms).

`key_prefix` is prepended to every key, so several apps or tests can share one Redis.

Single commands (every operation but `batch` and `set_many` with a TTL) go through the
connection's auto-pipelined link shared by all callers (`Multiplexer`); the rest use its
pool. The hot path (`get`) is one GET on it: one string concatenation for the prefix, one
reusable error-mapping context, one future.

The near cache (opt-in, `near_cache.enabled`) is not part of this class: the build function
wraps the backend in the `NearCache` decorator, which `RedisTracking` keeps valid, and reads
through `get_with_ttl` (GET and PTTL sent together) so a reply can be held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sidecar.backends.cache._held_values import HeldValues
from sidecar.backends.cache._redis_batch import (
    ATOMIC_BATCH_LUA,
    encode_atomic,
    ttl_ms,
    typed_result,
)
from sidecar.backends.cache._redis_tracking import RedisTracking
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
)
from sidecar.backends.cache.near_cache import NearCache, near_cached
from sidecar.backends.spec import BackendSpec, BuildContext
from sidecar.config import CacheServiceConfig
from sidecar.connections.redis import RedisConnection
from sidecar.connections.redis.client import RedisErrors, redis_errors
from sidecar.errors import FailedPrecondition, Unavailable

__all__ = ["SPEC", "RedisCache"]

_NX_XX = {SetCondition.IF_ABSENT: "NX", SetCondition.IF_PRESENT: "XX"}


class RedisCache(CacheBackend, HashFamily, ListFamily, SetFamily):
    """A `CacheBackend` on one Redis server (or any server speaking its protocol).

    Args:
        connection: the Redis connection the service names (shared with the other services
            on it, and closed by its owner after them).
        name: the service name, reported as `target` in errors.
        key_prefix: prepended to every key.

    Usage:

        cache = RedisCache(connection, name="cache", key_prefix="app1:")
        await cache.set("user:1", b"ada", ttl=30.0)
    """

    def __init__(
        self,
        connection: RedisConnection,
        *,
        name: str,
        key_prefix: str = "",
    ) -> None:
        client = self._client = connection.client
        # Single commands share the connection's pipelined link; batches use its pool.
        self._execute: Callable[..., Awaitable[Any]] = connection.mux.call
        self._prefix = key_prefix
        self._errors: RedisErrors = redis_errors(name)
        self._name = name
        self._atomic_batch = client.register_script(ATOMIC_BATCH_LUA)
        self._closed = False

    @property
    def key_prefix(self) -> str:
        """Prepended to every key."""
        return self._prefix

    # -- strings and keys --------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        if self._closed:
            raise self._closed_error()
        with self._errors:
            return await self._execute("GET", self._prefix + key)  # type: ignore[no-any-return]

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, int]:
        """`get(key)` and the key's PTTL (-1 no expiry, -2 no key), sent together on the
        multiplexed link (one write, run back to back): what a near cache needs to hold it."""
        if self._closed:
            raise self._closed_error()
        full_key = self._prefix + key
        with self._errors:
            value, ttl = await asyncio.gather(
                self._execute("GET", full_key), self._execute("PTTL", full_key)
            )
        return value, int(ttl)

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        condition: SetCondition = SetCondition.ALWAYS,
    ) -> bool:
        if self._closed:
            raise self._closed_error()
        args: list[Any] = ["SET", self._prefix + key, value]
        if ttl is not None:
            args += ("PX", ttl_ms(check_ttl(ttl)))
        if condition is not SetCondition.ALWAYS:
            args.append(_NX_XX[condition])
        with self._errors:
            return bool(await self._execute(*args))

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            self._check_open()
            return 0
        return int(await self._call("DEL", *self._keys(keys)))

    async def exists(self, key: str) -> bool:
        return bool(await self._call("EXISTS", self._prefix + key))

    async def expire(self, key: str, ttl: float) -> bool:
        return bool(await self._call("PEXPIRE", self._prefix + key, ttl_ms(check_ttl(ttl))))

    async def ttl(self, key: str) -> float | None:
        milliseconds = int(await self._call("PTTL", self._prefix + key))
        return milliseconds / 1000 if milliseconds >= 0 else None  # -1 no expiry, -2 missing

    async def increment(self, key: str, delta: int) -> int:
        if not INT64_MIN <= delta <= INT64_MAX:
            # INCRBY takes an int64 delta; no int64 value plus this one fits the range.
            self._check_open()
            raise FailedPrecondition(
                "the increment would overflow the int64 range",
                reason="INTEGER_OVERFLOW",
                metadata={"target": self._name},
            )
        return int(await self._call("INCRBY", self._prefix + key, delta))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            self._check_open()
            return []
        return list(await self._call("MGET", *self._keys(keys)))

    async def set_many(
        self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None
    ) -> None:
        self._check_open()
        if ttl is not None:
            check_ttl(ttl)
        if not items:
            return
        prefix = self._prefix
        with self._errors:
            if ttl is None:
                await self._execute("MSET", *(part for k, v in items for part in (prefix + k, v)))
                return
            milliseconds = ttl_ms(ttl)
            async with self._client.pipeline(transaction=True) as pipe:
                for key, value in items:
                    pipe.execute_command("SET", prefix + key, value, "PX", milliseconds)
                await pipe.execute()

    # -- hashes, lists, sets -----------------------------------------------------------------

    async def hash_get(self, key: str, field: str) -> bytes | None:
        return await self._call("HGET", self._prefix + key, field)  # type: ignore[no-any-return]

    async def hash_set(self, key: str, fields: Mapping[str, bytes]) -> int:
        if not fields:
            self._check_open()
            return 0
        pairs = (part for field, value in fields.items() for part in (field, value))
        return int(await self._call("HSET", self._prefix + key, *pairs))

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        flat: list[bytes] = await self._call("HGETALL", self._prefix + key)  # f1 v1 f2 v2 ...
        return {
            field.decode("utf-8", "replace"): value
            for field, value in zip(flat[::2], flat[1::2], strict=True)
        }

    async def list_push(self, key: str, values: Sequence[bytes], end: ListEnd) -> int:
        if not values:
            return int(await self._call("LLEN", self._prefix + key))
        command = "LPUSH" if end is ListEnd.LEFT else "RPUSH"
        return int(await self._call(command, self._prefix + key, *values))

    async def list_pop(self, key: str, end: ListEnd, count: int = 1) -> list[bytes]:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        command = "LPOP" if end is ListEnd.LEFT else "RPOP"
        popped = await self._call(command, self._prefix + key, count)
        return [] if popped is None else list(popped)

    async def set_add(self, key: str, members: Sequence[bytes]) -> int:
        if not members:
            self._check_open()
            return 0
        return int(await self._call("SADD", self._prefix + key, *members))

    async def set_members(self, key: str) -> list[bytes]:
        return sorted(await self._call("SMEMBERS", self._prefix + key))

    # -- batch, lifecycle --------------------------------------------------------------------

    async def batch(self, ops: Sequence[CacheOp], *, atomic: bool) -> list[OpResult]:
        self._check_open()
        if not ops:
            return []
        with self._errors:
            if atomic:
                keys, args = encode_atomic(ops, self._prefix)
                replies = await self._atomic_batch(keys=keys, args=args)
            else:
                replies = await self._pipelined(ops)
        return [typed_result(op, reply) for op, reply in zip(ops, replies, strict=True)]

    async def ping(self) -> None:
        await self._call("PING")

    def features(self) -> frozenset[str]:
        return frozenset()

    async def close(self) -> None:
        self._closed = True

    # -- helpers -----------------------------------------------------------------------------

    async def _call(self, *args: Any) -> Any:
        if self._closed:
            raise self._closed_error()
        with self._errors:
            return await self._execute(*args)

    def _keys(self, keys: Sequence[str]) -> list[str]:
        prefix = self._prefix
        return [prefix + key for key in keys] if prefix else list(keys)

    async def _pipelined(self, ops: Sequence[CacheOp]) -> list[Any]:
        """Send every op at once without a transaction; raise the first op's error."""
        prefix = self._prefix
        async with self._client.pipeline(transaction=False) as pipe:
            for op in ops:
                match op:
                    case GetOp():
                        pipe.execute_command("GET", prefix + op.key)
                    case SetOp():
                        args: list[Any] = ["SET", prefix + op.key, op.value]
                        if op.ttl is not None:
                            args += ("PX", ttl_ms(op.ttl))
                        if op.condition is not SetCondition.ALWAYS:
                            args.append(_NX_XX[op.condition])
                        pipe.execute_command(*args)
                    case DeleteOp() if not op.keys:
                        pipe.execute_command("ECHO", 0)  # DEL needs a key; the result is 0
                    case DeleteOp():
                        pipe.execute_command("DEL", *(prefix + key for key in op.keys))
                    case ExistsOp():
                        pipe.execute_command("EXISTS", prefix + op.key)
                    case IncrementOp():
                        pipe.execute_command("INCRBY", prefix + op.key, op.delta)
                    case ExpireOp():
                        pipe.execute_command("PEXPIRE", prefix + op.key, ttl_ms(op.ttl))
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> Unavailable:
        return Unavailable(
            "the Redis cache is closed", reason="BACKEND_CLOSED", metadata={"target": self._name}
        )


def _build(context: BuildContext[CacheServiceConfig]) -> RedisCache | NearCache:
    """The Redis cache, decorated with a near cache when the service enables one."""
    connection = context.connection
    assert isinstance(connection, RedisConnection)
    settings = context.settings
    cache = RedisCache(connection, name=context.name, key_prefix=settings.key_prefix)
    near = settings.near_cache
    if not near.enabled:
        return cache
    held = HeldValues(
        max_entries=near.max_entries, max_value_size=near.max_value_size, max_ttl=near.max_ttl
    )
    return near_cached(cache, held, RedisTracking(connection, held, name=context.name))


SPEC = BackendSpec(
    type="cache",
    backend="redis",
    settings=CacheServiceConfig,
    build=_build,
    connection_type="redis",
    features=family_features(RedisCache),
)
