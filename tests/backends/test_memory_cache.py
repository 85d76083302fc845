"""What only `MemoryCache` promises: the `max_keys` bound and reclaiming expired keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from sidecar.backends.cache import (
    GetOp,
    IncrementOp,
    ListEnd,
    MemoryCache,
    SetCondition,
    SetOp,
)
from sidecar.errors import ResourceExhausted
from sidecar.testing import FakeClock


def test_max_keys_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoryCache(max_keys=0)


async def test_new_key_beyond_max_keys_fails_with_cache_full() -> None:
    cache = MemoryCache(max_keys=2)
    await cache.set("a", b"1")
    await cache.set("b", b"2")
    with pytest.raises(ResourceExhausted) as caught:
        await cache.set("c", b"3")
    assert caught.value.reason == "CACHE_FULL"


@pytest.mark.parametrize(
    "create",
    [
        lambda c: c.hash_set("new", {"f": b"1"}),
        lambda c: c.list_push("new", [b"1"], ListEnd.LEFT),
        lambda c: c.set_add("new", [b"1"]),
        lambda c: c.increment("new", 1),
    ],
    ids=["hash_set", "list_push", "set_add", "increment"],
)
async def test_every_kind_of_new_key_counts_against_max_keys(
    create: Callable[[MemoryCache], Awaitable[object]],
) -> None:
    cache = MemoryCache(max_keys=1)
    await cache.set("a", b"1")
    with pytest.raises(ResourceExhausted):
        await create(cache)


async def test_full_cache_still_overwrites_an_existing_key() -> None:
    cache = MemoryCache(max_keys=1)
    await cache.set("a", b"1")
    await cache.set("a", b"2")
    assert await cache.get("a") == b"2"


async def test_full_cache_refuses_nothing_when_the_condition_does_not_apply() -> None:
    cache = MemoryCache(max_keys=1)
    await cache.set("a", b"1")
    assert await cache.set("b", b"2", condition=SetCondition.IF_PRESENT) is False


async def test_full_cache_evicts_expired_keys_to_make_room(clock: FakeClock) -> None:
    cache = MemoryCache(max_keys=2, clock=clock.monotonic)
    await cache.set("a", b"1", ttl=1.0)
    await cache.set("b", b"2")
    await clock.advance(2.0)
    await cache.set("c", b"3")
    assert await cache.get_many(["b", "c"]) == [b"2", b"3"]


async def test_deleting_a_key_frees_room_under_max_keys() -> None:
    cache = MemoryCache(max_keys=1)
    await cache.set("a", b"1")
    await cache.delete(["a"])
    await cache.set("b", b"2")
    assert await cache.get("b") == b"2"


async def test_set_many_beyond_max_keys_writes_nothing() -> None:
    cache = MemoryCache(max_keys=2)
    await cache.set("a", b"1")
    with pytest.raises(ResourceExhausted):
        await cache.set_many([("a", b"2"), ("b", b"2"), ("c", b"3")])
    assert await cache.get_many(["a", "b", "c"]) == [b"1", None, None]


async def test_atomic_batch_hitting_max_keys_is_rolled_back() -> None:
    cache = MemoryCache(max_keys=2)
    await cache.set("a", b"1")
    with pytest.raises(ResourceExhausted):
        await cache.batch([IncrementOp("a", 1), SetOp("b", b"2"), SetOp("c", b"3")], atomic=True)
    assert await cache.batch([GetOp("a"), GetOp("b")], atomic=True) == [b"1", None]


async def test_expired_keys_are_reclaimed_by_later_writes_without_being_read(
    clock: FakeClock,
) -> None:
    cache = MemoryCache(clock=clock.monotonic)
    for index in range(1_000):
        await cache.set(f"old{index}", b"x", ttl=1.0)
    await clock.advance(2.0)
    for index in range(100):
        await cache.set(f"new{index}", b"x")
    assert cache.stored_key_count() == 100


async def test_expiry_bookkeeping_stays_bounded_when_one_ttl_is_reset_often(
    clock: FakeClock,
) -> None:
    cache = MemoryCache(clock=clock.monotonic)
    for _ in range(10_000):
        await cache.set("k", b"x", ttl=60.0)
    # Internal, on purpose: this is the memory bound of the expiry heap.
    assert len(cache._expiries) <= 2 * cache.stored_key_count() + 64 + 1


async def test_ttl_counts_down_with_the_injected_clock(clock: FakeClock) -> None:
    cache = MemoryCache(clock=clock.monotonic)
    await cache.set("k", b"v", ttl=10.0)
    await clock.advance(4.0)
    assert await cache.ttl("k") == pytest.approx(6.0)


async def test_key_expires_exactly_at_its_ttl(clock: FakeClock) -> None:
    cache = MemoryCache(clock=clock.monotonic)
    await cache.set("k", b"v", ttl=1.0)
    await clock.advance(1.0)
    assert await cache.exists("k") is False


async def test_close_drops_every_key() -> None:
    cache = MemoryCache()
    await cache.set("a", b"1")
    await cache.close()
    assert cache.stored_key_count() == 0
