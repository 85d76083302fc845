"""Fixtures for the backend conformance suites.

Each capability has one parametrised fixture yielding a ready backend. Only `memory` exists
now; a `redis` param joins `CACHE_BACKENDS` / `PUBSUB_BACKENDS` when that backend lands, with
its own branch in the fixtures below (its own key prefix, real sleeps in `elapse`, a short
real wait in `settle`). Tests use sub-second TTLs so that real sleeps stay cheap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sidecar.backends.cache import CacheBackend, MemoryCache
from sidecar.backends.pubsub import MemoryBroker, PubSubBackend

CACHE_BACKENDS = ["memory"]
PUBSUB_BACKENDS = ["memory"]

Elapse = Callable[[float], Awaitable[None]]
Settle = Callable[[], Awaitable[None]]


class FakeClock:
    """A clock callable whose time moves only when a test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=CACHE_BACKENDS)
def cache_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def cache(cache_kind: str, clock: FakeClock) -> AsyncIterator[CacheBackend]:
    assert cache_kind == "memory"
    backend = MemoryCache(clock=clock)
    yield backend
    await backend.close()


@pytest.fixture
def elapse(cache_kind: str, clock: FakeClock) -> Elapse:
    """Make `seconds` pass for the cache under test."""

    async def elapse(seconds: float) -> None:
        assert cache_kind == "memory"
        clock.advance(seconds)

    return elapse


@pytest.fixture(params=PUBSUB_BACKENDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def broker(broker_kind: str) -> AsyncIterator[PubSubBackend]:
    assert broker_kind == "memory"
    backend = MemoryBroker()
    yield backend
    await backend.close()


@pytest.fixture
def settle(broker_kind: str) -> Settle:
    """Wait until messages already published have reached the subscriptions' buffers."""

    async def settle() -> None:
        assert broker_kind == "memory"
        await asyncio.sleep(0)  # the memory broker delivers inside publish()

    return settle
