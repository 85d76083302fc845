"""The table of pub/sub backends the conformance suite runs against, and their fixtures.

Every backend is built through its spec in the registry, as the sidecar builds it; a backend
registered in `sidecar.config.backends` without a row of its own runs with its defaults and
no connection. A row with `broker` runs on a connection of that type to the local broker
(RabbitMQ at 5672, NATS at 4222) with a key prefix of its own. `settle` waits until messages
already published are in the subscriptions' buffers (the backend's `sync()` where it has
one: for Redis one PING round trip on the subscriber link, for RabbitMQ a marker through its
queue, for NATS a flush).

A test marked `needs("<feature>")` runs only on the rows whose spec lists the feature
(`patterns`: glob subscriptions; `ordering_keys`: per-key order).
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import pytest
from kafka_servers import connection_for_test, drop_topics, endpoint_for_test, kafka_servers
from redis_server import redis_address, unique_prefix
from support import RedisConnect

from sidecar.backends.pubsub import PubSubBackend
from sidecar.backends.registry import build_backend, spec_for
from sidecar.backends.spec import BuildContext
from sidecar.config import Config, PubSubServiceConfig
from sidecar.config.backends import backend_names
from sidecar.config.mqtt import MqttEndpoint
from sidecar.config.policies import TimeoutsConfig
from sidecar.connections import OPENERS, Connection
from sidecar.connections.mqtt import MqttConnection
from sidecar.testing import FakeClock

__all__ = ["kafka_servers", "redis_address"]

Settle = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    """One backend set up one way."""

    id: str
    backend: str
    redis: bool = False
    """Runs against the test Redis server, on a connection of its own."""
    broker: str | None = None
    """Runs on a connection of this type to the local broker, with its default endpoint."""
    kafka: str | None = None
    """Runs on a Kafka connection to this implementation (tests/kafka_servers.py), with a
    topic prefix of its own."""
    mqtt: bool = False
    """Runs on an MQTT connection to Mosquitto at 127.0.0.1:1883, own topic prefix."""

    @property
    def features(self) -> frozenset[str]:
        return spec_for("pubsub", self.backend).features


# ==== the backends: one row per way of running one ==========================================
TABLE = (
    Row("memory", "memory"),
    Row("redis", "redis", redis=True),
    Row("rabbitmq", "rabbitmq", broker="rabbitmq"),
    Row("nats", "nats", broker="nats"),
    Row("kafka-tansu", "kafka", kafka="tansu"),
    Row("kafka-noida", "kafka", kafka="noida"),
    Row("mqtt", "mqtt", mqtt=True),
)
# ==== end of the backends ===================================================================


def rows() -> list[Row]:
    """The table, and a default row for every registered backend it does not name."""
    named = {row.backend for row in TABLE}
    return [*TABLE, *(Row(name, name) for name in backend_names("pubsub") if name not in named)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker_row" not in metafunc.fixturenames:
        return
    needs = {need for marker in metafunc.definition.iter_markers("needs") for need in marker.args}
    eligible = [row for row in rows() if not needs or needs <= row.features]
    metafunc.parametrize("broker_row", eligible, ids=[row.id for row in eligible])


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
    if broker_row.broker is not None:
        settings = PubSubServiceConfig(backend=broker_row.backend, key_prefix=unique_prefix())
        config = Config(services={"pubsub": settings})
        opener = importlib.import_module(OPENERS[broker_row.broker]).open_connection
        connection = opener("pubsub", settings, *config.connection_policies("pubsub"))
    if broker_row.kafka is not None:
        server = request.getfixturevalue("kafka_servers")[broker_row.kafka]
        kafka = connection = connection_for_test("pubsub", endpoint_for_test(server.bootstrap))
    if broker_row.mqtt:
        endpoint = MqttEndpoint(topic_prefix=f"t/{uuid.uuid4().hex[:12]}/")
        connection = MqttConnection("pubsub", endpoint, TimeoutsConfig())
    policies = Config(services={"pubsub": settings}).policies_for("pubsub")
    context = BuildContext("pubsub", settings, policies, connection, FakeClock())
    backend = cast(PubSubBackend, build_backend(context).backend)
    yield backend
    await backend.close()
    if broker_row.kafka is not None:
        await drop_topics(kafka)
        await kafka.close()
    if (broker_row.broker is not None or broker_row.mqtt) and connection is not None:
        await connection.close()


@pytest.fixture
def settle(broker: PubSubBackend) -> Settle:
    """Wait until messages already published have reached the subscriptions' buffers."""

    async def settle() -> None:
        sync = getattr(broker, "sync", None)
        if sync is not None:
            await sync()
        else:
            await asyncio.sleep(0)  # the memory broker delivers inside publish()

    return settle
