"""The `NearCache` decorator over a backend that counts its calls: held values answered
without the inner backend, every write dropping its keys first, the optional families
found through it exactly when the inner backend has them, its features, and close.
(Against a real Redis, with Redis's invalidations: tests/redis/test_redis_near_cache.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence

import pytest

from sidecar.backends.cache import (
    MISS,
    CacheBackend,
    CacheOp,
    DeleteOp,
    GetOp,
    HashFamily,
    ListEnd,
    ListFamily,
    MemoryCache,
    OpResult,
    SetCondition,
    SetFamily,
    SetOp,
    hashes_of,
    lists_of,
    sets_of,
)
from sidecar.backends.cache._held_values import HeldValues
from sidecar.backends.cache.near_cache import NearCache, near_cached
from sidecar.errors import FailedPrecondition, Unavailable
from sidecar.testing import FakeClock

PREFIX = "app:"


class CountingCore(CacheBackend):
    """The core of a `MemoryCache`, counting calls (the families: `CountingCache`)."""

    def __init__(self, clock: FakeClock) -> None:
        self.memory = MemoryCache(clock=clock.monotonic)
        self.calls: Counter[str] = Counter()
        self.closed = False
        self.reply_held_back: asyncio.Event | None = None
        """When set: `get_with_ttl` reads, then waits for it before replying (a slow reply)."""

    @property
    def key_prefix(self) -> str:
        return PREFIX

    async def get(self, key: str) -> bytes | None:
        self.calls["get"] += 1
        return await self.memory.get(key)

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, int]:
        self.calls["get_with_ttl"] += 1
        value = await self.memory.get(key)
        ttl = await self.memory.ttl(key)
        if self.reply_held_back is not None:
            await self.reply_held_back.wait()
        return value, -2 if value is None else -1 if ttl is None else round(ttl * 1000)

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        condition: SetCondition = SetCondition.ALWAYS,
    ) -> bool:
        return await self.memory.set(key, value, ttl=ttl, condition=condition)

    async def delete(self, keys: Sequence[str]) -> int:
        return await self.memory.delete(keys)

    async def exists(self, key: str) -> bool:
        return await self.memory.exists(key)

    async def expire(self, key: str, ttl: float) -> bool:
        return await self.memory.expire(key, ttl)

    async def ttl(self, key: str) -> float | None:
        return await self.memory.ttl(key)

    async def increment(self, key: str, delta: int) -> int:
        return await self.memory.increment(key, delta)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self.memory.get_many(keys)

    async def set_many(
        self, items: Sequence[tuple[str, bytes]], *, ttl: float | None = None
    ) -> None:
        await self.memory.set_many(items, ttl=ttl)

    async def batch(self, ops: Sequence[CacheOp], *, atomic: bool) -> list[OpResult]:
        return await self.memory.batch(ops, atomic=atomic)

    async def ping(self) -> None:
        await self.memory.ping()

    def features(self) -> frozenset[str]:
        return frozenset({"inner-feature"})

    async def close(self) -> None:
        self.closed = True
        await self.memory.close()


class CountingCache(CountingCore, HashFamily, ListFamily, SetFamily):
    """`CountingCore` with every optional family."""

    async def hash_get(self, key: str, field: str) -> bytes | None:
        return await self.memory.hash_get(key, field)

    async def hash_set(self, key: str, fields: Mapping[str, bytes]) -> int:
        return await self.memory.hash_set(key, fields)

    async def hash_get_all(self, key: str) -> dict[str, bytes]:
        return await self.memory.hash_get_all(key)

    async def list_push(self, key: str, values: Sequence[bytes], end: ListEnd) -> int:
        return await self.memory.list_push(key, values, end)

    async def list_pop(self, key: str, end: ListEnd, count: int = 1) -> list[bytes]:
        return await self.memory.list_pop(key, end, count)

    async def set_add(self, key: str, members: Sequence[bytes]) -> int:
        return await self.memory.set_add(key, members)

    async def set_members(self, key: str) -> list[bytes]:
        return await self.memory.set_members(key)


class FakeTracking:
    """Tracking that is in place as soon as it starts (no Redis, no invalidations)."""

    def __init__(self, held: HeldValues) -> None:
        self.held = held
        self.starts = 0
        self.closed = False

    @property
    def active(self) -> bool:
        return self.held.active

    def start(self) -> None:
        self.starts += 1
        self.held.activate()

    async def sync(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True
        self.held.deactivate()


@pytest.fixture
def inner(clock: FakeClock) -> CountingCache:
    return CountingCache(clock)


@pytest.fixture
def held(clock: FakeClock) -> HeldValues:
    return HeldValues(max_entries=100, max_value_size=1024, max_ttl=60.0, clock=clock)


@pytest.fixture
def tracking(held: HeldValues) -> FakeTracking:
    return FakeTracking(held)


@pytest.fixture
def near(inner: CountingCache, held: HeldValues, tracking: FakeTracking) -> NearCache:
    return near_cached(inner, held, tracking)


async def test_a_repeated_get_is_answered_without_the_inner_backend(
    near: NearCache, inner: CountingCache, tracking: FakeTracking
) -> None:
    await inner.set("k", b"v")
    assert await near.get("k") == b"v"  # tracking not in place yet: a plain read starts it
    assert (inner.calls["get"], tracking.starts) == (1, 1)
    assert await near.get("k") == b"v"  # read through, and held
    assert inner.calls["get_with_ttl"] == 1
    assert [await near.get("k") for _ in range(20)] == [b"v"] * 20
    assert inner.calls == Counter(get=1, get_with_ttl=1)
    assert near.held("k") == b"v"


async def test_values_are_held_by_their_full_key(near: NearCache, held: HeldValues) -> None:
    await near.set("k", b"v")
    await near.get("k")
    await near.get("k")
    assert held.lookup(PREFIX + "k") == b"v"  # the name Redis's invalidations use
    held.invalidate([PREFIX + "k"])
    assert near.held("k") is MISS


async def test_an_absent_key_is_held_as_absent(near: NearCache, inner: CountingCache) -> None:
    await near.get("-")
    assert await near.get("nothing") is None
    assert await near.get("nothing") is None
    assert inner.calls["get_with_ttl"] == 1


async def test_a_failed_read_holds_nothing(near: NearCache, inner: CountingCache) -> None:
    await near.get("-")
    await inner.hash_set("h", {"f": b"1"})
    for _ in range(2):
        with pytest.raises(FailedPrecondition):
            await near.get("h")
    assert inner.calls["get_with_ttl"] == 2
    assert near.held("h") is MISS


WRITES: dict[str, Callable[[NearCache], Awaitable[object]]] = {
    "set": lambda near: near.set("k", b"2"),
    "set_if_present": lambda near: near.set("k", b"2", condition=SetCondition.IF_PRESENT),
    "delete": lambda near: near.delete(["other", "k"]),
    "expire": lambda near: near.expire("k", 0.001),
    "increment": lambda near: near.increment("k", 1),
    "set_many": lambda near: near.set_many([("k", b"2")]),
    "set_many_ttl": lambda near: near.set_many([("k", b"2")], ttl=60),
    "batch": lambda near: near.batch([GetOp("k"), SetOp("k", b"2")], atomic=True),
    "batch_delete": lambda near: near.batch([DeleteOp(("k",))], atomic=False),
    "hash_set": lambda near: hashes_of(near, "cache").hash_set("k", {"f": b"1"}),
    "list_push": lambda near: lists_of(near, "cache").list_push("k", [b"1"], ListEnd.LEFT),
    "list_pop": lambda near: lists_of(near, "cache").list_pop("k", ListEnd.LEFT),
    "set_add": lambda near: sets_of(near, "cache").set_add("k", [b"1"]),
}


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_write_drops_its_key(near: NearCache, write: str) -> None:
    await near.set("k", b"1")
    await near.get("k")
    await near.get("k")
    assert near.held("k") == b"1"
    with contextlib.suppress(FailedPrecondition):  # list_pop of a string: WRONG_TYPE
        await WRITES[write](near)
    assert near.held("k") is MISS


async def test_a_read_whose_reply_comes_after_a_write_holds_nothing(
    near: NearCache, inner: CountingCache
) -> None:
    await near.set("k", b"old")
    await near.get("-")  # tracking in place
    inner.reply_held_back = asyncio.Event()
    read = asyncio.create_task(near.get("k"))
    await asyncio.sleep(0)  # the read ran on the inner backend; its reply is on its way
    assert await near.set("k", b"new")
    inner.reply_held_back.set()
    assert await read == b"old"  # it was read before the write
    inner.reply_held_back = None
    assert near.held("k") is MISS  # but not kept: the write cancelled its fill
    assert await near.get("k") == b"new"


async def test_reads_other_than_get_are_delegated(near: NearCache, inner: CountingCache) -> None:
    await near.set("k", b"1", ttl=10)
    await near.set("j", b"2")
    assert await near.exists("k")
    assert await near.ttl("k") == pytest.approx(10)
    assert await near.get_many(["k", "j", "x"]) == [b"1", b"2", None]
    await near.ping()
    hashes = hashes_of(near, "cache")
    await hashes.hash_set("h", {"f": b"v"})
    assert await hashes.hash_get("h", "f") == b"v"
    assert await hashes.hash_get_all("h") == {"f": b"v"}
    sets = sets_of(near, "cache")
    await sets.set_add("s", [b"b", b"a"])
    assert await sets.set_members("s") == [b"a", b"b"]
    assert await inner.memory.get_many(["k", "j"]) == [b"1", b"2"]


def test_the_families_are_found_through_it_exactly_when_the_inner_has_them(
    clock: FakeClock, held: HeldValues, tracking: FakeTracking
) -> None:
    full = near_cached(CountingCache(clock), held, tracking)
    assert isinstance(full, NearCache)
    assert isinstance(full, HashFamily)
    assert isinstance(full, ListFamily)
    assert isinstance(full, SetFamily)
    core = near_cached(CountingCore(clock), held, tracking)
    assert isinstance(core, NearCache)
    assert not isinstance(core, HashFamily | ListFamily | SetFamily)
    for family_of, feature in ((hashes_of, "hashes"), (lists_of, "lists"), (sets_of, "sets")):
        with pytest.raises(FailedPrecondition) as caught:
            family_of(core, "small")
        assert caught.value.reason == "UNSUPPORTED_OPERATION"
        assert caught.value.metadata == {"target": "small", "feature": feature}


def test_its_features_are_the_inner_backends_and_near_cache(near: NearCache) -> None:
    assert near.features() == {"inner-feature", "near_cache"}


async def test_close_stops_tracking_and_closes_the_inner_backend(
    near: NearCache, inner: CountingCache, tracking: FakeTracking
) -> None:
    await near.set("k", b"v")
    for _ in range(3):
        await near.get("k")
    assert near.held("k") == b"v"
    await near.close()
    await near.close()  # idempotent
    assert tracking.closed and inner.closed
    assert near.held("k") is MISS
    with pytest.raises(Unavailable):
        await near.get("k")
    assert tracking.starts == 1  # a read after close does not start tracking again
