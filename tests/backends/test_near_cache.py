"""The near cache's bookkeeping (`HeldValues`) on a fake clock: fill tickets against the
invalidation race, expiry from `max_ttl` and the key's own TTL, size bounds, and
(de)activation. The decorator itself: test_near_cache_decorator.py."""

from __future__ import annotations

import pytest

from sidecar.backends.cache import MISS
from sidecar.backends.cache._held_values import HeldValues
from sidecar.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def near(clock: FakeClock) -> HeldValues:
    cache = HeldValues(max_entries=3, max_value_size=8, max_ttl=10.0, clock=clock)
    cache.activate()
    return cache


def held_after_read(near: HeldValues, key: str, value: bytes | None, ttl_ms: int = -1) -> object:
    ticket = near.ticket(key)
    assert ticket is not None
    near.fill(key, ticket, value, ttl_ms)
    return near.lookup(key)


def test_a_read_reply_is_held(near: HeldValues) -> None:
    assert near.lookup("k") is MISS
    assert held_after_read(near, "k", b"v") == b"v"


def test_an_absent_key_is_held_as_none(near: HeldValues) -> None:
    assert held_after_read(near, "k", None, ttl_ms=-2) is None


def test_an_invalidation_while_the_read_is_in_flight_keeps_its_reply_out(
    near: HeldValues,
) -> None:
    ticket = near.ticket("k")
    assert ticket is not None
    near.invalidate(["k"])  # the key changed after Redis answered the GET
    near.fill("k", ticket, b"stale", -1)
    assert near.lookup("k") is MISS


def test_only_the_newest_read_of_a_key_may_fill(near: HeldValues) -> None:
    first, second = near.ticket("k"), near.ticket("k")
    assert first is not None and second is not None
    near.fill("k", first, b"old", -1)
    assert near.lookup("k") is MISS
    near.fill("k", second, b"new", -1)
    assert near.lookup("k") == b"new"


def test_an_invalidation_drops_a_held_value(near: HeldValues) -> None:
    held_after_read(near, "k", b"v")
    near.invalidate(["k", "other"])
    assert near.lookup("k") is MISS


async def test_a_value_is_held_no_longer_than_max_ttl(near: HeldValues, clock: FakeClock) -> None:
    held_after_read(near, "k", b"v")
    await clock.advance(9.5)
    assert near.lookup("k") == b"v"
    await clock.advance(0.5)
    assert near.lookup("k") is MISS


async def test_a_value_is_held_no_longer_than_the_keys_own_ttl(
    near: HeldValues, clock: FakeClock
) -> None:
    held_after_read(near, "k", b"v", ttl_ms=1500)
    await clock.advance(1.25)
    assert near.lookup("k") == b"v"
    await clock.advance(0.25)
    assert near.lookup("k") is MISS


@pytest.mark.parametrize(
    ("value", "ttl_ms"),
    [(b"v", -2), (None, -1), (None, 500), (b"v", 0)],
    ids=["value-but-no-key", "key-but-no-value", "key-but-no-value-ttl", "expiring-now"],
)
def test_a_ttl_that_disagrees_with_the_value_keeps_nothing(
    near: HeldValues, value: bytes | None, ttl_ms: int
) -> None:
    assert held_after_read(near, "k", value, ttl_ms) is MISS


def test_values_over_max_value_size_are_never_held(near: HeldValues) -> None:
    assert held_after_read(near, "k", b"123456789") is MISS
    assert held_after_read(near, "k", b"12345678") == b"12345678"


def test_the_least_recently_used_value_goes_first(near: HeldValues) -> None:
    for key in ("a", "b", "c"):
        held_after_read(near, key, key.encode())
    assert near.lookup("a") == b"a"  # now "b" is the least recently used
    held_after_read(near, "d", b"d")
    assert len(near) == 3
    assert near.lookup("b") is MISS
    assert [near.lookup(key) for key in ("a", "c", "d")] == [b"a", b"c", b"d"]


def test_inactive_it_gives_no_tickets_and_deactivating_empties_it(near: HeldValues) -> None:
    held_after_read(near, "k", b"v")
    in_flight = near.ticket("j")
    near.deactivate()
    assert near.lookup("k") is MISS
    assert near.ticket("k") is None
    near.activate()
    assert in_flight is not None
    near.fill("j", in_flight, b"from-before", -1)  # a read from the lost connection
    assert near.lookup("j") is MISS


def test_a_failed_read_gives_its_ticket_back(near: HeldValues) -> None:
    ticket = near.ticket("k")
    assert ticket is not None
    near.drop_ticket("k", ticket)
    near.fill("k", ticket, b"v", -1)
    assert near.lookup("k") is MISS


def test_clear_forgets_everything(near: HeldValues) -> None:
    held_after_read(near, "a", b"1")
    ticket = near.ticket("b")
    assert ticket is not None
    near.clear()
    near.fill("b", ticket, b"2", -1)
    assert near.lookup("a") is MISS
    assert near.lookup("b") is MISS
    assert near.active
