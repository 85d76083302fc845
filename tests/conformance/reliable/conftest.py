"""The table of reliable-topic backends the reliable conformance suite runs against.

Every backend is built the way the sidecar builds it: `PubSubServiceConfig` settings with
`reliable_topics: ["*"]`, short timeouts, a key prefix of the test's own, then its spec in
the registry, on a connection to a real server. A row is

    Row(id, backend, setup, lacks=frozenset())

- `backend`: the `backend:` name in the config;
- `setup`: the name of a fixture returning a `Setup`: `connect(fields)` takes the settings
  fields the suite chose (backend, key_prefix, reliable_topics, visibility_timeout,
  max_deliveries), adds its own (a Redis row its host and port; a Kafka row its bootstrap
  servers), and returns the validated settings and an open connection; `cleanup()`, run
  after the test with the (closed) backends built, deletes what they made on the server
  (streams, queues, topics) and closes the connections. A row for a server the tests start
  (Tansu, noida-db) starts it in a session-scoped fixture of its own, and its (plain, not
  async) `Setup` fixture binds to that address;
- `lacks`: suite features this backend does not have, so the tests marked
  `needs("<feature>")` skip it (they are not generated for it):
  - `backlog_for_new_groups`: a group created after messages were published reads them
    from the oldest kept (Redis, NATS; RabbitMQ gives them only to the topic's first group).

To add a backend (Kafka): write its `Setup` fixture here and one line in TABLE, say
`Row("kafka-tansu", "kafka", "tansu_setup")` and `Row("kafka-noida", "kafka", "noida_setup")`.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from broker_support import delete_broker_names
from kafka_servers import (
    KafkaServer,
    connection_for_test,
    drop_topics,
    endpoint_for_test,
    kafka_servers,
)
from redis_server import unique_prefix
from reliable_support import MAX_DELIVERIES, VISIBILITY_TIMEOUT, Reliable, Row, Setup
from streams_support import delete_prefix, redis_address

from sidecar.backends.pubsub import PubSubBackend, ReliablePubSub
from sidecar.backends.registry import build_backend
from sidecar.backends.spec import BuildContext
from sidecar.config import Config, PubSubServiceConfig
from sidecar.config.models import connection_type
from sidecar.connections import OPENERS, Connection
from sidecar.connections.kafka import KafkaConnection
from sidecar.testing import FakeClock

__all__ = ["kafka_servers", "redis_address"]

# ==== the backends: one row per way of running one ==========================================
TABLE = (
    Row("redis-streams", "redis", "redis_setup"),
    Row("rabbitmq", "rabbitmq", "broker_setup", lacks=frozenset({"backlog_for_new_groups"})),
    Row("nats", "nats", "broker_setup"),
    Row("kafka-tansu", "kafka", "tansu_setup"),
    Row("kafka-noida", "kafka", "noida_setup"),
)
# ==== end of the backends ===================================================================


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "reliable_row" not in metafunc.fixturenames:
        return
    needs = {need for marker in metafunc.definition.iter_markers("needs") for need in marker.args}
    eligible = [row for row in TABLE if not needs & row.lacks]
    metafunc.parametrize("reliable_row", eligible, ids=[row.id for row in eligible])


def _open(settings: PubSubServiceConfig) -> Connection:
    """The connection the sidecar would open for a service with these settings."""
    config = Config(services={"pubsub": settings})
    module = importlib.import_module(OPENERS[str(connection_type(settings))])
    connection: Connection = module.open_connection(
        "pubsub", settings, *config.connection_policies("pubsub")
    )
    return connection


@pytest.fixture
def redis_setup() -> Setup:
    made: list[tuple[str, Connection]] = []

    def connect(fields: dict[str, Any]) -> tuple[PubSubServiceConfig, Connection]:
        host, port = redis_address()
        settings = PubSubServiceConfig(**fields, host=host, port=port)
        connection = _open(settings)
        made.append((settings.key_prefix, connection))
        return settings, connection

    async def cleanup(backends: list[PubSubBackend]) -> None:
        for prefix, connection in made:
            await connection.close()
            delete_prefix(prefix)

    return Setup(connect, cleanup)


@pytest.fixture
def broker_setup() -> Setup:
    """RabbitMQ at 127.0.0.1:5672 and NATS at 127.0.0.1:4222, their default endpoints."""
    made: list[tuple[str, Connection]] = []

    def connect(fields: dict[str, Any]) -> tuple[PubSubServiceConfig, Connection]:
        settings = PubSubServiceConfig(**fields)
        connection = _open(settings)
        made.append((settings.key_prefix, connection))
        return settings, connection

    async def cleanup(backends: list[PubSubBackend]) -> None:
        await delete_broker_names(backends)
        for _, connection in made:
            await connection.close()

    return Setup(connect, cleanup)


def _kafka_setup(bootstrap: str) -> Setup:
    """A Kafka row: the suite's key prefix becomes the connection's topic prefix."""
    made: list[KafkaConnection] = []

    def connect(fields: dict[str, Any]) -> tuple[PubSubServiceConfig, Connection]:
        fields = dict(fields)
        prefix = str(fields.pop("key_prefix", ""))
        endpoint = endpoint_for_test(bootstrap, topic_prefix=prefix)
        connection = connection_for_test("pubsub", endpoint)
        made.append(connection)
        return PubSubServiceConfig(**fields), connection

    async def cleanup(backends: list[PubSubBackend]) -> None:
        for connection in made:
            await drop_topics(connection)
            await connection.close()

    return Setup(connect, cleanup)


@pytest.fixture
def tansu_setup(kafka_servers: dict[str, KafkaServer]) -> Setup:
    return _kafka_setup(kafka_servers["tansu"].bootstrap)


@pytest.fixture
def noida_setup(kafka_servers: dict[str, KafkaServer]) -> Setup:
    return _kafka_setup(kafka_servers["noida"].bootstrap)


@pytest.fixture
async def reliable(reliable_row: Row, request: pytest.FixtureRequest) -> AsyncIterator[Reliable]:
    setup: Setup = request.getfixturevalue(reliable_row.setup)
    prefix = unique_prefix().replace(":", "-")
    built: list[PubSubBackend] = []

    async def make(**overrides: Any) -> ReliablePubSub:
        fields = {
            "backend": reliable_row.backend,
            "key_prefix": prefix,
            "reliable_topics": ("*",),
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "max_deliveries": MAX_DELIVERIES,
            **overrides,
        }
        settings, connection = setup.connect(fields)
        policies = Config(services={"pubsub": settings}).policies_for("pubsub")
        context: BuildContext[Any] = BuildContext(
            "pubsub", settings, policies, connection, FakeClock()
        )
        backend = cast(PubSubBackend, build_backend(context).backend)
        built.append(backend)
        assert isinstance(backend, ReliablePubSub)
        return backend

    backend = await make()
    try:
        yield Reliable(backend, cast(PubSubBackend, backend), reliable_row, make)
    finally:
        for each in built:
            await each.close()
        await setup.cleanup(built)
