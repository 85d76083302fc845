"""The table of pub/sub backends the conformance suite runs against, and their fixtures.

Every backend is built through its spec in the registry, as the sidecar builds it; a backend
registered in `sidecar.config.backends` without a row of its own runs with its defaults and
no connection. `settle` waits until messages already published are in the subscriptions'
buffers (for Redis, one PING round trip on the subscriber link).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import pytest
from redis_server import redis_address, unique_prefix
from support import RedisConnect

from sidecar.backends.pubsub import PubSubBackend
from sidecar.backends.pubsub.redis import RedisBroker
from sidecar.backends.registry import build_backend
from sidecar.backends.spec import BuildContext
from sidecar.config import Config, PubSubServiceConfig
from sidecar.config.backends import backend_names
from sidecar.connections import Connection
from sidecar.testing import FakeClock

__all__ = ["redis_address"]

Settle = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    """One backend set up one way."""

    id: str
    backend: str
    redis: bool = False
    """Runs against the test Redis server, on a connection of its own."""


# ==== the backends: one row per way of running one ==========================================
TABLE = (
    Row("memory", "memory"),
    Row("redis", "redis", redis=True),
)
# ==== end of the backends ===================================================================


def rows() -> list[Row]:
    """The table, and a default row for every registered backend it does not name."""
    named = {row.backend for row in TABLE}
    return [*TABLE, *(Row(name, name) for name in backend_names("pubsub") if name not in named)]


@pytest.fixture(params=rows(), ids=lambda row: row.id)
def broker_row(request: pytest.FixtureRequest) -> Row:
    row: Row = request.param
    return row


@pytest.fixture
async def broker(
    broker_row: Row, redis_connect: RedisConnect, request: pytest.FixtureRequest
) -> AsyncIterator[PubSubBackend]:
    settings = PubSubServiceConfig(backend=broker_row.backend)
    connection: Connection | None = None
    if broker_row.redis:
        host, port = request.getfixturevalue("redis_address")
        settings = PubSubServiceConfig(
            backend=broker_row.backend, host=host, port=port, key_prefix=unique_prefix()
        )
        connection = redis_connect(settings, "pubsub")
    policies = Config(services={"pubsub": settings}).policies_for("pubsub")
    context = BuildContext("pubsub", settings, policies, connection, FakeClock())
    backend = cast(PubSubBackend, build_backend(context).backend)
    yield backend
    await backend.close()


@pytest.fixture
def settle(broker: PubSubBackend) -> Settle:
    """Wait until messages already published have reached the subscriptions' buffers."""

    async def settle() -> None:
        if isinstance(broker, RedisBroker):
            await broker.sync()
        else:
            await asyncio.sleep(0)  # the memory broker delivers inside publish()

    return settle
